"""``{svc}health`` (dependency states, 200/503) and ``{svc}metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.web import health
from remoteappmanager.web.metrics import Metrics, watch_loop_lag
from tests.support.webapp import API, PREFIX, World, make_app


async def _ok() -> None:
    return None


async def _database_down() -> None:
    raise Unavailable("the database cannot be reached")


async def _crashes() -> None:
    raise RuntimeError("password=hunter2 in postgresql://db/")


async def _hangs() -> None:
    await asyncio.sleep(60)


async def test_health_is_200_when_every_dependency_answers(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(World(), health_checks={"database": _ok}))
    response = await client.get(PREFIX + "health")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "down": [],
        "checks": {
            "database": {"ok": True},
            "docker": {"ok": True},
            "hub": {"ok": True},
            "proxy": {"ok": True},
        },
        "leader": True,
    }
    assert response.headers["Cache-Control"] == "no-store"


async def test_health_is_503_and_names_the_failing_dependency(aiohttp_client: Any) -> None:
    world = World()
    world.hub.add_user("root", admin=True)
    admin = {"Authorization": f"token {world.hub.issue_token('root')}"}
    client = await aiohttp_client(
        make_app(world, health_checks={"database": _database_down, "docker": _ok})
    )
    response = await client.get(PREFIX + "health", headers=admin)
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["database"]
    assert body["checks"]["database"] == {"ok": False, "error": "the database cannot be reached"}
    assert body["checks"]["docker"] == {"ok": True}
    # A hub that is down cannot say who is an admin: the answer is the public one.
    world.hub.available = False
    world.clock.advance(health.HEALTH_TTL)
    response = await client.get(PREFIX + "health", headers=admin)
    assert response.status == 503
    body = await response.json()
    assert body["down"] == ["database", "hub"]
    assert body["checks"]["hub"] == {"ok": False}
    assert body["checks"]["database"] == {"ok": False}


async def test_health_hides_unexpected_details_and_bounds_slow_checks(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.05)
    world = World()
    world.hub.add_user("root", admin=True)
    admin = {"Authorization": f"token {world.hub.issue_token('root')}"}
    client = await aiohttp_client(
        make_app(world, health_checks={"proxy": _crashes, "docker": _hangs})
    )
    response = await client.get(PREFIX + "health", headers=admin)
    assert response.status == 503
    body = await response.json()
    assert body["checks"]["proxy"] == {"ok": False, "error": "RuntimeError"}
    assert body["checks"]["docker"]["ok"] is False
    assert "no answer" in body["checks"]["docker"]["error"]
    assert "hunter2" not in await response.text()


async def test_anonymous_callers_see_states_but_no_reasons(aiohttp_client: Any) -> None:
    world = World()
    world.hub.add_user("alice")
    client = await aiohttp_client(
        make_app(world, health_checks={"database": _database_down, "proxy": _crashes})
    )
    user = {"Authorization": f"token {world.hub.issue_token('alice')}"}
    for headers in ({}, user, {"Authorization": "token forged"}):
        response = await client.get(PREFIX + "health", headers=headers)
        assert response.status == 503
        assert await response.json() == {
            "status": "unavailable",
            "down": ["database", "proxy"],
            "checks": {
                "database": {"ok": False},
                "docker": {"ok": True},
                "hub": {"ok": True},
                "proxy": {"ok": False},
            },
            "leader": True,
        }


async def test_health_probes_once_per_ttl_however_many_ask(aiohttp_client: Any) -> None:
    calls = 0
    release = asyncio.Event()

    async def slow_database() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    world = World()
    client = await aiohttp_client(make_app(world, health_checks={"database": slow_database}))
    asking = [asyncio.ensure_future(client.get(PREFIX + "health")) for _ in range(30)]
    await asyncio.sleep(0.1)
    release.set()
    answers = await asyncio.gather(*asking)
    assert {answer.status for answer in answers} == {200}
    assert calls == 1
    world.clock.advance(health.HEALTH_TTL - 0.1)
    assert (await client.get(PREFIX + "health")).status == 200
    assert calls == 1
    world.clock.advance(0.2)
    assert (await client.get(PREFIX + "health")).status == 200
    assert calls == 2


async def test_metrics_count_requests_by_route_and_status(aiohttp_client: Any) -> None:
    world = World()
    world.hub.add_user("alice")
    client = await aiohttp_client(make_app(world))
    token = world.hub.issue_token("alice")
    for _ in range(3):
        await client.get(API + "v1/user")
    await client.get(API + "v1/user", headers={"Authorization": f"token {token}"})
    await client.get(PREFIX + "no/such/page/12345")

    response = await client.get(PREFIX + "metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["remoteapp_http_requests"].samples
        if s.name == "remoteapp_http_requests_total"
    }
    assert counts[(API + "v1/user", "GET", "401")] == 3
    assert counts[(API + "v1/user", "GET", "200")] == 1
    # Unmatched paths share one label value: no series per scanned URL.
    assert counts[("unmatched", "GET", "404")] == 1
    assert not any("12345" in route for route, _, _ in counts)

    latency = families["remoteapp_http_request_duration_seconds"]
    observed = [
        s.value
        for s in latency.samples
        if s.name.endswith("_count") and s.labels["route"] == API + "v1/user"
    ]
    assert sum(observed) == 4


async def test_each_application_has_its_own_metrics(aiohttp_client: Any) -> None:
    first = await aiohttp_client(make_app(World()))
    second = await aiohttp_client(make_app(World()))
    await first.get(API + "v1/user")
    text = await (await second.get(PREFIX + "metrics")).text()
    assert 'route="/services/remoteapp/api/v1/user"' not in text


def test_unknown_methods_share_one_series_and_repeats_add_up() -> None:
    metrics = Metrics()
    for n in range(50):
        metrics.observe("/r", f"X-{n}", 405, 0.01)
    metrics.observe("/r", "GET", 200, 0.01)
    metrics.observe("/r", "GET", 200, 0.02)
    counts = {
        (s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        if family.name == "remoteapp_http_requests"
        for s in family.samples
        if s.name == "remoteapp_http_requests_total"
    }
    assert counts == {("other", "405"): 50, ("GET", "200"): 2}


async def test_a_callback_that_holds_the_loop_shows_as_loop_lag() -> None:
    metrics = Metrics()
    probe = asyncio.create_task(watch_loop_lag(metrics, interval=0.005))
    await asyncio.sleep(0.05)
    # A synchronous call on the loop: nothing else can run meanwhile.
    time.sleep(0.12)  # noqa: ASYNC251 - the stall being measured
    await asyncio.sleep(0.05)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe

    worst = metrics.registry.get_sample_value("remoteapp_event_loop_lag_max_seconds")
    assert worst is not None
    assert 0.1 <= worst < 5.0
    on_time = metrics.registry.get_sample_value(
        "remoteapp_event_loop_lag_seconds_bucket", {"le": "0.1"}
    )
    total = metrics.registry.get_sample_value("remoteapp_event_loop_lag_seconds_count")
    assert total is not None
    assert on_time is not None
    assert total - on_time >= 1, "the stalled timer is counted as more than 100 ms late"
    assert on_time >= 5, "the other timers are counted too"


async def test_the_running_service_exports_its_loop_lag(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(World()))
    await asyncio.sleep(0.1)

    response = await client.get(PREFIX + "metrics")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    count = next(
        s.value
        for s in families["remoteapp_event_loop_lag_seconds"].samples
        if s.name.endswith("_count")
    )
    assert count >= 3, "the 10 ms probe ran while the service did"
    assert "remoteapp_event_loop_lag_max_seconds" in families
