"""Stopping sessions past their policy's idle timeout or maximum lifetime.

Deadlines come from what outlives this process: the start time from the engine, the last
client input from the database (written by every process's ``ActivityTracker``) as well as
from this process's memory. A restarted service therefore culls an overdue session on its
first pass, with the right reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import SessionState, session_deadline
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.activity import ActivityTracker
from remoteappmanager.services.sessions import Sessions

log = structlog.get_logger(__name__)

DEFAULT_SLICE = 500
# A pass is followed by at least this many times its duration of rest (as the reconciler).
DEFAULT_REST_FACTOR = 9.0
# Stop records are pruned at most this often.
_PRUNE_INTERVAL = 3600.0


@dataclass
class CullReport:
    """What one pass did: the sessions stopped, by url id, with the reason."""

    culled: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    looked_at: int = 0


class Culler:
    """Stops running sessions whose idle or lifetime deadline has passed (see the module).

    ``run_once`` is one pass; ``run_forever`` repeats it. Sessions a start or stop is
    working on are left for the next pass. Stops go through ``Sessions.stop_for``: the
    route first, then the container, and the reason recorded.
    """

    def __init__(
        self,
        sessions: Sessions,
        unit_of_work: UnitOfWorkFactory,
        tracker: ActivityTracker,
        *,
        clock: Callable[[], float] = time.time,
        slice_size: int = DEFAULT_SLICE,
        rest_factor: float = DEFAULT_REST_FACTOR,
    ) -> None:
        self._sessions = sessions
        self._unit_of_work = unit_of_work
        self._tracker = tracker
        self._clock = clock
        self._slice = max(1, slice_size)
        self._rest_factor = rest_factor
        self._pruned_at: float | None = None

    async def run_once(self) -> CullReport:
        """One pass; raises ``Unavailable`` only when the engine cannot list sessions or the
        database cannot be read."""
        report = CullReport()
        running = [
            session
            for session in await self._sessions.list_all()
            if session.state is SessionState.RUNNING and session.container_id is not None
        ]
        report.looked_at = len(running)
        if not running:
            await self._prune()
            return report
        policies = await self._policies({session.mapping_id for session in running})
        timed = [session for session in running if _timed(policies.get(session.mapping_id))]
        await self._tracker.load(self._unit_of_work, [session.url_id for session in timed])
        now = self._clock()
        for index, session in enumerate(timed):
            if index and index % self._slice == 0:
                await asyncio.sleep(0)
            policy = policies[session.mapping_id]
            deadline = session_deadline(
                policy, session.started_at, self._tracker.last_input(session.url_id)
            )
            if deadline is None or now < deadline.at:
                continue
            if self._sessions.busy(session.user, session.mapping_id, session.url_id):
                continue
            try:
                await self._sessions.stop_for(session, deadline.reason)
            except RemoteAppError as exc:
                log.warning("cull.failed", url_id=session.url_id, error=exc.message)
                report.errors.append(f"{session.url_id}: {exc.message}")
                continue
            report.culled[session.url_id] = deadline.reason.value
            log.info(
                "cull.stopped",
                user=session.user,
                url_id=session.url_id,
                reason=deadline.reason.value,
                overdue_s=round(now - deadline.at, 1),
            )
        await self._prune()
        return report

    async def run_forever(self, interval: float) -> None:
        """A pass every ``interval`` seconds until cancelled; failures are logged."""
        while True:
            started = time.monotonic()
            try:
                await self.run_once()
            except RemoteAppError as exc:
                log.warning("cull.pass_failed", error=exc.message)
            except Exception:
                log.exception("cull.crashed")
            took = time.monotonic() - started
            await asyncio.sleep(max(interval, took * self._rest_factor))

    async def _policies(self, mapping_ids: set[str]) -> Mapping[str, Policy]:
        # A revoked grant has none: its session runs on without a deadline.
        async with self._unit_of_work() as uow:
            return await uow.grants.policies_of(mapping_ids)

    async def _prune(self) -> None:
        stop_log = self._sessions.stop_log
        now = self._clock()
        if stop_log is None or (
            self._pruned_at is not None and now - self._pruned_at < _PRUNE_INTERVAL
        ):
            return
        self._pruned_at = now
        try:
            await stop_log.prune()
        except RemoteAppError as exc:
            log.warning("cull.prune_failed", error=exc.message)


def _timed(policy: Policy | None) -> bool:
    return policy is not None and bool(policy.idle_timeout_s or policy.max_lifetime_s)
