"""A per-key rate limit (starts per user per minute), with the time to wait when exceeded.

The generic cell rate algorithm: one number per key (the "theoretical arrival time"), a burst
of up to ``per_minute`` requests, then one every ``60 / per_minute`` seconds. Hand-written
because it is a dozen lines over an injected clock; a rate-limiting package would bring
storage back ends and its own clock that the tests could not drive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from remoteappmanager.domain.errors import TooManyRequests

WINDOW = 60.0
# Past this many keys, those whose allowance is whole again are forgotten.
SWEEP_AT = 10_000


class RateLimit:
    """``take(key)`` spends one of ``per_minute`` allowances of ``key`` or raises
    ``TooManyRequests`` (with the seconds until one is free) and spends nothing."""

    def __init__(
        self,
        per_minute: int,
        *,
        what: str = "requests",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._interval = WINDOW / per_minute
        self._per_minute = per_minute
        self._what = what
        self._clock = clock
        self._arrival: dict[str, float] = {}

    def take(self, key: str) -> None:
        now = self._clock()
        arrival = max(self._arrival.get(key, now), now) + self._interval
        # The tolerance keeps ``per_minute`` intervals from adding up past the window by a
        # rounding error.
        if arrival - now > WINDOW + 1e-3:
            wait = arrival - WINDOW - now
            raise TooManyRequests(
                f"too many {self._what}: at most {self._per_minute} a minute; try again in "
                f"{math.ceil(wait)} s",
                retry_after=math.ceil(wait),
            )
        self._arrival[key] = arrival
        if len(self._arrival) > SWEEP_AT:
            self._arrival = {k: t for k, t in self._arrival.items() if t > now}
