"""Starts per user per minute: the rate limit itself, and 429 + Retry-After from the API."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.domain.errors import TooManyRequests
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.services.rate_limit import RateLimit
from remoteappmanager.settings import SettingsError, load_settings
from tests.support.webapp import API, ApiClient, FakeClock, World, make_app

CONTAINERS = API + "v1/containers/"
IMAGE = "remoteapp-test/web:latest"
RATE = 3


# ------------------------------------------------------------------------------ the limit
def test_a_burst_of_the_rate_then_one_per_interval() -> None:
    clock = FakeClock()
    limit = RateLimit(RATE, clock=clock)
    for _ in range(RATE):
        limit.take("alice")
    with pytest.raises(TooManyRequests) as refused:
        limit.take("alice")
    assert refused.value.retry_after == 60 // RATE
    assert "3 a minute" in refused.value.message
    # A refusal spends nothing: waiting the time it names is enough.
    clock.advance(60 / RATE - 0.5)
    with pytest.raises(TooManyRequests) as refused:
        limit.take("alice")
    assert refused.value.retry_after == 1
    clock.advance(0.5)
    limit.take("alice")
    with pytest.raises(TooManyRequests):
        limit.take("alice")


def test_users_do_not_share_an_allowance() -> None:
    limit = RateLimit(1, clock=FakeClock())
    limit.take("alice")
    with pytest.raises(TooManyRequests):
        limit.take("alice")
    limit.take("bob")


@pytest.mark.parametrize("rate", [1, 7, 30, 59, 61, 1000])
def test_exactly_the_rate_fits_in_a_minute(rate: int) -> None:
    clock = FakeClock()
    limit = RateLimit(rate, clock=clock)
    for _ in range(rate):
        limit.take("u")
    with pytest.raises(TooManyRequests):
        limit.take("u")
    clock.advance(60)
    for _ in range(rate):
        limit.take("u")


def test_the_setting_defaults_to_30_and_refuses_nonsense() -> None:
    assert load_settings().start_rate_per_minute == 30
    assert load_settings(start_rate_per_minute="5").start_rate_per_minute == 5
    for bad in ("0", "-1", "many"):
        with pytest.raises(SettingsError, match="REMOTEAPP_START_RATE_PER_MINUTE"):
            load_settings(start_rate_per_minute=bad)


# ------------------------------------------------------------------------------ the API
@pytest.fixture
async def world() -> World:
    world = World()
    world.runtime.add_image(IMAGE, {"eu.simphony-project.docker.type": "webapp"})
    await catalogue.create_application(world.database.unit_of_work, IMAGE)
    for name in ("alice", "bob"):
        world.hub.add_user(name)
        await catalogue.create_user(world.database.unit_of_work, name)
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world, start_rate_per_minute=RATE))


async def _start(api: ApiClient, mapping_id: str) -> tuple[int, Any, Any]:
    return await api.call("POST", CONTAINERS, json={"mapping_id": mapping_id})


async def test_starts_beyond_the_rate_are_429_with_retry_after_and_nothing_runs(
    client: TestClient[Any, Any], world: World
) -> None:
    grant = await catalogue.grant_access(world.database.unit_of_work, IMAGE, "alice", Policy())
    alice = ApiClient(client, world.hub.issue_token("alice"))
    for _ in range(RATE):
        assert (await _start(alice, grant.mapping_id))[0] == 201
    assert world.sessions is not None
    running = {s.url_id for s in await world.sessions.list_for_user("alice")}
    status, body, headers = await _start(alice, grant.mapping_id)
    assert status == 429
    assert body["type"] == "TooManyRequests"
    assert "minute" in body["message"]
    assert headers["Retry-After"] == str(60 // RATE)
    assert headers["Cache-Control"] == "no-store"
    assert {s.url_id for s in await world.sessions.list_for_user("alice")} == running
    # Unknown grants count too: probing costs the same allowance.
    status, _, _ = await _start(alice, "0" * 32)
    assert status == 429


async def test_one_users_starts_do_not_limit_another(
    client: TestClient[Any, Any], world: World
) -> None:
    alice = ApiClient(client, world.hub.issue_token("alice"))
    for _ in range(RATE + 2):
        await _start(alice, "0" * 32)
    grant = await catalogue.grant_access(world.database.unit_of_work, IMAGE, "bob", Policy())
    bob = ApiClient(client, world.hub.issue_token("bob"))
    assert (await _start(bob, grant.mapping_id))[0] == 201


async def test_the_allowance_comes_back_with_time(
    client: TestClient[Any, Any], world: World
) -> None:
    grant = await catalogue.grant_access(world.database.unit_of_work, IMAGE, "alice", Policy())
    alice = ApiClient(client, world.hub.issue_token("alice"))
    for _ in range(RATE):
        await _start(alice, grant.mapping_id)
    assert (await _start(alice, grant.mapping_id))[0] == 429
    world.clock.advance(60 / RATE)
    assert (await _start(alice, grant.mapping_id))[0] == 201


async def test_the_openapi_document_lists_429_with_retry_after(
    client: TestClient[Any, Any],
) -> None:
    document = await (await client.get(API + "openapi.json")).json()
    answer = document["paths"][CONTAINERS]["post"]["responses"]["429"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")
    assert "Retry-After" in answer["headers"]
