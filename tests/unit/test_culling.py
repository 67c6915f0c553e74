"""Deadlines, the activity tracker, the culler and stop reasons, over in-memory fakes with an
injected clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.domain.confinement import ResourceLimits, limits_for
from remoteappmanager.domain.errors import InvalidRequest, Unavailable
from remoteappmanager.domain.models import Grant, Policy
from remoteappmanager.domain.sessions import StopReason, session_deadline
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.culling import Culler
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from tests.support.session_world import IMAGE, World, make_world
from tests.support.webapp import FakeClock

START = 1_800_000_000.0


# ------------------------------------------------------------------------------ deadlines
def test_no_timeouts_means_no_deadline() -> None:
    assert session_deadline(Policy(), START, None) is None
    assert session_deadline(Policy(idle_timeout_s=0, max_lifetime_s=0), START, START) is None


def test_idle_counts_from_the_start_until_the_first_input() -> None:
    deadline = session_deadline(Policy(idle_timeout_s=20), START, None)
    assert deadline is not None
    assert (deadline.at, deadline.reason) == (START + 20, StopReason.IDLE)


def test_idle_counts_from_the_last_input() -> None:
    deadline = session_deadline(Policy(idle_timeout_s=20), START, START + 100)
    assert deadline is not None
    assert deadline.at == START + 120


def test_an_input_older_than_the_start_does_not_shorten_the_idle_time() -> None:
    # A stored input of an earlier session of the same url id cannot exist, but a clock
    # step can put an input before the engine's start time.
    deadline = session_deadline(Policy(idle_timeout_s=20), START, START - 50)
    assert deadline is not None
    assert deadline.at == START + 20


def test_the_earlier_deadline_wins_and_says_why() -> None:
    policy = Policy(idle_timeout_s=60, max_lifetime_s=30)
    busy = session_deadline(policy, START, START + 25)
    assert busy is not None
    assert (busy.at, busy.reason) == (START + 30, StopReason.LIFETIME)
    idle_first = session_deadline(Policy(idle_timeout_s=10, max_lifetime_s=30), START, None)
    assert idle_first is not None
    assert (idle_first.at, idle_first.reason) == (START + 10, StopReason.IDLE)
    tie = session_deadline(Policy(idle_timeout_s=30, max_lifetime_s=30), START, None)
    assert tie is not None
    assert tie.reason is StopReason.LIFETIME


def test_an_unknown_start_gives_no_deadline() -> None:
    assert session_deadline(Policy(idle_timeout_s=5, max_lifetime_s=5), None, START) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"memory_limit_mb": 5},
        {"memory_limit_mb": True},
        {"cpu_limit": 0.0},
        {"cpu_limit": 2000.0},
        {"cpu_limit": float("nan")},
        {"pids_limit": 0},
        {"idle_timeout_s": -1},
        {"max_lifetime_s": 10**9},
    ],
)
def test_limits_out_of_bounds_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        Policy(**fields)  # type: ignore[arg-type]


def test_a_policy_without_limits_takes_the_deployments_defaults() -> None:
    defaults = ResourceLimits(memory_mb=4096, cpus=2.0, pids=1024)
    assert limits_for(Policy(), defaults) == defaults
    assert limits_for(Policy(memory_limit_mb=128, cpu_limit=0.5), defaults) == ResourceLimits(
        128, 0.5, 1024
    )
    assert limits_for(Policy(pids_limit=64), ResourceLimits(None, None, None)) == (
        ResourceLimits(None, None, 64)
    )


# ------------------------------------------------------------------------------ tracker
async def test_inputs_are_written_in_one_batch_and_survive_a_new_tracker() -> None:
    clock = FakeClock(START)
    database = InMemoryDatabase()
    tracker = ActivityTracker(clock=clock)
    tracker.client_input("a" * 32)
    clock.advance(5)
    tracker.client_input("b" * 32)
    tracker.client_input("a" * 32)

    assert await tracker.flush(database.unit_of_work) == 2
    assert await tracker.flush(database.unit_of_work) == 0

    restarted = ActivityTracker(clock=clock)
    assert restarted.last_input("a" * 32) is None
    await restarted.load(database.unit_of_work, ["a" * 32, "b" * 32, "c" * 32])
    assert restarted.last_input("a" * 32) == START + 5
    assert restarted.last_input("c" * 32) is None


async def test_a_stored_input_older_than_the_one_in_memory_is_ignored() -> None:
    clock = FakeClock(START)
    database = InMemoryDatabase()
    other = ActivityTracker(clock=clock)
    other.client_input("a" * 32)
    await other.flush(database.unit_of_work)
    clock.advance(30)
    tracker = ActivityTracker(clock=clock)
    tracker.client_input("a" * 32)

    await tracker.load(database.unit_of_work, ["a" * 32])

    assert tracker.last_input("a" * 32) == START + 30


def test_the_tracker_stays_bounded() -> None:
    tracker = ActivityTracker(clock=FakeClock(START), max_tracked=2)
    for url_id in ("a", "b", "a", "c"):
        tracker.client_input(url_id * 32)
    # "b" was the longest unused.
    assert tracker.last_input("b" * 32) is None
    assert tracker.last_input("a" * 32) is not None


# ------------------------------------------------------------------------------ the culler
@dataclass
class Service:
    """One service process over the shared engine, proxy and database."""

    sessions: Sessions
    tracker: ActivityTracker
    stop_log: StopLog
    culler: Culler
    reconciler: Reconciler
    counted: list[StopReason]


def _service(world: World, clock: FakeClock) -> Service:
    tracker = ActivityTracker(clock=clock)
    counted: list[StopReason] = []
    stop_log = StopLog(world.database.unit_of_work, tracker, clock=clock, counter=counted.append)
    sessions = world.sessions_for()
    sessions.stop_log = stop_log
    return Service(
        sessions=sessions,
        tracker=tracker,
        stop_log=stop_log,
        culler=Culler(sessions, world.database.unit_of_work, tracker, clock=clock),
        reconciler=Reconciler(world.runtime, world.routes, sessions),
        counted=counted,
    )


async def _granted(world: World, policy: Policy, user: str = "alice") -> Grant:
    async with world.database.unit_of_work() as uow:
        try:
            found = await uow.users.get_by_name(user)
        except Exception:
            found = await uow.users.add(user)
        try:
            application = await uow.applications.get_by_image(IMAGE)
        except Exception:
            application = await uow.applications.add(IMAGE)
        grant = await uow.grants.grant(found, application, policy)
        await uow.commit()
    return grant


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def world(clock: FakeClock) -> World:
    world = make_world()
    world.runtime.wall_clock = clock
    return world


async def _running(service: Service) -> set[str]:
    return {session.url_id for session in await service.sessions.list_all()}


async def test_an_idle_session_is_culled_route_first_with_its_reason(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    grant = await _granted(world, Policy(idle_timeout_s=20))
    session = await service.sessions.start(grant)
    order: list[str] = []
    remove_route, remove_container = world.routes.remove, world.runtime.remove

    async def route_removed(path: str) -> None:
        order.append("route")
        await remove_route(path)

    async def container_removed(container_id: str) -> None:
        order.append("container")
        await remove_container(container_id)

    world.routes.remove = route_removed  # type: ignore[method-assign]
    world.runtime.remove = container_removed  # type: ignore[method-assign]

    clock.advance(19)
    assert (await service.culler.run_once()).culled == {}
    clock.advance(1)
    report = await service.culler.run_once()

    assert report.culled == {session.url_id: "idle"}
    assert order == ["route", "container"]
    assert await _running(service) == set()
    assert not await world.routes.list()
    stop = await service.stop_log.stop_of("alice", session.url_id)
    assert stop is not None
    assert stop.reason is StopReason.IDLE
    assert service.counted == [StopReason.IDLE]


async def test_input_keeps_a_session_but_not_past_its_lifetime(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    grant = await _granted(world, Policy(idle_timeout_s=20, max_lifetime_s=30))
    session = await service.sessions.start(grant)

    for _ in range(5):
        clock.advance(5)
        service.tracker.client_input(session.url_id)
        assert (await service.culler.run_once()).culled == {}
    assert await _running(service) == {session.url_id}

    clock.advance(5)  # 30 s after the start, 5 s after the last input
    report = await service.culler.run_once()

    assert report.culled == {session.url_id: "lifetime"}
    assert await _running(service) == set()


async def test_a_session_of_a_group_grant_is_culled_by_its_policy(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    user_grant = await _granted(world, Policy(idle_timeout_s=50))
    async with world.database.unit_of_work() as uow:
        physics = await uow.grants.grant_group(
            "physics", user_grant.application, Policy(idle_timeout_s=20)
        )
        await uow.commit()
    by_group = await service.sessions.start(physics.for_user(user_grant.user))
    by_name = await service.sessions.start(user_grant)

    clock.advance(20)
    report = await service.culler.run_once()

    assert report.culled == {by_group.url_id: "idle"}
    assert await _running(service) == {by_name.url_id}


async def test_sessions_without_timeouts_or_grant_are_never_culled(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    forever = await service.sessions.start(await _granted(world, Policy()))
    revoked_grant = await _granted(world, Policy(idle_timeout_s=1, allow_home=True))
    revoked = await service.sessions.start(revoked_grant)
    async with world.database.unit_of_work() as uow:
        await uow.grants.revoke(revoked_grant.mapping_id)
        await uow.commit()

    clock.advance(10**6)
    report = await service.culler.run_once()

    assert report.culled == {}
    assert await _running(service) == {forever.url_id, revoked.url_id}


async def test_a_restarted_service_culls_what_became_overdue_meanwhile(
    world: World, clock: FakeClock
) -> None:
    before = _service(world, clock)
    idle = await before.sessions.start(await _granted(world, Policy(idle_timeout_s=60)))
    busy = await before.sessions.start(await _granted(world, Policy(idle_timeout_s=60), user="bob"))
    clock.advance(50)
    before.tracker.client_input(busy.url_id)
    await before.tracker.flush(world.database.unit_of_work)
    # The service stops; nothing of its memory survives. Time passes.
    clock.advance(20)

    after = _service(world, clock)
    report = await after.culler.run_once()

    # 70 s after the start without input: idle. 20 s after bob's stored input: kept.
    assert report.culled == {idle.url_id: "idle"}
    assert await _running(after) == {busy.url_id}
    clock.advance(40)
    assert (await after.culler.run_once()).culled == {busy.url_id: "idle"}


async def test_stops_by_the_user_and_by_an_admin_say_so(world: World, clock: FakeClock) -> None:
    service = _service(world, clock)
    mine = await service.sessions.start(await _granted(world, Policy()))
    theirs = await service.sessions.start(await _granted(world, Policy(), user="bob"))

    await service.sessions.stop("alice", mine.url_id)
    await service.sessions.stop_any(theirs.url_id)

    alice = await service.stop_log.stop_of("alice", mine.url_id)
    bob = await service.stop_log.stop_of("bob", theirs.url_id)
    assert alice is not None
    assert alice.reason is StopReason.USER
    assert bob is not None
    assert bob.reason is StopReason.ADMIN
    # Nobody learns why somebody else's session ended.
    assert await service.stop_log.stop_of("bob", mine.url_id) is None
    assert [r.url_id for r in await service.stop_log.recent_for("alice")] == [mine.url_id]


async def test_an_out_of_memory_kill_is_told_from_another_death(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    ballooned = await service.sessions.start(await _granted(world, Policy(memory_limit_mb=64)))
    crashed = await service.sessions.start(await _granted(world, Policy(), user="bob"))
    assert ballooned.container_id is not None
    assert crashed.container_id is not None
    world.runtime.kill(ballooned.container_id, oom=True)
    world.runtime.kill(crashed.container_id)

    await service.reconciler.reconcile_once()

    oom = await service.stop_log.stop_of("alice", ballooned.url_id)
    died = await service.stop_log.stop_of("bob", crashed.url_id)
    assert oom is not None
    assert oom.reason is StopReason.OOM
    assert died is not None
    assert died.reason is StopReason.DIED
    assert sorted(service.counted) == sorted([StopReason.OOM, StopReason.DIED])


async def test_containers_get_the_policys_limits_over_the_defaults(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    limited = await service.sessions.start(
        await _granted(world, Policy(memory_limit_mb=128, cpu_limit=0.5, pids_limit=64))
    )
    default = await service.sessions.start(await _granted(world, Policy(), user="bob"))
    assert limited.container_id is not None
    assert default.container_id is not None

    limits = world.runtime.spec_of(limited.container_id).confinement.limits
    assert (limits.memory_bytes, limits.nano_cpus, limits.pids) == (128 * 2**20, 500_000_000, 64)
    assert world.runtime.spec_of(default.container_id).confinement.limits == (
        service.sessions.default_limits
    )


async def test_a_stop_under_way_is_told_as_a_stop_and_a_failed_one_is_not(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    session = await service.sessions.start(await _granted(world, Policy()))
    release = asyncio.Event()
    remove_route = world.routes.remove

    async def slow_remove(path: str) -> None:
        await release.wait()
        await remove_route(path)

    world.routes.remove = slow_remove  # type: ignore[method-assign]
    stopping = asyncio.ensure_future(service.sessions.stop("alice", session.url_id))
    await asyncio.sleep(0.01)
    during = await service.stop_log.stop_of("alice", session.url_id)
    assert during is not None
    assert during.reason is StopReason.USER
    assert await service.stop_log.stop_of("bob", session.url_id) is None
    release.set()
    await stopping

    again = await service.sessions.start(await _granted(world, Policy(), user="bob"))
    world.routes.available = False
    with pytest.raises(Unavailable):
        await service.sessions.stop("bob", again.url_id)
    assert await service.stop_log.stop_of("bob", again.url_id) is None


async def test_a_cull_is_in_the_audit_trail_as_a_cull_with_its_reason(
    world: World, clock: FakeClock
) -> None:
    service = _service(world, clock)
    events = InMemoryEventStore()
    service.sessions.audit = AuditTrail(events)
    grant = await _granted(world, Policy(max_lifetime_s=30))
    session = await service.sessions.start(grant)
    clock.advance(30)
    assert (await service.culler.run_once()).culled == {session.url_id: "lifetime"}
    await service.sessions.audit.flush()  # type: ignore[attr-defined]
    culls = [
        (event.actor, event.target, event.detail["reason"])
        for event in events.events
        if event.action.value == "cull"
    ]
    assert culls == [("system", session.url_id, "lifetime")]
