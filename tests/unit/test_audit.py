"""The audit trail's service: batching that never fails the caller, secrets kept out,
what the catalogue use cases record, retention in slices."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.domain.audit import AuditAction, EventQuery, NewEvent, safe_detail
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import Policy, Volume
from remoteappmanager.services import catalogue
from remoteappmanager.services.audit import Attribution, AuditTrail
from tests.support.webapp import World, make_settings

LICENCE = "LICENCE-KEY-7f3a9c-do-not-leak"


def _trail(store: InMemoryEventStore, **kwargs: object) -> AuditTrail:
    return AuditTrail(store, **kwargs)  # type: ignore[arg-type]


async def test_recording_writes_nothing_until_a_flush_then_one_batch() -> None:
    store = InMemoryEventStore()
    trail = _trail(store)

    trail.record("alice", AuditAction.LOGIN, "alice")
    trail.record("alice", "start", "u1", {"image": "app:1"})

    assert store.events == []
    assert await trail.flush() == 2
    assert store.appends == 1
    assert [(e.actor, e.action, e.target) for e in store.events] == [
        ("alice", AuditAction.LOGIN, "alice"),
        ("alice", AuditAction.START, "u1"),
    ]


async def test_a_database_failure_never_reaches_the_caller_and_is_retried() -> None:
    store = InMemoryEventStore()
    trail = _trail(store)
    store.failing = True

    trail.record("alice", AuditAction.LOGIN, "alice")
    assert await trail.flush() == 0
    assert trail.pending == 1

    store.failing = False
    assert await trail.flush() == 1
    assert [e.action for e in store.events] == [AuditAction.LOGIN]


async def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    store = InMemoryEventStore()
    trail = _trail(store, max_pending=3)

    for number in range(5):
        trail.record("alice", AuditAction.LOGIN, str(number))

    assert trail.pending == 3
    assert trail.dropped == 2
    await trail.flush()
    assert [e.target for e in store.events] == ["0", "1", "2"]


async def test_the_writer_flushes_periodically_and_once_more_when_cancelled() -> None:
    store = InMemoryEventStore()
    trail = _trail(store, flush_interval=0.01)
    writer = asyncio.ensure_future(trail.run_forever())

    trail.record("alice", AuditAction.LOGIN, "alice")
    for _ in range(200):
        if store.events:
            break
        await asyncio.sleep(0.01)
    assert len(store.events) == 1

    trail.record("bob", AuditAction.LOGIN, "bob")
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert [e.actor for e in store.events] == ["alice", "bob"]


def test_an_unknown_action_is_refused_at_once() -> None:
    trail = _trail(InMemoryEventStore())

    with pytest.raises(InvalidRequest):
        trail.record("alice", "delete_everything", "x")


def test_details_keep_plain_values_and_never_a_secret() -> None:
    kept = safe_detail(
        {
            "image": "app:1",
            "reason": "idle",
            "app_license": LICENCE,
            "licence": LICENCE,
            "token": "abc",
            "api_token": "abc",
            "env": {"SECRET": "x"},
            "environment": "X=1",
            "password": "p",
            "nested": {"a": 1},
            "count": 3,
        }
    )

    assert kept == {"image": "app:1", "reason": "idle", "count": 3}


async def test_a_grant_with_a_licence_records_none_of_it() -> None:
    world = World()
    built = world.build(make_settings())
    admin, trail, store = built.administration, built.audit, world.events
    user = await admin.create_user("alice", actor="root")
    await admin.create_application("app:1", actor="root")
    policy = Policy(app_license=LICENCE, allow_home=True)

    grant = await admin.grant(user.id, "app:1", policy, actor="root")
    await admin.revoke(grant.mapping_id, actor="root")
    await trail.flush()

    assert [(e.actor, e.action, e.target) for e in store.events] == [
        ("root", AuditAction.USER_CREATE, "alice"),
        ("root", AuditAction.APP_CREATE, "app:1"),
        ("root", AuditAction.GRANT, grant.mapping_id),
        ("root", AuditAction.REVOKE, grant.mapping_id),
    ]
    assert store.events[2].detail["user"] == "alice"
    assert store.events[2].detail["image"] == "app:1"
    assert store.events[2].detail["allow_home"] is True
    for event in store.events:
        assert LICENCE not in repr(event)
        assert "LICENCE-KEY" not in str(dict(event.detail).values())


async def test_the_catalogue_records_removals_and_revocations_for_its_actor() -> None:
    database = InMemoryDatabase()
    store = InMemoryEventStore()
    trail = _trail(store)
    by = Attribution(trail, "operator")
    await catalogue.create_user(database.unit_of_work, "bob", by=by)
    await catalogue.create_application(database.unit_of_work, "app:2", by=by)
    policy = Policy(volume=None)
    await catalogue.grant_access(database.unit_of_work, "app:2", "bob", policy, by=by)
    revoked = await catalogue.revoke_access(
        database.unit_of_work, "app:2", "bob", catalogue.ALL_POLICIES, by=by
    )
    await catalogue.remove_application(database.unit_of_work, "app:2", by=by)
    await catalogue.remove_user(database.unit_of_work, "bob", by=by)
    await trail.flush()

    assert revoked == 1
    assert [e.action for e in store.events] == [
        AuditAction.USER_CREATE,
        AuditAction.APP_CREATE,
        AuditAction.GRANT,
        AuditAction.REVOKE,
        AuditAction.APP_DELETE,
        AuditAction.USER_DELETE,
    ]
    assert {e.actor for e in store.events} == {"operator"}


async def test_a_failed_change_records_nothing() -> None:
    database = InMemoryDatabase()
    store = InMemoryEventStore()
    trail = _trail(store)
    by = Attribution(trail, "operator")
    await catalogue.create_user(database.unit_of_work, "bob", by=by)

    with pytest.raises(Exception, match="exists"):
        await catalogue.create_user(database.unit_of_work, "bob", by=by)
    with pytest.raises(Exception, match="volume"):
        await catalogue.grant_access(
            database.unit_of_work,
            "app:9",
            "bob",
            Policy(volume=Volume.parse("/srv:/data:ro")),
            by=by,
        )
    await trail.flush()

    assert [e.action for e in store.events] == [AuditAction.USER_CREATE]


async def test_retention_prunes_old_events_in_slices_and_keeps_recent_ones() -> None:
    store = InMemoryEventStore()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    trail = _trail(store, retention_days=30, clock=now.timestamp, prune_batch=2)
    await store.append(
        [NewEvent.of(now - timedelta(days=40 + n), "a", "login", str(n)) for n in range(5)]
        + [NewEvent.of(now - timedelta(days=1), "a", "login", "recent")]
    )

    removed = await trail.prune_once()

    assert removed == 5
    page = await trail.events(EventQuery())
    assert [e.target for e in page.events] == ["recent"]
