"""What replicas share through the database, asserted alike on the fakes, SQLite and PostgreSQL:
stored login sessions, start claims, who controls shared sessions and (PostgreSQL and the fake)
the leader election."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.adapters.db.shared_state import (
    PostgresLeaderElection,
    SqlControlStates,
    SqlLoginSessionRecords,
    SqlStartClaims,
)
from remoteappmanager.adapters.memory_shared_state import (
    InMemoryControlStates,
    InMemoryLeaderElection,
    InMemoryLoginSessionRecords,
    InMemorySharedState,
    InMemoryStartClaims,
)
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.domain.shares import ControlState
from remoteappmanager.ports.coordination import ControlStates, LeaderElection, StartClaims
from remoteappmanager.ports.login_sessions import LoginSessionRecords, StoredLoginSession
from tests.support.services import PostgresCluster

MAPPING = "a" * 32


@dataclass
class Shared:
    records: LoginSessionRecords
    claims: StartClaims
    controls: ControlStates


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    if request.param == "memory":
        state = InMemorySharedState()
        yield Shared(
            InMemoryLoginSessionRecords(state),
            InMemoryStartClaims(state),
            InMemoryControlStates(state),
        )
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"shared_{uuid.uuid4().hex[:12]}")
    await migrate.upgrade(url)
    database = SqlDatabase(url)
    try:
        yield Shared(
            SqlLoginSessionRecords(database.engine, database.location),
            SqlStartClaims(database.engine, database.location),
            SqlControlStates(database.engine, database.location),
        )
    finally:
        await database.close()


def _stored(key: str, user: str = "alice", *, at: float = 100.0) -> StoredLoginSession:
    return StoredLoginSession(
        key=key.ljust(64, "0"),
        user=user,
        sealed_token=b"\x00sealed" + key.encode(),
        created=at,
        last_seen=at,
    )


# ------------------------------------------------------------------ login sessions
async def test_a_stored_session_is_found_by_its_key_until_it_ends(shared: Shared) -> None:
    session = _stored("one")
    assert await shared.records.add(session, keep_per_user=5) == []
    assert await shared.records.get(session.key) == session
    assert await shared.records.get(_stored("other").key) is None

    await shared.records.end([session.key], at=150.0)

    assert await shared.records.get(session.key) is None
    assert await shared.records.ended_since(150.0) == [session.key]
    assert await shared.records.ended_since(150.5) == []
    # Ending again changes nothing (the first end's time stays).
    await shared.records.end([session.key, _stored("unknown").key], at=160.0)
    assert await shared.records.ended_since(155.0) == []


async def test_a_users_sessions_beyond_the_bound_end_least_recently_used_first(
    shared: Shared,
) -> None:
    first, second, third = _stored("1", at=100), _stored("2", at=110), _stored("3", at=120)
    other = _stored("bob", "bob", at=90)
    for session in (other, first, second):
        assert await shared.records.add(session, keep_per_user=2) == []
    await shared.records.touch({first.key: 115.0})  # now second is the least recently used

    assert await shared.records.add(third, keep_per_user=2) == [second.key]

    assert await shared.records.get(second.key) is None
    assert (await shared.records.get(first.key)) is not None
    assert (await shared.records.get(third.key)) is not None
    assert (await shared.records.get(other.key)) is not None  # another user is untouched


async def test_touch_only_moves_last_use_forward(shared: Shared) -> None:
    session = _stored("t", at=100)
    await shared.records.add(session, keep_per_user=5)
    await shared.records.touch({session.key: 130.0, _stored("ghost").key: 140.0})
    await shared.records.touch({session.key: 120.0})
    found = await shared.records.get(session.key)
    assert found is not None
    assert found.last_seen == 130.0


async def test_ending_a_user_ends_all_their_sessions_only(shared: Shared) -> None:
    mine = [_stored("m1"), _stored("m2")]
    theirs = _stored("t1", "bob")
    for session in [*mine, theirs]:
        await shared.records.add(session, keep_per_user=5)

    ended = await shared.records.end_user("alice", at=200.0)

    assert sorted(ended) == sorted(session.key for session in mine)
    assert await shared.records.get(theirs.key) is not None
    assert await shared.records.end_user("alice", at=201.0) == []


async def test_purge_forgets_ended_idle_and_old_sessions(shared: Shared) -> None:
    ended, idle, old, live = (
        _stored("ended", at=500),
        _stored("idle", at=100),
        _stored("old", at=300),
        _stored("live", at=500),
    )
    for session in (ended, idle, old, live):
        await shared.records.add(session, keep_per_user=10)
    await shared.records.end([ended.key], at=510.0)
    await shared.records.touch({old.key: 600.0})

    purged = await shared.records.purge(ended_before=520.0, seen_before=200.0, created_before=400.0)

    assert purged == 3
    assert await shared.records.get(live.key) is not None
    assert await shared.records.ended_since(0.0) == []


# ------------------------------------------------------------------ start claims
async def test_one_holder_claims_a_grant_until_it_releases(shared: Shared) -> None:
    claims = shared.claims
    assert await claims.claim("alice", MAPPING, holder="a", now=10.0, until=100.0)
    assert not await claims.claim("alice", MAPPING, holder="b", now=20.0, until=110.0)
    assert await claims.claim("bob", MAPPING, holder="b", now=20.0, until=110.0)
    assert await claims.held(30.0) == {("alice", MAPPING), ("bob", MAPPING)}

    await claims.release("alice", MAPPING, holder="b")  # not b's: kept
    assert not await claims.claim("alice", MAPPING, holder="b", now=30.0, until=110.0)
    await claims.release("alice", MAPPING, holder="a")
    assert await claims.claim("alice", MAPPING, holder="b", now=30.0, until=110.0)


async def test_a_claim_its_holder_left_behind_lapses(shared: Shared) -> None:
    claims = shared.claims
    assert await claims.claim("alice", MAPPING, holder="dead", now=10.0, until=100.0)
    assert not await claims.claim("alice", MAPPING, holder="b", now=99.0, until=200.0)
    assert await claims.held(100.0) == set()
    assert await claims.claim("alice", MAPPING, holder="b", now=100.0, until=200.0)
    assert await claims.held(150.0) == {("alice", MAPPING)}


async def test_a_holder_renews_its_claim_and_only_its_own(shared: Shared) -> None:
    claims = shared.claims
    assert await claims.claim("alice", MAPPING, holder="a", now=10.0, until=25.0)
    assert await claims.renew("alice", MAPPING, holder="a", until=40.0)
    assert not await claims.renew("alice", MAPPING, holder="b", until=90.0)  # not b's
    assert await claims.held(30.0) == {("alice", MAPPING)}  # past the first lease, still held
    assert not await claims.claim("alice", MAPPING, holder="b", now=30.0, until=60.0)
    await claims.release("alice", MAPPING, holder="a")
    assert not await claims.renew("alice", MAPPING, holder="a", until=90.0)  # released: gone
    assert await claims.held(30.0) == set()


# ------------------------------------------------------------------ control of shared sessions
URL_ID = "u" * 26


async def _control_contract(controls: ControlStates) -> None:
    assert await controls.get(URL_ID) is None
    asked = ControlState(requests=("bob", "carol"))
    assert await controls.put(URL_ID, asked, version=0)
    assert await controls.get(URL_ID) == (1, asked)
    # A second first write (another replica that read nothing either) loses.
    assert not await controls.put(URL_ID, ControlState(everyone=True), version=0)
    given = ControlState(controller="bob", requests=("carol",))
    assert await controls.put(URL_ID, given, version=1)
    # A change made from the version before loses, and changes nothing.
    assert not await controls.put(URL_ID, ControlState(owner_holds=True), version=1)
    assert await controls.get(URL_ID) == (2, given)
    taken = ControlState(owner_holds=True, everyone=False)
    assert await controls.put(URL_ID, taken, version=2)
    assert await controls.get(URL_ID) == (3, taken)
    assert await controls.get("v" * 26) is None  # another session is untouched
    await controls.remove(URL_ID)
    assert await controls.get(URL_ID) is None
    await controls.remove(URL_ID)  # removing again is nothing
    assert await controls.put(URL_ID, ControlState(everyone=True), version=0)
    assert await controls.get(URL_ID) == (1, ControlState(everyone=True))


async def test_control_states_are_written_over_the_version_they_were_made_from(
    shared: Shared,
) -> None:
    await _control_contract(shared.controls)


async def test_two_engines_on_one_database_see_each_others_control(tmp_path: Path) -> None:
    # Two replicas: two engines (two connection pools) on one SQLite file.
    url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
    await migrate.upgrade(url)
    first, second = SqlDatabase(url), SqlDatabase(url)
    try:
        one = SqlControlStates(first.engine, first.location)
        other = SqlControlStates(second.engine, second.location)
        names = tuple(f"viewer{n}" for n in range(100))
        assert await one.put(URL_ID, ControlState(controller="bob", requests=names), version=0)
        assert await other.get(URL_ID) == (1, ControlState(controller="bob", requests=names))
        assert await other.put(URL_ID, ControlState(everyone=True), version=1)
        assert not await one.put(URL_ID, ControlState(controller="eve"), version=1)
        assert await one.get(URL_ID) == (2, ControlState(everyone=True))
    finally:
        await first.close()
        await second.close()


# ------------------------------------------------------------------ leader election
@pytest.fixture(params=["memory", "postgresql"])
async def elections(request: pytest.FixtureRequest) -> AsyncIterator[list[LeaderElection]]:
    """Three candidates for the same lead (PostgreSQL: three engines, as three processes)."""
    if request.param == "memory":
        state = InMemorySharedState()
        yield [InMemoryLeaderElection(state) for _ in range(3)]
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database(f"lead_{uuid.uuid4().hex[:12]}")
    databases = [SqlDatabase(url) for _ in range(3)]
    candidates = [PostgresLeaderElection(db.engine, "the realm") for db in databases]
    try:
        yield list(candidates)
    finally:
        for candidate in candidates:
            await candidate.resign()
        for database in databases:
            await database.close()


async def _kill(candidate: LeaderElection) -> None:
    """What the process's death does: its connection goes, whatever it was doing."""
    if isinstance(candidate, InMemoryLeaderElection):
        candidate.die()
        return
    assert isinstance(candidate, PostgresLeaderElection)
    connection = candidate._connection
    assert connection is not None
    pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
    other = candidate._engine
    async with other.connect() as killer:
        await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_one_candidate_leads_and_keeps_the_lead(elections: list[LeaderElection]) -> None:
    first, second, third = elections
    assert await first.try_lead()
    assert not await second.try_lead()
    assert not await third.try_lead()
    assert await first.try_lead()
    assert not await second.try_lead()


async def test_a_resigning_leader_hands_over_at_once(elections: list[LeaderElection]) -> None:
    first, second, _third = elections
    assert await first.try_lead()
    await first.resign()
    assert await second.try_lead()
    assert not await first.try_lead()


async def test_a_dead_leaders_lead_is_taken_over(elections: list[LeaderElection]) -> None:
    first, second, third = elections
    assert await first.try_lead()
    assert not await second.try_lead()

    await _kill(first)

    # The dead holder finds out at its next check; exactly one other takes the lead.
    assert not await first.try_lead()
    winners = [await second.try_lead(), await third.try_lead()]
    assert winners == [True, False]


async def test_an_unreachable_database_means_no_lead(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database(f"lead_{uuid.uuid4().hex[:12]}")
    gone = SqlDatabase(url.replace(f":{postgres_cluster.port}/", ":1/"))
    try:
        assert not await PostgresLeaderElection(gone.engine, "x", timeout=2.0).try_lead()
    finally:
        await gone.close()
    broken = SqlLoginSessionRecords(gone.engine, gone.location)
    with pytest.raises(Unavailable):
        await broken.get("k" * 64)
