"""Culling on the real stack: the Docker engine, a real proxy, the gate, SQLite.

Sessions run in gated mode, so that what a client sends through the proxy reaches the gate,
which counts it as input. The culler passes every second here. Only the hub is a stand-in
(``tests/support/fake_hub.py``). Every test has a realm of its own, force-removed
afterwards; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remoteappmanager import bootstrap
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.fake_hub import FakeHub, running_fake_hub
from tests.support.services import Proxy, ServiceMissing, free_port, skip_or_fail
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm

pytestmark = [pytest.mark.docker, pytest.mark.proxy, pytest.mark.timeout(300)]

PREFIX = "/services/remoteapp/"
CONTAINERS = PREFIX + "api/v1/containers/"


@pytest.fixture(scope="module")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


async def _grants(database_url: str, policies: dict[str, Policy]) -> dict[str, str]:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        await catalogue.create_user(uow, "alice")
        await catalogue.create_application(uow, WEB_IMAGE)
        return {
            name: (await catalogue.grant_access(uow, WEB_IMAGE, "alice", policy)).mapping_id
            for name, policy in policies.items()
        }


@contextlib.asynccontextmanager
async def serving(
    database_url: str, realm: str, proxy: Proxy, hub: FakeHub, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    """One service process (in this loop) until the block ends."""
    port = free_port()
    settings = Settings(
        database_url=database_url,
        configproxy_api_url=proxy.api_url,
        configproxy_auth_token=proxy.token,
        realm=realm,
        container_access="gated",
        gate_url=f"http://127.0.0.1:{free_port()}",
        workspace_root=tmp_path / "workspaces",
        network_timeout=20,
        reconcile_interval=1,
        cull_interval=1,
        activity_flush_interval=1,
        jupyterhub_api_url=hub.api_url,
        jupyterhub_api_token=secrets.token_hex(16),
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{port}",
    )
    server = TestServer(create_app(bootstrap.build(settings)), port=port)
    async with TestClient(server) as client:
        yield client


async def _start(client: TestClient[Any, Any], headers: dict[str, str], mapping_id: str) -> Any:
    async with client.post(CONTAINERS, json={"mapping_id": mapping_id}, headers=headers) as sent:
        assert sent.status == 201, await sent.text()
        location = sent.headers["Location"]
    async with client.get(location, headers=headers) as response:
        return await response.json()


async def _container(client: TestClient[Any, Any], headers: dict[str, str], url_id: str) -> Any:
    async with client.get(CONTAINERS + url_id + "/", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_idle_sessions_go_busy_ones_stay_and_lifetime_ends_them_all(
    session_images: None, proxy: Proxy, tmp_path: Path
) -> None:
    realm = f"cull-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    grants = await _grants(
        database_url,
        {
            "idle": Policy(idle_timeout_s=20),
            "busy": Policy(idle_timeout_s=21),
            "lifetime": Policy(idle_timeout_s=20, max_lifetime_s=30),
        },
    )
    try:
        async with (
            running_fake_hub() as hub,
            serving(database_url, realm, proxy, hub, tmp_path) as client,
            aiohttp.ClientSession() as browser,
        ):
            headers = {"Authorization": f"token {hub.issue_token('alice')}"}
            started = time.monotonic()
            sessions = {name: await _start(client, headers, grants[name]) for name in grants}
            assert sessions["idle"]["expires_at"] is not None
            gone: dict[str, float] = {}

            async def touch(name: str) -> None:
                url = proxy.public_url + sessions[name]["urlpath"] + "/"
                async with browser.get(url, headers=headers) as served:
                    # The lifetime session may have ended since the last look.
                    elapsed = time.monotonic() - started
                    assert served.status == 200 or (name == "lifetime" and elapsed >= 30), name

            while time.monotonic() - started < 60:
                for name in ("busy", "lifetime"):
                    if name not in gone:
                        await touch(name)
                for name, session in sessions.items():
                    state = await _container(client, headers, session["url_id"])
                    if name not in gone and state["state"] == "stopped":
                        gone[name] = time.monotonic() - started
                        assert state["stop_reason"] == (
                            "lifetime" if name == "lifetime" else "idle"
                        ), state
                await asyncio.sleep(5)

            assert set(gone) == {"idle", "lifetime"}, gone
            # Within a culler pass (and this loop's 5 s) of their deadlines.
            assert gone["idle"] >= 15, gone
            assert gone["idle"] <= 35, gone
            assert gone["lifetime"] >= 25, gone
            assert gone["lifetime"] <= 45, gone
            busy = await _container(client, headers, sessions["busy"]["url_id"])
            assert busy["state"] == "running"
            assert busy["last_input_at"] is not None
            async with client.get(PREFIX + "metrics") as response:
                metrics = await response.text()
            assert 'remoteapp_session_stops_total{reason="idle"} 1.0' in metrics
            assert 'remoteapp_session_stops_total{reason="lifetime"} 1.0' in metrics
    finally:
        await remove_realm(realm)


async def test_a_restarted_service_culls_an_overdue_session_with_its_reason(
    session_images: None, proxy: Proxy, tmp_path: Path
) -> None:
    realm = f"cull-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    grants = await _grants(
        database_url,
        {"idle": Policy(idle_timeout_s=15), "kept": Policy(idle_timeout_s=600)},
    )
    try:
        async with running_fake_hub() as hub:
            headers = {"Authorization": f"token {hub.issue_token('alice')}"}
            async with serving(database_url, realm, proxy, hub, tmp_path) as client:
                idle = await _start(client, headers, grants["idle"])
                kept = await _start(client, headers, grants["kept"])
            # The service is down: nobody culls. Time passes.
            await asyncio.sleep(16)
            async with serving(database_url, realm, proxy, hub, tmp_path) as client:
                # The session nobody used is overdue: the first pass stops it.
                for _ in range(50):
                    state = await _container(client, headers, idle["url_id"])
                    if state["state"] == "stopped":
                        break
                    await asyncio.sleep(0.2)
                assert (state["state"], state["stop_reason"]) == ("stopped", "idle")
                # Keep working: input through the API counts, before the deadline.
                async with client.post(
                    CONTAINERS + kept["url_id"] + "/activity", headers=headers
                ) as response:
                    assert response.status == 200
                    body = await response.json()
                assert body["state"] == "running"
                assert body["last_input_at"] is not None
                await asyncio.sleep(3)
                assert (await _container(client, headers, kept["url_id"]))["state"] == "running"
    finally:
        await remove_realm(realm)
