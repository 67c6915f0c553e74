"""The real JupyterHub starts `remoteappmanager` itself, as config/jupyterhub_config.py says.

The service gets a migrated SQLite database through ``REMOTEAPP_DATABASE_URL`` (passed on by
the config), talks to the real Docker engine and the hub's own proxy, and is reached only
through that proxy. Its realm is unique and force-removed afterwards.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from remoteappmanager import bootstrap
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from tests.support.hub import (
    HubPorts,
    hub_environment,
    new_browser,
    require_hub,
    running_hub,
    sign_in,
    wait_until_managed_service_healthy,
    write_hub_config,
)
from tests.support.services import ServiceMissing, skip_or_fail
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm

pytestmark = [pytest.mark.hub, pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "demo-" + secrets.token_hex(8)
PREFIX = "/services/remoteapp/"
MISSING_IMAGE = "remoteapp-test/never-built:latest"


@dataclass
class Hub:
    public_url: str
    mapping_ids: dict[str, str]

    def url(self, path: str) -> str:
        return self.public_url + path


async def _seed(database_url: str) -> dict[str, str]:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        await catalogue.create_user(uow, "alice")
        granted = {}
        for image in (WEB_IMAGE, MISSING_IMAGE):
            await catalogue.create_application(uow, image)
            grant = await catalogue.grant_access(uow, image, "alice", Policy())
            granted[image] = grant.mapping_id
    return granted


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> AsyncIterator[Hub]:
    require_hub()
    if not (Path(sys.executable).parent / "remoteappmanager").exists():
        skip_or_fail("remoteappmanager is not installed beside the hub's python")
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
    tmp = tmp_path_factory.mktemp("managed")
    realm = f"managed-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp / 'remoteappmanager.db'}"
    mapping_ids = await _seed(database_url)
    ports = HubPorts.free()
    write_hub_config(tmp)
    env = hub_environment(
        tmp,
        ports,
        PASSWORD,
        REMOTEAPP_DATABASE_URL=database_url,
        REMOTEAPP_REALM=realm,
        REMOTEAPP_WORKSPACE_ROOT=str(tmp / "workspaces"),
    )
    try:
        with running_hub(tmp, env, ports.public):
            await wait_until_managed_service_healthy(tmp, ports.public_url + PREFIX + "health")
            yield Hub(public_url=ports.public_url, mapping_ids=mapping_ids)
    finally:
        await remove_realm(realm)


async def test_health_answers_through_the_hubs_proxy(hub: Hub) -> None:
    async with new_browser() as browser, browser.get(hub.url(PREFIX + "health")) as response:
        body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ok"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {
        "database",
        "docker",
        "proxy",
        "hub",
    }


async def test_a_signed_in_user_lists_their_applications(hub: Hub) -> None:
    async with new_browser() as browser:
        landed = await sign_in(browser, hub.url(PREFIX), "alice", PASSWORD)
        assert landed.status == 200
        assert landed.url.path == PREFIX
        async with browser.get(hub.url(PREFIX + "api/v1/applications/")) as response:
            body = await response.json()
            assert response.status == 200, body
            assert response.headers["Cache-Control"] == "no-store"
    assert sorted(body["identifiers"]) == sorted(hub.mapping_ids.values())
    built = body["items"][hub.mapping_ids[WEB_IMAGE]]
    assert built["available"] is True
    assert built["image"]["ui_name"] == "Session test app"
    assert built["container"] is None
    assert body["items"][hub.mapping_ids[MISSING_IMAGE]]["available"] is False


async def test_anonymous_api_calls_are_refused(hub: Hub) -> None:
    async with (
        new_browser() as browser,
        browser.get(hub.url(PREFIX + "api/v1/applications/")) as response,
    ):
        assert response.status == 401
        assert (await response.json())["type"] == "Unauthorized"
