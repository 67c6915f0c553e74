"""Readiness probe over HTTP with aiohttp: poll an application until it answers."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from remoteappmanager.domain.errors import Unable

FIRST_INTERVAL = 0.01
BACKOFF = 1.5
MAX_INTERVAL = 0.05
ATTEMPT_TIMEOUT = 2.0


class AiohttpReadinessProbe:
    """``ReadinessProbe`` polling ``url`` with GET until the status is below 500.

    The polls come every 10 ms at first and then every 50 ms at most, so that readiness is
    noticed within 50 ms of it happening (a desktop takes half a second to come up: a
    schedule that backs off further, as this one once did up to 0.5 s, made a start wait a
    quarter of a second more on average). A poll of a published port on the same host that
    is refused costs a fraction of a millisecond. Redirects are not followed: a redirect
    already proves the application answers.
    """

    def __init__(
        self,
        *,
        first_interval: float = FIRST_INTERVAL,
        max_interval: float = MAX_INTERVAL,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
    ) -> None:
        self._first_interval = first_interval
        self._max_interval = max_interval
        self._attempt_timeout = attempt_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No keep-alive: each poll targets a port that may be gone by the next one.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                trust_env=False,
            )
        return self._session

    # The bound is part of the contract: it is what the Unable message reports.
    async def wait_ready(self, url: str, timeout: float) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = self._first_interval
        client = self._client()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempt = aiohttp.ClientTimeout(total=min(self._attempt_timeout, remaining))
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with client.get(url, allow_redirects=False, timeout=attempt) as response:
                    if response.status < 500:
                        return
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * BACKOFF, self._max_interval)
        raise Unable(f"the application did not become ready within {timeout:g} s")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
