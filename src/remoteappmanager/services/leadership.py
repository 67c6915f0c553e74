"""One replica at a time runs the jobs that act on the whole realm (reconciling, culling).

Every replica campaigns every ``retry_interval`` seconds; the one that holds the lead runs the
jobs put under it, the others wait. A leader that dies loses the lead with its database
connection, and another replica starts the jobs at its next campaign; a leader that cannot
reach the database any more stops its jobs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from remoteappmanager.ports.coordination import LeaderElection

log = structlog.get_logger(__name__)

DEFAULT_RETRY_INTERVAL = 2.0

Job = Callable[[], Awaitable[None]]
"""A job's run-forever loop; cancelled when the lead is lost."""


class Leadership:
    """Runs the jobs ``lead`` was given while this process holds the lead.

    ``leading`` says whether it does (for health and metrics). ``run_forever`` campaigns
    until cancelled, then stops the jobs and resigns, so that another replica takes over at
    once.
    """

    def __init__(
        self, election: LeaderElection, *, retry_interval: float = DEFAULT_RETRY_INTERVAL
    ) -> None:
        if retry_interval <= 0:
            raise ValueError("retry_interval must be positive")
        self._election = election
        self._retry_interval = retry_interval
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self.leading = False
        self.changes = 0
        """How many times this process took or lost the lead."""

    def lead(self, name: str, job: Job) -> None:
        """Run ``job()`` (a loop that runs until cancelled) while this process leads."""
        if name in self._jobs:
            raise ValueError(f"a job named {name!r} is already led")
        self._jobs[name] = job

    async def campaign_once(self) -> bool:
        """Take, keep or lose the lead once; start or stop the jobs to match."""
        leading = await self._election.try_lead()
        if leading and not self.leading:
            self.leading, self.changes = True, self.changes + 1
            log.info("leadership.taken", jobs=sorted(self._jobs))
            for name, job in self._jobs.items():
                self._start(name, job)
        elif not leading and self.leading:
            self.leading, self.changes = False, self.changes + 1
            log.warning("leadership.lost", jobs=sorted(self._jobs))
            await self._stop_jobs()
        elif leading:
            # A job that ended on its own (it should not) is started again.
            for name, job in self._jobs.items():
                if self._running[name].done():
                    self._start(name, job)
        return self.leading

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self.campaign_once()
                except Exception:
                    log.exception("leadership.crashed")
                await asyncio.sleep(self._retry_interval)
        finally:
            await self._stop_jobs()
            if self.leading:
                self.leading = False
                log.info("leadership.resigned")
            await asyncio.shield(self._election.resign())

    def _start(self, name: str, job: Job) -> None:
        task = asyncio.ensure_future(job())
        task.set_name(name)
        self._running[name] = task

    async def _stop_jobs(self) -> None:
        tasks = list(self._running.values())
        self._running.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception:
                    log.exception("leadership.job_failed", job=task.get_name())
