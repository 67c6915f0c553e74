"""The reconciler over in-memory fakes: routes and containers brought back in line."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.domain.containers import Route
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.reconcile import Reconciler
from tests.support.session_world import GATE_URL, World, make_grant, make_world, wait_until

FOREIGN_PATH = "/user/alice/containers/jupyterhubsomething0000000"


@pytest.fixture
def world() -> World:
    return make_world()


def count_calls(world: World) -> Counter[str]:
    """Count every port call the reconciler makes from now on."""
    calls: Counter[str] = Counter()
    for name, target in (("runtime", world.runtime), ("routes", world.routes)):
        for method in ("list", "add", "remove", "create", "start", "inspect", "inspect_image"):
            original = getattr(target, method, None)
            if original is None:
                continue

            def counted(*args: Any, _original: Any = original, _key: str = f"{name}.{method}"):
                calls[_key] += 1
                return _original(*args)

            setattr(target, method, counted)
    return calls


async def test_nothing_to_do_costs_one_list_call_each(world: World) -> None:
    for user in ("alice", "bob", "carol"):
        await world.sessions.start(make_grant(user))
    calls = count_calls(world)

    report = await world.reconciler.reconcile_once()

    assert not report.changed
    assert not report.errors
    assert calls == Counter({"runtime.list": 1, "routes.list": 1})


async def test_container_removed_behind_our_back_loses_its_route(world: World) -> None:
    gone = await world.sessions.start(make_grant("alice"))
    kept = await world.sessions.start(make_grant("bob"))
    assert gone.container_id is not None
    world.runtime.kill(gone.container_id, remove=True)

    report = await world.reconciler.reconcile_once()

    assert report.routes_removed == [gone.urlpath]
    assert set(await world.routes.list()) == {kept.urlpath}
    assert await world.sessions.list_for_user("alice") == []


async def test_exited_container_is_removed_with_its_route(world: World) -> None:
    session = await world.sessions.start(make_grant())
    assert session.container_id is not None
    world.runtime.kill(session.container_id)

    report = await world.reconciler.reconcile_once()

    assert report.containers_removed == [session.container_id]
    assert report.routes_removed == [session.urlpath]
    assert not world.runtime.container_ids
    assert not await world.routes.list()


async def test_routes_lost_by_the_proxy_come_back(world: World) -> None:
    sessions = [await world.sessions.start(make_grant(f"user{i}")) for i in range(10)]
    before = dict(await world.routes.list())
    world.routes.lose_all()

    report = await world.reconciler.reconcile_once()

    assert sorted(report.routes_added) == sorted(s.urlpath for s in sessions)
    assert {p: r.target for p, r in (await world.routes.list()).items()} == {
        p: r.target for p, r in before.items()
    }
    assert not (await world.reconciler.reconcile_once()).changed


async def test_gated_routes_come_back_to_the_gate() -> None:
    world = make_world(access=AccessMode.GATED)
    session = await world.sessions.start(make_grant())
    world.routes.lose_all()
    await world.reconciler.reconcile_once()
    assert (await world.routes.list())[session.urlpath].target == GATE_URL


async def test_a_route_to_the_wrong_port_is_corrected(world: World) -> None:
    session = await world.sessions.start(make_grant())
    route = (await world.routes.list())[session.urlpath]
    await world.routes.add(replace(route, target="http://127.0.0.1:1"))

    report = await world.reconciler.reconcile_once()

    assert report.routes_added == [session.urlpath]
    assert (await world.routes.list())[session.urlpath].target == route.target


async def test_orphan_routes_of_ours_go_and_others_routes_stay(world: World) -> None:
    orphan = Route(
        path="/user/alice/containers/orphan000000000000000000000",
        target="http://127.0.0.1:9",
        user="alice",
        url_id="orphan000000000000000000000",
        extra={"realm": world.sessions.realm},
    )
    other_realm = replace(
        orphan,
        path="/user/bob/containers/otherrealm00000000000000000",
        url_id="otherrealm00000000000000000",
        extra={"realm": "other-realm"},
    )
    await world.routes.add(orphan)
    await world.routes.add(other_realm)
    world.routes.add_foreign(FOREIGN_PATH, "http://127.0.0.1:8888")

    report = await world.reconciler.reconcile_once()

    assert report.routes_removed == [orphan.path]
    assert world.routes.all_paths == {other_realm.path, FOREIGN_PATH}


async def test_other_realms_containers_are_never_touched(world: World) -> None:
    other = world.sessions_for(realm="other-realm")
    running = await other.start(make_grant("alice"))
    exited = await other.start(make_grant("bob"))
    assert exited.container_id is not None
    world.runtime.kill(exited.container_id)
    world.routes.lose_all()

    report = await world.reconciler.reconcile_once()

    assert not report.changed
    assert world.runtime.container_ids == {running.container_id, exited.container_id}
    assert not world.routes.all_paths


async def test_a_start_in_progress_is_left_alone(world: World) -> None:
    grant = make_grant()
    world.probe.hold = asyncio.Event()
    start = asyncio.create_task(world.sessions.start(grant))
    await wait_until(lambda: world.probe.probed)

    # The container runs and its route is being added while it gets ready: that is the
    # start's business, neither an orphan route nor a container without one.
    await wait_until(lambda: world.routes.all_paths)
    routed = set(world.routes.all_paths)
    report = await world.reconciler.reconcile_once()
    assert not report.changed
    assert report.skipped_busy == 1
    assert set(world.routes.all_paths) == routed

    world.probe.hold.set()
    session = await start
    assert set(await world.routes.list()) == {session.urlpath}
    assert not (await world.reconciler.reconcile_once()).changed


async def test_a_start_waits_for_a_repair_instead_of_failing(world: World) -> None:
    grant = make_grant()
    session = await world.sessions.start(grant)
    world.routes.lose_all()
    release = asyncio.Event()
    add = world.routes.add

    async def slow_add(route: Route) -> None:
        await release.wait()
        await add(route)

    world.routes.add = slow_add  # type: ignore[method-assign]
    repair = asyncio.create_task(world.reconciler.reconcile_once())
    await wait_until(lambda: world.sessions.busy(grant.user.name, grant.mapping_id))
    restart = asyncio.create_task(world.sessions.start(grant))
    await asyncio.sleep(0.01)
    assert not restart.done()
    release.set()
    await repair
    replacement = await restart
    assert replacement.url_id != session.url_id
    assert set(await world.routes.list()) == {replacement.urlpath}


async def test_unreachable_engine_or_proxy_fails_the_pass(world: World) -> None:
    await world.sessions.start(make_grant())
    world.routes.available = False
    with pytest.raises(Unavailable):
        await world.reconciler.reconcile_once()
    world.routes.available = True
    world.runtime.available = False
    with pytest.raises(Unavailable):
        await world.reconciler.reconcile_once()


async def test_run_forever_keeps_going_through_failures_and_can_be_cancelled(
    world: World,
) -> None:
    session = await world.sessions.start(make_grant())
    world.routes.lose_all()
    world.routes.available = False
    task = asyncio.create_task(world.reconciler.run_forever(0.01))
    await asyncio.sleep(0.05)
    assert not task.done()

    world.routes.available = True
    for _ in range(200):
        if await world.routes.list():
            break
        await asyncio.sleep(0.01)
    assert set(await world.routes.list()) == {session.urlpath}

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_routes_are_repaired_concurrently(world: World) -> None:
    for i in range(40):
        await world.sessions.start(make_grant(f"user{i}"))
    world.routes.lose_all()
    in_flight = peak = 0
    add = world.routes.add

    async def tracked_add(route: Route) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        await add(route)
        in_flight -= 1

    world.routes.add = tracked_add  # type: ignore[method-assign]
    reconciler = Reconciler(world.runtime, world.routes, world.sessions, concurrency=8)
    report = await reconciler.reconcile_once()
    assert len(report.routes_added) == 40
    assert peak == 8


async def test_an_exited_container_removed_is_recorded_as_a_stop_by_the_system(
    world: World,
) -> None:
    store = InMemoryEventStore()
    world.sessions.audit = AuditTrail(store)
    session = await world.sessions.start(make_grant())
    assert session.container_id is not None
    world.runtime.kill(session.container_id)

    await world.reconciler.reconcile_once()
    await world.sessions.audit.flush()  # type: ignore[attr-defined]

    assert [(e.actor, e.action.value, e.target) for e in store.events] == [
        (session.user, "start", session.url_id),
        ("system", "stop", session.url_id),
    ]
    # The engine says how it ended: it died (not killed for its memory).
    assert store.events[1].detail["reason"] == "died"
    assert store.events[1].detail["owner"] == session.user
