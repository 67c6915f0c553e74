"""Several replicas of the service on one database (the in-memory fakes of what they share):
login sessions, start claims and the lead."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from remoteappmanager.adapters.memory_shared_state import (
    InMemoryLeaderElection,
    InMemoryLoginSessionRecords,
    InMemorySharedState,
    InMemoryStartClaims,
)
from remoteappmanager.domain.errors import Conflict, Unavailable
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.web.login_sessions import (
    ENDED_KEPT,
    PURGE_PERIOD,
    TOUCH_PERIOD,
    LoginSessionStore,
    session_key,
)
from tests.support.session_world import (
    GATE_URL,
    VOLUME_RULES,
    World,
    make_grant,
    make_world,
    wait_until,
)
from tests.support.webapp import FakeClock


def _replicas(
    clock: FakeClock, count: int = 2, **options: int
) -> tuple[InMemorySharedState, list[LoginSessionStore]]:
    state = InMemorySharedState()
    stores = [
        LoginSessionStore(clock=clock, records=InMemoryLoginSessionRecords(state), **options)
        for _ in range(count)
    ]
    return state, stores


# ------------------------------------------------------------------ login sessions
async def test_a_session_opened_on_one_replica_is_valid_on_another() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock)
    opened = await a.open("alice", "hub-token-1")

    loaded = await b.load(opened.id)

    assert loaded is not None
    assert (loaded.user, loaded.hub_token) == ("alice", "hub-token-1")
    assert b.get(opened.id) is loaded  # cached from now on
    assert await b.load("not-a-session") is None


async def test_the_database_holds_neither_the_session_id_nor_the_hub_token() -> None:
    clock = FakeClock()
    state, (a, b) = _replicas(clock)
    opened = await a.open("alice", "hub-token-secret")

    (row,) = state.login_sessions.values()
    assert row.session.key == session_key(opened.id) != opened.id
    assert opened.id not in repr(row)
    assert b"hub-token-secret" not in row.session.sealed_token
    # Someone who can write the table cannot plant a token for a session they do not hold:
    # a token sealed for another session does not open.
    intruder = await a.open("mallory", "mallory-token")
    (stolen,) = (r for r in state.login_sessions.values() if r.session.user == "mallory")
    row.session = type(row.session)(
        row.session.key, "alice", stolen.session.sealed_token, clock(), clock()
    )
    assert await b.load(opened.id) is None
    assert (await b.load(intruder.id)) is not None


async def test_signing_out_on_one_replica_ends_the_session_on_every_replica() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock)
    ended_on_b: list[str] = []
    b.on_end(ended_on_b.append)
    opened = await a.open("alice", "t")
    assert await b.load(opened.id) is not None

    await a.end(opened.id)

    assert a.get(opened.id) is None
    assert await a.load(opened.id) is None
    # b still has it in memory until its next sync, which tells b's listeners (the gate).
    assert b.get(opened.id) is not None
    await b.sync()
    assert ended_on_b == [opened.id]
    assert b.get(opened.id) is None
    assert await b.load(opened.id) is None


async def test_a_stale_cookie_costs_the_database_one_look_up() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock)
    opened = await a.open("alice", "t")
    await a.end(opened.id)
    records = b._records
    assert isinstance(records, InMemoryLoginSessionRecords)
    looked_up: list[str] = []
    real_get = records.get

    async def counted(key: str) -> object:
        looked_up.append(key)
        return await real_get(key)

    records.get = counted  # type: ignore[method-assign,assignment]
    for _ in range(5):
        assert await b.load(opened.id) is None
    assert looked_up == [session_key(opened.id)]


async def test_an_end_committed_late_is_still_noticed_at_a_later_sync() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock)
    opened = await a.open("alice", "t")
    await b.sync()
    clock.advance(1)
    await b.load(opened.id)
    # The end is recorded with a time before b's last check (slow commit, clock skew).
    await a._records.end([session_key(opened.id)], clock() - 3)  # type: ignore[union-attr]
    await b.sync()
    assert b.get(opened.id) is None


async def test_the_per_user_bound_holds_across_replicas() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock, max_sessions_per_user=2)
    ended_on_a: list[str] = []
    a.on_end(ended_on_a.append)
    first = await a.open("alice", "1")
    clock.advance(1)
    second = await b.open("alice", "2")
    clock.advance(1)
    third = await b.open("alice", "3")

    assert await b.load(first.id) is None
    assert await b.load(second.id) is not None
    assert await b.load(third.id) is not None
    await a.sync()
    assert ended_on_a == [first.id]


async def test_uses_are_written_now_and_then_and_keep_a_session_alive_elsewhere() -> None:
    clock = FakeClock()
    state, (a, b) = _replicas(clock)
    a.idle_timeout = b.idle_timeout = 3 * TOUCH_PERIOD
    opened = await a.open("alice", "t")
    key = session_key(opened.id)
    for _ in range(5):
        clock.advance(TOUCH_PERIOD)
        assert a.get(opened.id) is not None
        await a.sync()
    assert state.login_sessions[key].session.last_seen == clock()
    # Used through a all along, it is still valid on b, which never saw it before.
    assert await b.load(opened.id) is not None
    # Unused for longer than the idle timeout, it is refused everywhere.
    clock.advance(3 * TOUCH_PERIOD + 1)
    assert await b.load(opened.id) is None
    fresh = LoginSessionStore(
        clock=clock,
        records=a._records,
        idle_timeout=3 * TOUCH_PERIOD,
    )
    assert await fresh.load(opened.id) is None


async def test_ended_and_expired_sessions_are_purged() -> None:
    clock = FakeClock()
    state, (a, _b) = _replicas(clock)
    ended = await a.open("alice", "1")
    await a.open("bob", "2")
    await a.end(ended.id)
    clock.advance(max(ENDED_KEPT, PURGE_PERIOD) + 1)
    await a.sync()
    assert len(state.login_sessions) == 1  # bob's, unused but not yet idle
    clock.advance(a.idle_timeout)
    await a.sync()
    assert state.login_sessions == {}


async def test_a_database_outage_opens_nothing_and_ends_here_at_once() -> None:
    clock = FakeClock()
    _state, (a, _b) = _replicas(clock)
    opened = await a.open("alice", "t")
    records = a._records
    assert isinstance(records, InMemoryLoginSessionRecords)

    async def down(*_args: object, **_kwargs: object) -> None:
        raise Unavailable("the database is down")

    records.add = down  # type: ignore[method-assign,assignment]
    records.end = down  # type: ignore[method-assign,assignment]
    with pytest.raises(Unavailable):
        await a.open("alice", "t2")
    assert len(a) == 1
    with pytest.raises(Unavailable):
        await a.end(opened.id)
    assert a.get(opened.id) is None


async def test_a_full_cache_forgets_stored_sessions_without_ending_them() -> None:
    clock = FakeClock()
    _state, (a, b) = _replicas(clock, max_sessions=2)
    ended: list[str] = []
    a.on_end(ended.append)
    sessions = [await a.open(f"user{i}", "t") for i in range(3)]
    assert len(a) == 2
    assert ended == []
    assert await a.load(sessions[0].id) is not None
    assert await b.load(sessions[0].id) is not None


# ------------------------------------------------------------------ the lead
async def test_one_replica_at_a_time_runs_the_led_jobs_and_a_survivor_takes_over() -> None:
    state = InMemorySharedState()
    runs: dict[str, int] = {"a": 0, "b": 0}
    running: set[str] = set()

    def job(name: str):  # type: ignore[no-untyped-def]
        async def forever() -> None:
            running.add(name)
            try:
                while True:
                    runs[name] += 1
                    await asyncio.sleep(0.001)
            finally:
                running.discard(name)

        return forever

    elections = {name: InMemoryLeaderElection(state) for name in "ab"}
    leaders = {name: Leadership(elections[name], retry_interval=0.005) for name in "ab"}
    for name, leader in leaders.items():
        leader.lead("reconciler", job(name))
    tasks = [asyncio.ensure_future(leader.run_forever()) for leader in leaders.values()]
    try:
        await wait_until(lambda: running == {"a"})
        assert (leaders["a"].leading, leaders["b"].leading) == (True, False)
        assert runs["b"] == 0

        elections["a"].die()  # a's connection went: b takes over, a stops its jobs
        await wait_until(lambda: running == {"b"})
        assert (leaders["a"].leading, leaders["b"].leading) == (False, True)

        # Stopping the leader hands the lead over at once.
        tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[1]
        assert state.leader is None
        await wait_until(lambda: running == {"a"})
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert running == set()


async def test_a_leader_that_loses_the_database_stops_leading_at_once() -> None:
    election = InMemoryLeaderElection()
    leader = Leadership(election)
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.Event().wait()

    leader.lead("culler", job)
    assert await leader.campaign_once()
    await started.wait()
    election.reachable = False
    assert not await leader.campaign_once()
    assert not leader.leading
    with pytest.raises(ValueError, match="already"):
        leader.lead("culler", job)


# ------------------------------------------------------------------ start claims
def _replica_of(world: World, state: InMemorySharedState, name: str) -> Sessions:
    return Sessions(
        world.runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=world.sessions.realm,
        gate_url=GATE_URL,
        network_timeout=5,
        watch_interval=0.01,
        unit_of_work=world.database.unit_of_work,
        volume_rules=VOLUME_RULES,
        start_claims=InMemoryStartClaims(state),
        claim_holder=name,
    )


async def test_two_replicas_never_start_the_same_grant_at_once() -> None:
    world = make_world()
    state = InMemorySharedState()
    a, b = _replica_of(world, state, "a"), _replica_of(world, state, "b")
    grant = make_grant()
    world.probe.hold = asyncio.Event()
    first = asyncio.create_task(a.start(grant))
    await wait_until(lambda: world.probe.probed)

    with pytest.raises(Conflict, match="already being started"):
        await b.start(grant)
    assert await b.claimed_elsewhere() == {("alice", grant.mapping_id)}
    # The leader's reconciler leaves a start under way on another replica alone.
    report = await Reconciler(world.runtime, world.routes, b).reconcile_once()
    assert report.skipped_busy == 1
    assert not report.changed

    world.probe.hold.set()
    session = await first
    assert state.claims == {}
    # Once the start is over the grant is free again; stopping it from b works.
    await b.stop("alice", session.url_id)
    assert await world.runtime.list({}) == []


async def test_a_claim_left_by_a_dead_replica_lapses() -> None:
    world = make_world()
    state = InMemorySharedState()
    b = _replica_of(world, state, "b")
    grant = make_grant()
    state.claims["alice", grant.mapping_id] = ("dead", time.time() + 0.05)
    with pytest.raises(Conflict):
        await b.start(grant)
    await asyncio.sleep(0.06)
    session = await b.start(grant)
    assert session.user == "alice"


async def test_a_long_start_keeps_its_claim_by_renewing_it() -> None:
    """The lease is short (a dead replica's claim lapses fast), so a start that takes longer
    renews it: no other replica may start the grant meanwhile."""
    world = make_world()
    state = InMemorySharedState()
    a = _replica_of(world, state, "a")
    b = _replica_of(world, state, "b")
    a._claim_ttl = 0.06  # as the lease, shortened
    b._claim_ttl = 0.06
    grant = make_grant()
    world.probe.hold = asyncio.Event()  # the application takes several leases to get ready
    starting = asyncio.create_task(a.start(grant))
    await asyncio.sleep(0.25)
    with pytest.raises(Conflict):
        await b.start(grant)
    world.probe.hold.set()
    await starting
