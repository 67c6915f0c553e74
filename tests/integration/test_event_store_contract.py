"""The audit trail's store contract, asserted alike on the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.domain.audit import AuditAction, EventQuery, NewEvent
from remoteappmanager.ports.audit import EventStore
from tests.support.services import PostgresCluster

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"events_{uuid.uuid4().hex[:12]}")
    await migrate.upgrade(url)
    database = SqlDatabase(url)
    try:
        yield database.events()
    finally:
        await database.close()


def _event(minutes: int, actor: str, action: AuditAction, target: str = "t") -> NewEvent:
    return NewEvent.of(T0 + timedelta(minutes=minutes), actor, action, target, {"n": minutes})


async def _seed(store: EventStore) -> None:
    await store.append(
        [
            _event(0, "alice", AuditAction.LOGIN),
            _event(1, "alice", AuditAction.START, "u1"),
            _event(2, "admin", AuditAction.GRANT, "m1"),
            _event(3, "bob", AuditAction.START, "u2"),
        ]
    )
    # Same time as the last: the later id comes first.
    await store.append([_event(3, "bob", AuditAction.STOP, "u2")])


async def test_events_come_back_newest_first_with_every_field(store: EventStore) -> None:
    await _seed(store)

    page = await store.query(EventQuery())

    assert page.total == 5
    assert [(e.actor, e.action) for e in page.events] == [
        ("bob", AuditAction.STOP),
        ("bob", AuditAction.START),
        ("admin", AuditAction.GRANT),
        ("alice", AuditAction.START),
        ("alice", AuditAction.LOGIN),
    ]
    newest = page.events[0]
    assert newest.time == T0 + timedelta(minutes=3)
    assert newest.time.tzinfo is not None
    assert newest.target == "u2"
    assert newest.detail == {"n": 3}
    ids = [e.id for e in page.events]
    assert ids == sorted(ids, reverse=True)


async def test_filters_combine_and_paging_keeps_the_total(store: EventStore) -> None:
    await _seed(store)

    by_alice = await store.query(EventQuery(actor="alice"))
    starts = await store.query(EventQuery(action=AuditAction.START))
    window = await store.query(
        EventQuery(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    )
    page = await store.query(EventQuery(limit=2, offset=1))
    nothing = await store.query(EventQuery(actor="alice", action=AuditAction.GRANT))

    assert [e.target for e in by_alice.events] == ["u1", "t"]
    assert by_alice.total == 2
    assert [e.target for e in starts.events] == ["u2", "u1"]
    # since is inclusive, until exclusive.
    assert [e.action for e in window.events] == [AuditAction.GRANT, AuditAction.START]
    assert page.total == 5
    assert [e.action for e in page.events] == [AuditAction.START, AuditAction.GRANT]
    assert nothing.total == 0
    assert nothing.events == ()


async def test_counting_stops_past_the_page_and_then_says_at_least(store: EventStore) -> None:
    # Nine events, newest "n8" first; counting goes at most two events past the page.
    await store.append([_event(n, "alice", AuditAction.START, f"n{n}") for n in range(9)])

    def query(offset: int, since: datetime | None = None) -> EventQuery:
        return EventQuery(limit=3, offset=offset, count_ahead=2, since=since)

    first = await store.query(query(0))
    middle = await store.query(query(3))
    last = await store.query(query(6))
    past_the_end = await store.query(query(12))
    since = await store.query(query(0, since=T0 + timedelta(minutes=4)))
    few = await store.query(query(0, since=T0 + timedelta(minutes=5)))

    # 3 on the page + 2 ahead = 5 counted exactly; a sixth match makes it "at least 6".
    assert (first.total, first.total_exact) == (6, False)
    assert [e.target for e in first.events] == ["n8", "n7", "n6"]
    # The second page's bound is 3 + 3 + 2 = 8: the ninth is past it.
    assert (middle.total, middle.total_exact) == (9, False)
    assert [e.target for e in middle.events] == ["n5", "n4", "n3"]
    assert (last.total, last.total_exact) == (9, True)
    assert [e.target for e in last.events] == ["n2", "n1", "n0"]
    assert (past_the_end.total, past_the_end.total_exact, past_the_end.events) == (9, True, ())
    # Five match since minute 4: exactly the bound, so exact.
    assert (since.total, since.total_exact) == (5, True)
    assert (few.total, few.total_exact) == (4, True)


async def test_since_and_until_compare_instants_whatever_the_zone(store: EventStore) -> None:
    await _seed(store)
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))

    page = await store.query(EventQuery(since=plus_two + timedelta(minutes=2)))

    assert page.total == 3


async def test_prune_deletes_the_oldest_in_bounded_slices(store: EventStore) -> None:
    await _seed(store)
    before = T0 + timedelta(minutes=3)

    first = await store.prune(before, 2)
    second = await store.prune(before, 2)
    third = await store.prune(before, 2)

    assert (first, second, third) == (2, 1, 0)
    left = await store.query(EventQuery())
    assert [e.action for e in left.events] == [AuditAction.STOP, AuditAction.START]


async def test_an_empty_batch_writes_nothing(store: EventStore) -> None:
    await store.append([])

    assert (await store.query(EventQuery())).total == 0


async def test_on_sqlite_a_batch_never_breaks_a_unit_of_work_that_read_first(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}"
    await migrate.upgrade(url)
    database = SqlDatabase(url)
    events = database.events()
    try:
        async with database.unit_of_work() as work:
            await work.users.list()  # a read first: the transaction holds a snapshot
            batch = asyncio.ensure_future(events.append([_event(0, "alice", AuditAction.LOGIN)]))
            await asyncio.sleep(0.05)
            assert not batch.done()  # it waits for the unit of work
            await work.users.add("alice")
            await work.commit()
        await asyncio.wait_for(batch, 5)

        assert (await events.query(EventQuery())).total == 1
        async with database.unit_of_work() as work:
            assert [user.name for user in await work.users.list()] == ["alice"]
    finally:
        await database.close()
