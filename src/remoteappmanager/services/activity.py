"""Sessions' client input and why they ended: kept in memory, written to the database.

``ActivityTracker.client_input`` is called by the gate for every request and WebSocket
message a client sends to a container: it costs two dictionary writes and no I/O. A
background loop (``run_forever``) writes the inputs seen since its last pass to the
database in one batch every ``flush_interval`` seconds, so that a restarted service (or
another replica) knows when each session was last used, a flush interval late at worst.

``StopLog`` records why a session ended (``user``, ``admin``, ``idle``, ``lifetime``,
``oom``, ``died``, ``reconcile``) in the database, keeps each user's recent stops in memory
for their page and counts them. (The audit trail hears of stops from
``Sessions.record_stop``, which writes here too.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import (
    Session,
    StopReason,
    StopRecord,
    session_deadline,
)
from remoteappmanager.ports.repositories import UnitOfWorkFactory

log = structlog.get_logger(__name__)

DEFAULT_FLUSH_INTERVAL = 10.0
# Sessions whose last input is remembered in memory; past it the oldest are forgotten (the
# database still has them).
DEFAULT_MAX_TRACKED = 200_000
# How long the reason of a stop is kept for its user to see.
STOP_RETENTION = timedelta(days=7)
# Stops remembered per user in memory, and users remembered.
_STOPS_PER_USER = 20
_MAX_USERS_REMEMBERED = 100_000


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """A running session's clock, in seconds since the epoch (None: unknown or none)."""

    started_at: float | None
    last_input_at: float | None
    expires_at: float | None
    expiry_reason: StopReason | None


class ActivityTracker:
    """When each session last had client input (see the module)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self._clock = clock
        self._max_tracked = max_tracked
        self._last: dict[str, float] = {}
        self._unsaved: dict[str, float] = {}

    def client_input(self, url_id: str) -> None:
        """A client sent something to session ``url_id``: O(1), no I/O."""
        now = self._clock()
        last = self._last
        # Moved to the end, so that the dictionary's first entry is the longest unused.
        last.pop(url_id, None)
        last[url_id] = now
        self._unsaved[url_id] = now
        if len(last) > self._max_tracked:
            del last[next(iter(last))]

    def last_input(self, url_id: str) -> float | None:
        return self._last.get(url_id)

    def learn(self, url_id: str, moment: float) -> None:
        """Take an input time read from the database (another replica's, or before a
        restart) where it is later than what this process saw."""
        if moment > self._last.get(url_id, 0.0):
            self._last[url_id] = moment

    def forget(self, url_id: str) -> None:
        self._last.pop(url_id, None)
        self._unsaved.pop(url_id, None)

    def times(self, session: Session, policy: Policy | None) -> SessionTimes:
        """The session's start, last input and deadline under ``policy`` (None: unknown)."""
        last = self._last.get(session.url_id)
        deadline = (
            session_deadline(policy, session.started_at, last) if policy is not None else None
        )
        return SessionTimes(
            started_at=session.started_at,
            last_input_at=last,
            expires_at=deadline.at if deadline is not None else None,
            expiry_reason=deadline.reason if deadline is not None else None,
        )

    async def flush(self, unit_of_work: UnitOfWorkFactory) -> int:
        """Write the inputs seen since the last flush in one transaction; returns how many.
        On a failure they are kept for the next flush (unless newer ones replaced them)."""
        if not self._unsaved:
            return 0
        batch, self._unsaved = self._unsaved, {}
        try:
            async with unit_of_work() as uow:
                await uow.session_records.record_inputs(
                    {url_id: _utc(moment) for url_id, moment in batch.items()}
                )
                await uow.commit()
        except RemoteAppError:
            for url_id, moment in batch.items():
                self._unsaved.setdefault(url_id, moment)
            raise
        return len(batch)

    async def load(self, unit_of_work: UnitOfWorkFactory, url_ids: Iterable[str]) -> None:
        """Learn the stored input times of these sessions."""
        wanted = list(url_ids)
        for start in range(0, len(wanted), 500):
            async with unit_of_work() as uow:
                stored = await uow.session_records.last_inputs(wanted[start : start + 500])
            for url_id, moment in stored.items():
                self.learn(url_id, moment.timestamp())

    async def run_forever(self, unit_of_work: UnitOfWorkFactory, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.flush(unit_of_work)
                except RemoteAppError as exc:
                    log.warning("activity.flush_failed", error=exc.message)
        finally:
            try:
                await asyncio.shield(self.flush(unit_of_work))
            except Exception as exc:  # shutting down: the next start reads what was written
                log.warning("activity.final_flush_failed", error=str(exc))


class StopLog:
    """Why sessions ended (see the module)."""

    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        tracker: ActivityTracker,
        *,
        counter: Callable[[StopReason], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._tracker = tracker
        self.counter = counter
        self._clock = clock
        # user -> their recent stops, newest first (loaded from the database once).
        self._recent: dict[str, list[StopRecord]] = {}
        # Stops under way, by url id (see ``note``).
        self._pending: dict[str, StopRecord] = {}

    def note(self, session: Session, reason: StopReason) -> None:
        """A stop of ``session`` for ``reason`` begins: from now on ``stop_of`` tells it,
        so that nobody looking while the container goes is told it never existed."""
        self._pending[session.url_id] = self._record_of(session, reason)
        while len(self._pending) > _MAX_USERS_REMEMBERED:
            del self._pending[next(iter(self._pending))]

    def cancel(self, url_id: str) -> None:
        """The stop ``note`` announced failed: the session runs on."""
        self._pending.pop(url_id, None)

    async def record(self, session: Session, reason: StopReason) -> None:
        """Record that ``session`` ended for ``reason``; never raises (the stop happened)."""
        record = self._record_of(session, reason)
        self._tracker.forget(session.url_id)
        recent = self._recent.get(session.user)
        if recent is not None:
            recent[:] = [record, *(r for r in recent if r.url_id != record.url_id)][
                :_STOPS_PER_USER
            ]
        if self.counter is not None:
            self.counter(reason)
        try:
            async with self._unit_of_work() as uow:
                await uow.session_records.record_stop(record)
                await uow.commit()
        except RemoteAppError as exc:
            log.warning("session.stop_unrecorded", url_id=session.url_id, error=exc.message)
        finally:
            self._pending.pop(session.url_id, None)
        log.info("session.ended", user=session.user, url_id=session.url_id, reason=reason.value)

    def _record_of(self, session: Session, reason: StopReason) -> StopRecord:
        return StopRecord(
            url_id=session.url_id,
            user=session.user,
            mapping_id=session.mapping_id,
            reason=reason,
            stopped_at=_utc(self._clock()),
        )

    async def recent_for(self, user: str) -> Sequence[StopRecord]:
        """The user's stops of the last ``STOP_RETENTION``, newest first."""
        recent = self._recent.get(user)
        if recent is None:
            since = _utc(self._clock()) - STOP_RETENTION
            async with self._unit_of_work() as uow:
                recent = list(await uow.session_records.stops_for_user(user, since))
            recent = recent[:_STOPS_PER_USER]
            self._recent[user] = recent
            while len(self._recent) > _MAX_USERS_REMEMBERED:
                del self._recent[next(iter(self._recent))]
        return recent

    async def stop_of(self, user: str, url_id: str) -> StopRecord | None:
        """Why the user's session ``url_id`` ended; None if it is not known to have."""
        pending = self._pending.get(url_id)
        if pending is not None:
            return pending if pending.user == user else None
        for record in await self.recent_for(user):
            if record.url_id == url_id:
                return record
        async with self._unit_of_work() as uow:
            stored = await uow.session_records.stop_of(url_id)
        return stored if stored is not None and stored.user == user else None

    async def prune(self) -> int:
        """Forget stops (and input times) older than ``STOP_RETENTION``."""
        async with self._unit_of_work() as uow:
            removed = await uow.session_records.prune(_utc(self._clock()) - STOP_RETENTION)
            await uow.commit()
        return removed


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)
