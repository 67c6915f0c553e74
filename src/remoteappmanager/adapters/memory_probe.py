"""In-memory fake of the readiness probe, for tests and demos."""

from __future__ import annotations

import asyncio

from remoteappmanager.domain.errors import Unable


class InMemoryReadinessProbe:
    """``ReadinessProbe`` whose answer the test decides.

    Test controls: ``ready = False`` makes every wait fail at once as a timeout would;
    ``hold`` (an ``asyncio.Event``) keeps waits pending until it is set, so a test can act
    while a start is in progress; ``probed`` lists the URLs asked about.
    """

    def __init__(self) -> None:
        self.ready = True
        self.hold: asyncio.Event | None = None
        self.probed: list[str] = []
        self.closed = False

    # The bound is part of the contract: it is what the Unable message reports.
    async def wait_ready(self, url: str, timeout: float) -> None:  # noqa: ASYNC109
        self.probed.append(url)
        if self.hold is not None:
            await self.hold.wait()
        if not self.ready:
            raise Unable(f"the application did not become ready within {timeout:g} s")

    async def close(self) -> None:
        self.closed = True
