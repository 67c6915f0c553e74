"""The readiness probe port: has a freshly started application begun to answer?

Contract (``InMemoryReadinessProbe`` / ``AiohttpReadinessProbe``):
- ``wait_ready(url, timeout)`` returns as soon as ``url`` answers anything but a 5xx, and
  raises ``Unable`` when it has not within ``timeout`` seconds. Connection errors along the way
  mean "not yet". Cancelling the wait is safe.
- ``close()`` releases the client; the probe is not used afterwards.
"""

from __future__ import annotations

from typing import Protocol


class ReadinessProbe(Protocol):
    # The bound is part of the contract: it is what the Unable message reports.
    async def wait_ready(self, url: str, timeout: float) -> None: ...  # noqa: ASYNC109

    async def close(self) -> None: ...
