"""Aligning the proxy's routes with the engine's containers, at start-up and periodically."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

import structlog

from remoteappmanager.domain.audit import SYSTEM_ACTOR
from remoteappmanager.domain.containers import RUNINFO_REALM, ContainerInfo, Route
from remoteappmanager.domain.errors import RemoteAppError, Unavailable
from remoteappmanager.domain.sessions import Session, StopReason, session_from_container
from remoteappmanager.ports.routes import RouteTable
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.services.sessions import Sessions

log = structlog.get_logger(__name__)

DEFAULT_CONCURRENCY = 16
# Containers (and routes) looked at between two returns to the event loop: a pass over tens of
# thousands of sessions then never holds requests up for more than a few milliseconds.
DEFAULT_SLICE = 500
# After a pass, the reconciler rests at least this many times as long as the pass took: on a
# large realm (a pass grows with the number of sessions) it then takes at most a tenth of the
# service's time, however short ``interval`` is.
DEFAULT_REST_FACTOR = 9.0


@dataclass
class ReconcileReport:
    """What one pass changed, by route path and container id."""

    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    containers_removed: list[str] = field(default_factory=list)
    skipped_busy: int = 0
    errors: list[str] = field(default_factory=list)
    running_by_image: Counter[str] = field(default_factory=Counter)
    """Running sessions of the realm by image, as the pass found them."""
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.routes_added or self.routes_removed or self.containers_removed)


class Reconciler:
    """Makes the proxy route to exactly the running containers of our realm.

    One pass: running containers without their route (a restarted proxy) get it back, or get
    it corrected if their port changed; our routes with no running container behind them are
    removed; exited containers of our realm are removed (route first). Grants that a start or
    stop is working on are left to it. Containers of other realms and routes that are not ours
    are never touched. When nothing has to change, a pass costs one engine call and one proxy
    call.
    """

    def __init__(
        self,
        runtime: ContainerRuntime,
        routes: RouteTable,
        sessions: Sessions,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        slice_size: int = DEFAULT_SLICE,
        rest_factor: float = DEFAULT_REST_FACTOR,
        on_pass: Callable[[ReconcileReport], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._routes = routes
        self._sessions = sessions
        self._concurrency = concurrency
        self._slice = max(1, slice_size)
        self._rest_factor = rest_factor
        self._on_pass = on_pass

    async def reconcile_once(self) -> ReconcileReport:
        """One pass; raises ``Unavailable`` only when the engine or the proxy cannot list.

        Failures on single items are logged, reported in ``errors`` and left for next time.
        The report goes to ``on_pass`` (the metrics) too.
        """
        started = time.monotonic()
        realm = self._sessions.realm
        # Routes are listed before containers: a route added by a start that completes in
        # between then always has its container in the (later) container list, so it is never
        # mistaken for an orphan.
        routes = {
            path: route
            for path, route in (await self._routes.list()).items()
            if self._sessions.is_ours(route)
        }
        listed_at = self._sessions.generation
        containers = await self._runtime.list({RUNINFO_REALM: realm})
        claimed = await self._claimed_by_replicas()
        report = ReconcileReport()
        live_paths: set[str] = set()
        repairs: list[Coroutine[object, object, None]] = []
        for index, info in enumerate(containers):
            if index and index % self._slice == 0:
                await asyncio.sleep(0)
            session = session_from_container(info, realm)
            if session is None:
                continue
            live_paths.add(session.urlpath)
            if info.running:
                report.running_by_image[info.image] += 1
            # Busy, or changed through the service since the list was read (the pass returns
            # to the event loop now and then): next pass.
            if (
                self._sessions.busy(session.user, session.mapping_id, session.url_id)
                or listed_at < self._sessions.generation_of(session.user)
                or (session.user, session.mapping_id) in claimed
            ):
                report.skipped_busy += 1
                continue
            wanted = self._sessions.route_for(info)
            if info.running and (
                wanted is None or _same_target(routes.get(session.urlpath), wanted)
            ):
                continue
            repairs.append(self._repair(info, session, wanted, routes, report))
        await self._bounded(repairs)

        await asyncio.sleep(0)
        busy_url_ids = self._sessions.busy_url_ids()
        await self._bounded(
            [
                self._remove_orphan(path, report)
                for path, route in routes.items()
                if path not in live_paths and route.url_id not in busy_url_ids
            ]
        )
        if report.changed:
            log.info(
                "reconcile.changed",
                routes_added=len(report.routes_added),
                routes_removed=len(report.routes_removed),
                containers_removed=len(report.containers_removed),
            )
        report.seconds = time.monotonic() - started
        if self._on_pass is not None:
            self._on_pass(report)
        return report

    async def _claimed_by_replicas(self) -> frozenset[tuple[str, str]]:
        # Another replica's start or stop is left to it, like this process's own.
        try:
            return await self._sessions.claimed_elsewhere()
        except Unavailable as exc:
            # Repairs stay possible without the database (a restarted proxy needs them); a
            # repair racing another replica's start only adds a route that start adds too.
            log.warning("reconcile.claims_unknown", error=exc.message)
            return frozenset()

    async def run_forever(self, interval: float) -> None:
        """Reconcile every ``interval`` seconds until cancelled; failures are logged.

        A pass that took ``t`` seconds is followed by at least ``rest_factor * t`` of rest.
        """
        while True:
            started = time.monotonic()
            try:
                await self.reconcile_once()
            except RemoteAppError as exc:
                log.warning("reconcile.failed", error=exc.message)
            except Exception:
                log.exception("reconcile.crashed")
            took = time.monotonic() - started
            await asyncio.sleep(max(interval, took * self._rest_factor))

    async def _bounded(self, work: list[Coroutine[object, object, None]]) -> None:
        # Repairs are independent; running them side by side brings a restarted proxy's
        # hundreds of routes back in a fraction of the time, within the adapters' own limits.
        semaphore = asyncio.Semaphore(self._concurrency)

        async def one(item: Coroutine[object, object, None]) -> None:
            async with semaphore:
                await item

        await asyncio.gather(*(one(item) for item in work))

    async def _repair(
        self,
        info: ContainerInfo,
        session: Session,
        wanted: Route | None,
        routes: dict[str, Route],
        report: ReconcileReport,
    ) -> None:
        with self._sessions.maintenance(session.user, session.mapping_id) as held:
            if not held:
                report.skipped_busy += 1
                return
            try:
                if wanted is not None:
                    await self._routes.add(wanted)
                    report.routes_added.append(wanted.path)
                    return
                if session.urlpath in routes:
                    await self._routes.remove(session.urlpath)
                    report.routes_removed.append(session.urlpath)
                    del routes[session.urlpath]
                # The list does not say how it ended: an inspect does (the kernel's OOM kill).
                ended = await self._runtime.inspect(info.id)
                await self._runtime.remove(info.id)
                report.containers_removed.append(info.id)
                oom = ended is not None and ended.oom_killed
                await self._sessions.record_stop(
                    session, StopReason.OOM if oom else StopReason.DIED, actor=SYSTEM_ACTOR
                )
            except RemoteAppError as exc:
                self._failed(report, f"repair {session.urlpath}", exc)

    async def _remove_orphan(self, path: str, report: ReconcileReport) -> None:
        try:
            await self._routes.remove(path)
        except RemoteAppError as exc:
            self._failed(report, f"remove route {path}", exc)
        else:
            report.routes_removed.append(path)

    @staticmethod
    def _failed(report: ReconcileReport, action: str, exc: RemoteAppError) -> None:
        log.warning("reconcile.item_failed", action=action, error=exc.message)
        report.errors.append(f"{action}: {exc.message}")


def _same_target(current: Route | None, wanted: Route) -> bool:
    # The proxy may hand a target back with a trailing slash it did not get from us.
    return current is not None and current.target.rstrip("/") == wanted.target.rstrip("/")
