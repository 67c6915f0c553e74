"""The audit trail: recording who did what (without slowing anyone down), listing, retention.

Contract:
- ``record(actor, action, target, detail)`` never blocks and never raises for a database
  problem: the event is queued (at most ``max_pending``; beyond that new events are dropped
  and counted) and written in batches by ``run_forever`` about every ``flush_interval``
  seconds, and by ``close()`` on shutdown. A batch that cannot be written (``Unavailable``)
  is kept for the next flush while the queue has room. An unknown action is a programming
  error: ``InvalidRequest``, raised at once.
- ``detail`` keeps plain values under keys that name no secret (``domain.audit.safe_detail``):
  a licence, a token or an environment value is never written, whatever a caller passes.
- ``events(query)`` writes what is queued, then lists (newest first) from the store.
- ``prune_once()`` deletes events older than ``retention_days`` in slices of ``prune_batch``
  (one short transaction each), at most ``max_slices`` per pass; ``run_retention`` repeats it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from remoteappmanager.domain.audit import (
    SYSTEM_ACTOR,
    AuditAction,
    EventPage,
    EventQuery,
    NewEvent,
)
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.ports.audit import EventStore

log = structlog.get_logger(__name__)

DEFAULT_FLUSH_INTERVAL = 0.5
DEFAULT_MAX_PENDING = 10_000
DEFAULT_PRUNE_BATCH = 5_000
DEFAULT_MAX_SLICES = 200
DEFAULT_RETENTION_INTERVAL = 3600.0


class Recorder(Protocol):
    """What the other services call to leave an event in the audit trail."""

    def record(
        self,
        actor: str,
        action: AuditAction | str,
        target: str,
        detail: Mapping[str, object] | None = None,
    ) -> None: ...


class _Recording:
    """The one ``record``: the event is made at ``clock``'s time (which checks its action and
    detail, raising ``ValueError``), then handed to ``_keep``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def record(
        self,
        actor: str,
        action: AuditAction | str,
        target: str,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        self._keep(NewEvent.of(self._now(), actor, action, target, detail))

    def _keep(self, event: NewEvent) -> None:
        raise NotImplementedError


class DiscardingRecorder(_Recording):
    """Records nothing, but checks every event: for services built without an audit trail
    (some tests, tools)."""

    def _keep(self, event: NewEvent) -> None:
        pass


DISCARD: Recorder = DiscardingRecorder()


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a use case acts for, and where their actions are recorded."""

    recorder: Recorder
    actor: str

    def record(
        self, action: AuditAction, target: str, detail: Mapping[str, object] | None = None
    ) -> None:
        self.recorder.record(self.actor, action, target, detail)


UNRECORDED = Attribution(DISCARD, SYSTEM_ACTOR)


class AuditTrail(_Recording):
    """The recorder, the listing and the retention of the audit trail (see the module)."""

    def __init__(
        self,
        store: EventStore,
        *,
        retention_days: int = 365,
        clock: Callable[[], float] = time.time,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        prune_batch: int = DEFAULT_PRUNE_BATCH,
        max_slices: int = DEFAULT_MAX_SLICES,
    ) -> None:
        super().__init__(clock)
        self._store = store
        self._retention = timedelta(days=retention_days)
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._prune_batch = prune_batch
        self._max_slices = max_slices
        self._pending: collections.deque[NewEvent] = collections.deque()
        self._lock = asyncio.Lock()
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ----------------------------------------------------------------- recording
    def _keep(self, event: NewEvent) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            log.warning("audit.dropped", action=event.action.value, dropped=self.dropped)
            return
        self._pending.append(event)

    async def flush(self) -> int:
        """Write what is queued; returns how many were written (0 when the store failed)."""
        async with self._lock:
            if not self._pending:
                return 0
            batch = list(self._pending)
            self._pending.clear()
            try:
                await self._store.append(batch)
            except Unavailable as exc:
                # Kept for the next flush, oldest first, as far as the queue has room.
                room = max(self._max_pending - len(self._pending), 0)
                kept = batch[:room]
                self._pending.extendleft(reversed(kept))
                self.dropped += len(batch) - len(kept)
                log.warning("audit.write_failed", error=exc.message, pending=len(self._pending))
                return 0
            return len(batch)

    async def run_forever(self) -> None:
        """Flush every ``flush_interval`` seconds until cancelled; cancelled, flush once more."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())

    async def close(self) -> None:
        await self.flush()

    # ----------------------------------------------------------------- reading
    async def events(self, query: EventQuery) -> EventPage:
        await self.flush()
        return await self._store.query(query)

    # ----------------------------------------------------------------- retention
    async def prune_once(self) -> int:
        """Delete what is older than the retention, slice by slice; returns how many."""
        before = self._now() - self._retention
        removed = 0
        for _ in range(self._max_slices):
            count = await self._store.prune(before, self._prune_batch)
            removed += count
            if count < self._prune_batch:
                break
            await asyncio.sleep(0)  # let requests in between two slices
        if removed:
            log.info("audit.pruned", removed=removed, before=before.isoformat())
        return removed

    async def run_retention(self, interval: float = DEFAULT_RETENTION_INTERVAL) -> None:
        while True:
            try:
                await self.prune_once()
            except Unavailable as exc:
                log.warning("audit.prune_failed", error=exc.message)
            await asyncio.sleep(interval)
