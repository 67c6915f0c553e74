"""The one in-process cache: time-limited, size-bounded, single-flight.

Every cache of the service (hub identities, grants, image metadata, session listings, gate
targets) has the same needs, which no well-kept library covers together: cachetools'
``TTLCache`` bounds time and size but neither merges concurrent misses nor serves a stale
answer while a fresh one is fetched, and async-lru has no per-entry lifetime. So this module
writes them once, tested in ``tests/unit/test_caching.py``:

- ``get(key, load)`` answers a fresh entry from memory; on a miss it awaits ``load()`` once,
  however many callers want the key meanwhile (single flight). One caller giving up does not
  cancel the load that the others wait for.
- An entry lives ``ttl`` seconds (or ``ttl_of(value)``, e.g. shorter for "not found"). For
  ``stale`` seconds after that it is still answered while one background load refreshes it,
  so a hot key never makes a queue of waiters.
- A load that raises one of ``refusals`` is remembered for ``refusal_ttl`` seconds: the same
  error is raised again without loading (a repeated bad token costs one lookup per period).
  Other errors are not remembered.
- At most ``maxsize`` entries (and ``refusal_maxsize`` refusals); the least recently used go first.
- ``clock`` is injected so that tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    fresh_until: float
    stale_until: float


class TtlCache(Generic[K, V]):
    """A single-flight cache with a lifetime per entry; see the module's docstring."""

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int,
        clock: Clock = time.monotonic,
        stale: float = 0.0,
        ttl_of: Callable[[V], float] | None = None,
        refusals: tuple[type[Exception], ...] = (),
        refusal_ttl: float = 0.0,
        refusal_maxsize: int | None = None,
    ) -> None:
        if maxsize < 1 or (refusal_maxsize is not None and refusal_maxsize < 1):
            raise ValueError("maxsize and refusal_maxsize must be at least 1")
        if ttl < 0 or stale < 0 or refusal_ttl < 0:
            raise ValueError("lifetimes cannot be negative")
        self.ttl = ttl
        self.maxsize = maxsize
        self.stale = stale
        self._clock = clock
        self._ttl_of = ttl_of
        self._refusals = refusals
        self._refusal_ttl = refusal_ttl
        self._refusal_maxsize = maxsize if refusal_maxsize is None else refusal_maxsize
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._refused: OrderedDict[K, tuple[float, Exception]] = OrderedDict()
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._refreshing: set[asyncio.Task[V]] = set()
        self.loads = 0
        """How many times ``load`` was called."""
        self.refusals_answered = 0
        """How many remembered refusals were raised without a load."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def refusals(self) -> int:
        """How many refusals are remembered (expired ones included until next asked)."""
        return len(self._refused)

    # ------------------------------------------------------------------ reading
    def peek(self, key: K) -> V | None:
        """The fresh value of ``key``, or None; never loads, never counts as a use."""
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry.fresh_until:
            return None
        return entry.value

    async def get(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        refresh: Callable[[], Awaitable[V]] | None = None,
    ) -> V:
        """The value of ``key``: from memory, or ``load()``ed; a stale one is answered while
        ``refresh()`` (``load`` by default; e.g. one that waits its turn) runs behind."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.fresh_until:
                self._entries.move_to_end(key)
                return entry.value
            if now < entry.stale_until:
                self._entries.move_to_end(key)
                if key not in self._inflight:
                    refreshing = self._start(key, refresh or load)
                    self._refreshing.add(refreshing)
                    refreshing.add_done_callback(self._refreshing.discard)
                return entry.value
            del self._entries[key]
        refused = self._refused.get(key)
        if refused is not None:
            until, error = refused
            if now < until:
                self.refusals_answered += 1
                raise error.with_traceback(None)
            del self._refused[key]
        task = self._inflight.get(key) or self._start(key, load)
        # Shielded: one caller giving up must not cancel the load the others wait for.
        return await asyncio.shield(task)

    # ------------------------------------------------------------------ writing
    def put(self, key: K, value: V) -> None:
        """Remember ``value`` as if it had just been loaded."""
        lifetime = self.ttl if self._ttl_of is None else self._ttl_of(value)
        now = self._clock()
        self._entries[key] = _Entry(value, now + lifetime, now + lifetime + self.stale)
        self._entries.move_to_end(key)
        self._refused.pop(key, None)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        """Forget ``key`` (its value and a remembered refusal); a load under way still
        completes, but its answer is not kept."""
        self._entries.pop(key, None)
        self._refused.pop(key, None)
        self._inflight.pop(key, None)

    def discard_where(self, doomed: Callable[[V], bool]) -> None:
        """Forget every value for which ``doomed(value)``."""
        for key in [key for key, entry in self._entries.items() if doomed(entry.value)]:
            del self._entries[key]

    def discard_keys(self, doomed: Callable[[K], bool]) -> None:
        """Forget every key for which ``doomed(key)`` (its value and a remembered refusal)."""
        for key in [key for key in self._entries if doomed(key)]:
            del self._entries[key]
        for key in [key for key in self._refused if doomed(key)]:
            del self._refused[key]

    def clear(self) -> None:
        """Forget everything; loads under way complete for their callers only."""
        self._entries.clear()
        self._refused.clear()
        self._inflight.clear()

    async def close(self) -> None:
        """Cancel the loads under way and forget everything."""
        tasks = [*self._inflight.values(), *self._refreshing]
        self.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ internals
    def _start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        self.loads += 1
        task = asyncio.ensure_future(self._load(key, load))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._settle(key, done))
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        return await load()

    def _settle(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is not task:
            # Discarded meanwhile: the callers get the answer, the cache does not keep it.
            if not task.cancelled():
                task.exception()
            return
        del self._inflight[key]
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.put(key, task.result())
            return
        if isinstance(error, self._refusals) and self._refusal_ttl > 0:
            self._entries.pop(key, None)
            self._refused[key] = (self._clock() + self._refusal_ttl, error)
            self._refused.move_to_end(key)
            while len(self._refused) > self._refusal_maxsize:
                self._refused.popitem(last=False)
