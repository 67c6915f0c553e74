"""The route table on configurable-http-proxy's REST API."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog
from yarl import URL

from remoteappmanager.adapters.observed import Observe, operation_of, timing
from remoteappmanager.domain.containers import Route
from remoteappmanager.domain.errors import InvalidRequest, Unable, Unavailable
from remoteappmanager.domain.routing import check_route_path, encode_route_path

log = structlog.get_logger(__name__)

DEFAULT_REQUEST_TIMEOUT = 10.0
OUR_TAG = "remoteappmanager"
# Keys of a route's data that carry meaning to the proxy, JupyterHub or us; never "extra".
_RESERVED_KEYS = frozenset({"target", OUR_TAG, "user", "url_id", "last_activity", "jupyterhub"})


class _RetryableError(Exception):
    """A failure worth another attempt: the proxy could not be reached or answered 5xx."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChpRouteTable:
    """``RouteTable`` on configurable-http-proxy (``GET/POST/DELETE /api/routes[/path]``).

    Our routes are tagged ``{"remoteappmanager": true, "user": ..., "url_id": ...}`` in the
    route data; only those are listed, and ``remove`` looks a route up first and leaves it
    alone unless it carries the tag. Paths must be container paths, percent-encoded as in
    URLs (``/user/<name>/containers/<url_id>``, see ``domain.routing``): anything else is
    refused with ``InvalidRequest`` before any request is made. ``list`` reports paths in
    the same canonical encoded form (the proxy itself keeps them decoded).

    At most ``max_concurrency`` requests are in flight; a request that fails to connect,
    times out or gets a 5xx is tried again up to ``retries`` times with a short backoff (all
    our requests are idempotent). A 4xx is never retried. The aiohttp session is created on
    first use, in the running loop, and closed by ``close``.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        max_concurrency: int = 16,
        retries: int = 3,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        backoff: float = 0.05,
        observe: Observe | None = None,
    ) -> None:
        if max_concurrency < 1 or retries < 0:
            raise ValueError("max_concurrency must be >= 1 and retries >= 0")
        self._routes_url = api_url.rstrip("/") + "/api/routes"
        self._token = token
        self._retries = retries
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._backoff = backoff
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._observe = observe

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ----------------------------------------------------------------- the port
    async def add(self, route: Route) -> None:
        path = check_route_path(route.path)
        data: dict[str, Any] = {
            key: value
            for key, value in route.extra.items()
            if key not in _RESERVED_KEYS and isinstance(value, str)
        }
        data.update(target=route.target, user=route.user, url_id=route.url_id)
        data[OUR_TAG] = True
        await self._request("POST", path, f"add route {path}", data)

    async def remove(self, path: str) -> None:
        path = check_route_path(path)
        status, data = await self._request("GET", path, f"look up route {path}")
        if status == 404:
            return
        if not _is_ours(data):
            # The reconciler only passes paths it listed as ours; a route that is not ours
            # here was replaced by someone else since, and is theirs to remove.
            log.warning("proxy.route_not_ours", path=path)
            return
        await self._request("DELETE", path, f"remove route {path}")

    async def list(self) -> Mapping[str, Route]:
        _, data = await self._request("GET", "", "list routes")
        if not isinstance(data, Mapping):
            raise Unable("proxy answered the route list with something that is not a table")
        routes: dict[str, Route] = {}
        for decoded, route_data in data.items():
            if not _is_ours(route_data) or not isinstance(decoded, str):
                continue
            try:
                path = check_route_path(encode_route_path(decoded))
            except InvalidRequest:
                # Tagged as ours but not a path we could have added: left alone, and said so.
                log.warning("proxy.route_skipped", path=decoded[:120])
                continue
            routes[path] = Route(
                path=path,
                target=str(route_data.get("target", "")),
                user=str(route_data.get("user", "")),
                url_id=str(route_data.get("url_id", "")),
                extra={
                    key: value
                    for key, value in route_data.items()
                    if key not in _RESERVED_KEYS and isinstance(value, str)
                },
            )
        return routes

    # ----------------------------------------------------------------- HTTP
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_concurrency),
                headers={"Authorization": f"token {self._token}"},
            )
        return self._session

    def _url(self, path: str) -> URL:
        # ``path`` is canonical and percent-encoded (``check_route_path``). The proxy decodes
        # the API path once to get its route key, and matches requests on their decoded path
        # too, so sending the encoded path untouched makes the route match what browsers send.
        return URL(self._routes_url + path, encoded=True)

    async def _request(
        self, method: str, path: str, action: str, payload: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One API call with retries; returns (status, parsed JSON or None).

        A 404 is returned to the caller, which knows what it means; other 4xx raise.
        """
        url = self._url(path)
        reason = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1) * (1 + random.random()))
            try:
                return await self._attempt(method, url, action, payload)
            except _RetryableError as exc:
                reason = exc.reason
                log.info("proxy.retry", action=action, attempt=attempt + 1, reason=reason)
        raise Unavailable(f"proxy unavailable: {reason} (while trying to {action})")

    async def _attempt(
        self, method: str, url: URL, action: str, payload: Mapping[str, Any] | None
    ) -> tuple[int, Any]:
        async with self._semaphore:
            try:
                with timing(self._observe, "proxy", operation_of(action)):
                    async with self._client().request(method, url, json=payload) as response:
                        status = response.status
                        body = await response.read()
            except TimeoutError:
                raise _RetryableError("no answer in time") from None
            except aiohttp.ClientConnectorError as exc:
                strerror = getattr(exc.os_error, "strerror", None)
                raise _RetryableError(f"cannot connect ({(strerror or 'error').lower()})") from None
            except aiohttp.ClientConnectionError as exc:
                raise _RetryableError(f"connection failed ({exc.__class__.__name__})") from None
            except aiohttp.ClientError as exc:
                raise Unavailable(
                    f"proxy unavailable: {exc.__class__.__name__} (while trying to {action})"
                ) from None
        if status >= 500:
            raise _RetryableError(f"the proxy answered HTTP {status}")
        if status in (401, 403):
            raise Unavailable(
                "proxy rejected our token (check that CONFIGPROXY_AUTH_TOKEN is the proxy's)"
            )
        if status == 404:
            return status, None
        if status >= 400:
            raise Unable(f"proxy refused to {action}: HTTP {status}")
        if not body:
            return status, None
        try:
            return status, json.loads(body)
        except ValueError:
            raise Unable(f"proxy answered {action} with something that is not JSON") from None


def _is_ours(data: object) -> bool:
    return isinstance(data, Mapping) and data.get(OUR_TAG) is True
