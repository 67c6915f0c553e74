"""Sessions per user: a start beyond REMOTEAPP_MAX_SESSIONS_PER_USER is 409, naming the limit."""

from __future__ import annotations

from typing import Any

import pytest

from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import SettingsError, load_settings
from tests.support.webapp import API, ApiClient, World, make_app

CONTAINERS = API + "v1/containers/"
IMAGE = "remoteapp-test/web:latest"


@pytest.fixture
async def world() -> World:
    world = World()
    world.runtime.add_image(IMAGE, {"eu.simphony-project.docker.type": "webapp"})
    await catalogue.create_application(world.database.unit_of_work, IMAGE)
    world.hub.add_user("alice")
    await catalogue.create_user(world.database.unit_of_work, "alice")
    return world


async def test_a_start_beyond_the_quota_is_409_and_names_the_limit(
    world: World, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(make_app(world, max_sessions_per_user=2))
    uow = world.database.unit_of_work
    grants = [
        await catalogue.grant_access(uow, IMAGE, "alice", policy)
        for policy in (Policy(), Policy(allow_home=True), Policy(allow_view=True))
    ]
    alice = ApiClient(client, world.hub.issue_token("alice"))
    for grant in grants[:2]:
        status, _, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": grant.mapping_id})
        assert status == 201

    status, body, _ = await alice.call(
        "POST", CONTAINERS, json={"mapping_id": grants[2].mapping_id}
    )

    assert status == 409
    assert body["type"] == "Exists"
    assert "(2)" in body["message"]
    assert "at once" in body["message"]
    status, listing, _ = await alice.call("GET", CONTAINERS)
    assert status == 200
    assert listing["total"] == 2, "the refused start created nothing"
    # Starting a running grant again replaces it: allowed at the limit.
    status, _, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": grants[0].mapping_id})
    assert status == 201


def test_the_quota_is_a_setting_with_a_default_of_five(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_sessions_per_user == 5
    monkeypatch.setenv("REMOTEAPP_MAX_SESSIONS_PER_USER", "12")
    assert load_settings().max_sessions_per_user == 12
    monkeypatch.setenv("REMOTEAPP_MAX_SESSIONS_PER_USER", "0")
    with pytest.raises(SettingsError, match="REMOTEAPP_MAX_SESSIONS_PER_USER"):
        load_settings()
