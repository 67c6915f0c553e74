"""Per-user caches: a change of one user's sessions or grants touches that user's entries
only, and an answer read before a change is never served after it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from remoteappmanager.adapters.memory_db import (
    InMemoryDatabase,
    InMemoryGrantRepository,
    InMemoryUnitOfWork,
)
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.domain.containers import RUNINFO_REALM, ContainerInfo
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.domain.models import Grant, Policy
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.services import catalogue
from remoteappmanager.services.applications import Applications, ImageMetadataCache
from remoteappmanager.services.gate_access import GateAccess
from remoteappmanager.services.reconcile import Reconciler, ReconcileReport
from remoteappmanager.services.sessions import Sessions
from tests.support.session_world import GATE_URL, IMAGE, IMAGE_LABELS, REALM, World, make_world


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ListingRuntime(InMemoryRuntime):
    """Counts list calls per filter; ``hold`` makes the next list read its answer, then wait
    for ``release`` before returning it (a listing under way while something changes)."""

    def __init__(self) -> None:
        super().__init__(image_cache_ttl=0)
        self.listings: list[dict[str, str]] = []
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        self.listings.append(dict(labels))
        found = await super().list(labels)
        hold, self.hold = self.hold, None
        if hold is not None:
            self.reading.set()
            await hold.wait()
        return found

    def listed_for(self, user: str) -> int:
        return sum(1 for labels in self.listings if user in labels.values())


async def setup(
    users: Sequence[str] = ("alice", "bob"), *, access: AccessMode = AccessMode.DIRECT
) -> tuple[World, ListingRuntime, Sessions, Clock, dict[str, Grant]]:
    world = make_world()
    runtime = ListingRuntime()
    runtime.add_image(IMAGE, IMAGE_LABELS)
    clock = Clock()
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=access,
        gate_url=GATE_URL,
        watch_interval=0.01,
        unit_of_work=world.database.unit_of_work,
        listing_ttl=5.0,
        clock=clock,
    )
    uow = world.database.unit_of_work
    await catalogue.create_application(uow, IMAGE)
    grants = {}
    for name in users:
        await catalogue.create_user(uow, name)
        grants[name] = await catalogue.grant_access(uow, IMAGE, name, Policy(allow_view=True))
    return world, runtime, sessions, clock, grants


# ------------------------------------------------------------------------------ sessions
async def test_a_users_listing_asks_the_engine_for_that_users_containers_only() -> None:
    _, runtime, sessions, _, grants = await setup()
    await sessions.start(grants["bob"])
    assert await sessions.list_for_user("alice") == []
    (listing,) = runtime.listings
    assert listing[RUNINFO_REALM] == REALM
    assert "alice" in listing.values()
    assert "bob" not in listing.values()


async def test_a_change_of_one_users_sessions_refreshes_that_users_listing_only() -> None:
    _, runtime, sessions, _, grants = await setup()
    assert await sessions.list_for_user("alice") == []
    assert await sessions.list_for_user("bob") == []
    assert (runtime.listed_for("alice"), runtime.listed_for("bob")) == (1, 1)

    started = await sessions.start(grants["bob"])
    assert await sessions.list_for_user("alice") == []
    assert runtime.listed_for("alice") == 1  # still cached: bob's start is not alice's
    (bobs,) = await sessions.list_for_user("bob")
    assert bobs.url_id == started.url_id
    assert runtime.listed_for("bob") == 2

    await sessions.stop("bob", started.url_id)
    assert await sessions.list_for_user("bob") == []
    assert runtime.listed_for("bob") == 3
    assert await sessions.list_for_user("alice") == []
    assert runtime.listed_for("alice") == 1


async def test_concurrent_listings_of_one_user_share_one_engine_call() -> None:
    _, runtime, sessions, _, grants = await setup()
    await sessions.start(grants["alice"])
    listed = await asyncio.gather(*(sessions.list_for_user("alice") for _ in range(50)))
    assert all(len(sessions_) == 1 for sessions_ in listed)
    assert runtime.listed_for("alice") == 1


async def test_a_listing_read_before_a_start_is_not_kept_after_it() -> None:
    _, runtime, sessions, _, grants = await setup()
    held = runtime.hold = asyncio.Event()
    early = asyncio.ensure_future(sessions.list_for_user("alice"))
    await runtime.reading.wait()  # the engine answered "nothing runs"; not returned yet
    started = await sessions.start(grants["alice"])
    held.set()
    # The request that asked before the start may see the world before it...
    assert await early == []
    # ...but no request after the start does: the early answer was not cached.
    (now,) = await sessions.list_for_user("alice")
    assert now.url_id == started.url_id
    assert runtime.listed_for("alice") == 2


async def test_a_listing_under_way_at_a_start_is_not_shared_with_later_requests() -> None:
    _, runtime, sessions, _, grants = await setup()
    held = asyncio.Event()
    runtime.hold = held
    early = asyncio.ensure_future(sessions.list_for_user("alice"))
    await runtime.reading.wait()
    started = await sessions.start(grants["alice"])
    # Still under way: a request after the start must not wait for (and get) its answer.
    (later,) = await asyncio.wait_for(sessions.list_for_user("alice"), 1)
    assert later.url_id == started.url_id
    held.set()
    assert await early == []
    (again,) = await sessions.list_for_user("alice")
    assert again.url_id == started.url_id


async def test_a_realm_listing_under_way_at_a_change_does_not_overwrite_it() -> None:
    _, runtime, sessions, _, grants = await setup()
    held = asyncio.Event()
    runtime.hold = held
    early = asyncio.ensure_future(sessions.list_all())
    await runtime.reading.wait()
    started = await sessions.start(grants["alice"])
    held.set()
    assert await early == []
    (now,) = await sessions.list_all()
    assert now.url_id == started.url_id


async def test_a_container_killed_behind_the_services_back_shows_within_the_ttl() -> None:
    _, runtime, sessions, clock, grants = await setup()
    started = await sessions.start(grants["alice"])
    (running,) = await sessions.list_for_user("alice")
    assert running.container_id is not None
    runtime.kill(running.container_id, remove=True)
    clock.now = 4.9
    assert [s.url_id for s in await sessions.list_for_user("alice")] == [started.url_id]
    clock.now = 5.0
    assert await sessions.list_for_user("alice") == []


async def test_the_realm_listing_lives_its_ttl_on_the_injected_clock() -> None:
    _, runtime, sessions, clock, grants = await setup()
    started = await sessions.start(grants["alice"])
    (running,) = await sessions.list_all()
    assert running.container_id is not None
    runtime.kill(running.container_id, remove=True)
    clock.now = 4.9
    assert [s.url_id for s in await sessions.list_all()] == [started.url_id]
    clock.now = 5.0
    assert await sessions.list_all() == []


async def test_a_restarted_service_finds_its_sessions_from_the_engine() -> None:
    world, runtime, sessions, _, grants = await setup()
    started = await sessions.start(grants["alice"])
    restarted = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=world.database.unit_of_work,
        listing_ttl=5.0,
    )
    (found,) = await restarted.list_for_user("alice")
    assert found.url_id == started.url_id


async def test_the_listing_cache_keeps_at_most_its_bound_of_users() -> None:
    world, runtime, _, _, _ = await setup(())
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=world.database.unit_of_work,
        listing_ttl=5.0,
        max_cached_users=3,
    )
    for name in ("u1", "u2", "u3", "u4"):
        await sessions.list_for_user(name)
    await sessions.list_for_user("u4")
    await sessions.list_for_user("u2")
    assert runtime.listed_for("u4") == 1  # kept
    assert runtime.listed_for("u2") == 1
    await sessions.list_for_user("u1")  # the oldest went
    assert runtime.listed_for("u1") == 2


async def test_past_its_bound_the_record_of_changes_counts_everybody_as_changed() -> None:
    world, runtime, _, _, grants = await setup(("alice", "bob", "carol"))
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=world.database.unit_of_work,
        listing_ttl=5.0,
        max_cached_users=2,
    )
    alice = await sessions.start(grants["alice"])
    seen = sessions.generation
    assert sessions.generation_of("alice") == seen
    await sessions.start(grants["bob"])
    await sessions.start(grants["carol"])
    # Forgotten who changed when: nobody's answer from before may be trusted.
    assert sessions.generation_of("alice") > seen
    assert sessions.generation_of("dave") == sessions.generation
    (found,) = await sessions.list_for_user("alice")
    assert found.url_id == alice.url_id


# ------------------------------------------------------------------------------ the gate
async def test_another_users_start_keeps_a_cached_gate_target_and_the_owners_stop_drops_it() -> (
    None
):
    world, _runtime, sessions, _, grants = await setup(access=AccessMode.GATED)
    gate = GateAccess(sessions, world.database.unit_of_work)
    alice = await sessions.start(grants["alice"])
    target = await gate.target(alice.url_id)
    assert target.owner == "alice"
    assert target.allow_view is True

    await sessions.start(grants["bob"])
    assert gate.cached_target(alice.url_id) == target

    await sessions.stop("alice", alice.url_id)
    assert gate.cached_target(alice.url_id) is None


async def test_a_gate_lookup_under_way_at_the_owners_stop_is_not_kept() -> None:
    world, runtime, sessions, _, grants = await setup(access=AccessMode.GATED)
    gate = GateAccess(sessions, world.database.unit_of_work)
    alice = await sessions.start(grants["alice"])
    held = runtime.hold = asyncio.Event()
    lookup = asyncio.ensure_future(gate.target(alice.url_id))
    await runtime.reading.wait()  # found running; not answered yet
    await sessions.stop("alice", alice.url_id)
    held.set()
    assert (await lookup).owner == "alice"
    assert gate.cached_target(alice.url_id) is None


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_revoked_grant_drops_the_gate_targets_and_decisions_at_the_next_comparison() -> (
    None
):
    # A viewer let in while the policy allowed viewing must not keep getting in for the
    # caches' lifetime once the owner's grant is revoked (or changed) in the catalogue.
    world, _runtime, sessions, clock, grants = await setup(access=AccessMode.GATED)
    gate = GateAccess(sessions, world.database.unit_of_work, clock=clock)
    alice = await sessions.start(grants["alice"])
    assert gate.cached_target(alice.url_id) is None  # asks for the first comparison
    await settle()
    target = await gate.target(alice.url_id)
    assert target.allow_view is True
    gate.remember("bob-login", alice.url_id, True)

    await catalogue.revoke_grant(world.database.unit_of_work, grants["alice"].mapping_id)
    clock.now += 0.5  # the comparison is not due yet: the caches still answer
    assert gate.cached_target(alice.url_id) == target
    assert gate.decision("bob-login", alice.url_id) is True

    clock.now += 1.0
    assert gate.cached_target(alice.url_id) == target  # answered now, compared behind
    await settle()
    assert gate.cached_target(alice.url_id) is None
    assert gate.decision("bob-login", alice.url_id) is None
    again = await gate.target(alice.url_id)
    assert again.allow_view is False  # revoked: only the owner and admins get in


async def test_an_unreadable_catalogue_keeps_the_gate_serving_from_its_caches() -> None:
    world, _runtime, sessions, clock, grants = await setup(access=AccessMode.GATED)
    down = False

    def unit_of_work() -> InMemoryUnitOfWork:
        if down:
            raise Unavailable("cannot use the database: connection refused")
        return world.database.unit_of_work()

    gate = GateAccess(sessions, unit_of_work, clock=clock)
    alice = await sessions.start(grants["alice"])
    gate.cached_target(alice.url_id)
    await settle()
    target = await gate.target(alice.url_id)
    down = True
    clock.now += 1.5
    assert gate.cached_target(alice.url_id) == target
    await settle()
    assert gate.cached_target(alice.url_id) == target
    # Once the cached answer expires, the owner still reaches the application; viewers don't
    # (sharing cannot be checked), and the answer is not kept.
    clock.now += 20
    assert gate.cached_target(alice.url_id) is None
    degraded = await gate.target(alice.url_id)
    assert (degraded.owner, degraded.port, degraded.allow_view) == ("alice", target.port, False)
    assert gate.cached_target(alice.url_id) is None
    down = False
    clock.now += 2
    gate.cached_target(alice.url_id)
    await settle()
    assert (await gate.target(alice.url_id)).allow_view is True
    await gate.close()


# ------------------------------------------------------------------------------ grants
class CountingDatabase(InMemoryDatabase):
    """Counts the grant reads by user id; ``hold`` pauses the next one after it read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    def unit_of_work(self) -> InMemoryUnitOfWork:
        database = self

        class Grants(InMemoryGrantRepository):
            async def list_for_user(self, user_id: int) -> Sequence[Grant]:
                database.reads.append(user_id)
                found = await super().list_for_user(user_id)
                hold, database.hold = database.hold, None
                if hold is not None:
                    database.reading.set()
                    await hold.wait()
                return found

        class Counting(InMemoryUnitOfWork):
            @property
            def grants(self) -> InMemoryGrantRepository:
                return Grants(self._require_tables())

        return Counting(self)


async def grants_world() -> tuple[CountingDatabase, Applications, dict[str, int]]:
    database = CountingDatabase()
    uow = database.unit_of_work
    await catalogue.create_application(uow, IMAGE)
    ids = {}
    for name in ("alice", "bob"):
        ids[name] = (await catalogue.create_user(uow, name)).id
        await catalogue.grant_access(uow, IMAGE, name, Policy())
    world = make_world()
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, IMAGE_LABELS)
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=uow,
        listing_ttl=5.0,
    )
    applications = Applications(uow, sessions, ImageMetadataCache(runtime), grants_ttl=10.0)
    return database, applications, ids


async def test_a_users_page_reads_that_users_grants_only() -> None:
    database, applications, ids = await grants_world()
    assert len(await applications.list_for("alice")) == 1
    assert database.reads == [ids["alice"]]
    assert len(await applications.list_for("alice")) == 1
    assert database.reads == [ids["alice"]]
    assert await applications.list_for("nobody") == []


async def test_forgetting_one_users_grants_keeps_everybody_elses() -> None:
    database, applications, ids = await grants_world()
    await applications.list_for("alice")
    await applications.list_for("bob")
    await catalogue.grant_access(database.unit_of_work, IMAGE, "bob", Policy(allow_home=True))
    applications.forget_grants("bob")
    assert len(await applications.list_for("bob")) == 2
    assert len(await applications.list_for("alice")) == 1
    assert database.reads == [ids["alice"], ids["bob"], ids["bob"]]


async def test_a_grants_read_under_way_when_they_change_is_not_kept() -> None:
    database, applications, _ids = await grants_world()
    held = database.hold = asyncio.Event()
    early = asyncio.ensure_future(applications.list_for("alice"))
    await database.reading.wait()
    await catalogue.grant_access(database.unit_of_work, IMAGE, "alice", Policy(allow_home=True))
    applications.forget_grants("alice")
    held.set()
    assert len(await early) == 1
    assert len(await applications.list_for("alice")) == 2


# ------------------------------------------------------------------------------ the reconciler
async def test_a_reconcile_pass_over_many_sessions_lets_other_tasks_run() -> None:
    world = make_world()
    uow = world.database.unit_of_work
    await catalogue.create_application(uow, IMAGE)
    for n in range(60):
        await catalogue.create_user(uow, f"user{n}")
        await world.sessions.start(await catalogue.grant_access(uow, IMAGE, f"user{n}", Policy()))
    reconciler = Reconciler(world.runtime, world.routes, world.sessions, slice_size=10)
    turns = 0

    async def ticking() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(ticking())
    await asyncio.sleep(0)
    before = turns
    report = await reconciler.reconcile_once()
    ticker.cancel()
    assert not report.changed
    # The engine's and the proxy's answers are immediate here: only the slices yield.
    assert turns - before >= 5


async def test_a_session_stopped_during_a_reconcile_pass_gets_no_route_back() -> None:
    world = make_world()
    runtime = ListingRuntime()
    runtime.add_image(IMAGE, IMAGE_LABELS)
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=world.database.unit_of_work,
    )
    uow = world.database.unit_of_work
    await catalogue.create_application(uow, IMAGE)
    await catalogue.create_user(uow, "alice")
    alice = await sessions.start(await catalogue.grant_access(uow, IMAGE, "alice", Policy()))
    world.routes.lose_all()  # a restarted proxy: the pass would add alice's route back
    held = runtime.hold = asyncio.Event()
    reconciling = asyncio.ensure_future(
        Reconciler(runtime, world.routes, sessions).reconcile_once()
    )
    await runtime.reading.wait()  # the engine listed alice's container; the pass goes on later
    await sessions.stop("alice", alice.url_id)
    held.set()
    report = await reconciling
    assert report.routes_added == []
    assert alice.urlpath not in await world.routes.list()


async def test_stale_grants_are_answered_at_once_and_refreshed_a_few_at_a_time() -> None:
    database = CountingDatabase()
    in_flight = peak = 0
    release = asyncio.Event()
    slow = False

    class SlowGrants(InMemoryGrantRepository):
        async def list_for_user(self, user_id: int) -> Sequence[Grant]:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1
            return await super().list_for_user(user_id)

    class Work(InMemoryUnitOfWork):
        @property
        def grants(self) -> InMemoryGrantRepository:
            return SlowGrants(self._require_tables()) if slow else super().grants

    def uow() -> InMemoryUnitOfWork:
        return Work(database)

    await catalogue.create_application(uow, IMAGE)
    names = [f"user{n}" for n in range(12)]
    for name in names:
        await catalogue.create_user(uow, name)
        await catalogue.grant_access(uow, IMAGE, name, Policy())
    world = make_world()
    clock = Clock()
    applications = Applications(
        uow, world.sessions, ImageMetadataCache(world.runtime), grants_ttl=10.0, clock=clock
    )
    for name in names:
        await applications.list_for(name)

    slow = True  # the database takes its time from now on
    clock.now = 15.0  # every entry stale, none expired
    listed = await asyncio.wait_for(asyncio.gather(*(applications.list_for(n) for n in names)), 1)
    assert all(len(entry) == 1 for entry in listed)  # answered without waiting for the reads
    for _ in range(20):
        await asyncio.sleep(0)
    assert peak == 4
    release.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert in_flight == 0


async def test_reconcile_passes_that_take_long_are_spaced_out() -> None:
    world = make_world()
    passes = 0

    class Slow(Reconciler):
        async def reconcile_once(self) -> ReconcileReport:
            nonlocal passes
            passes += 1
            await asyncio.sleep(0.05)  # a pass over a large realm
            return ReconcileReport()

    task = asyncio.ensure_future(
        Slow(world.runtime, world.routes, world.sessions, rest_factor=9).run_forever(0.001)
    )
    await asyncio.sleep(0.7)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Each pass is followed by 0.45 s of rest: two passes in 0.7 s (without it, about 14).
    assert passes == 2
