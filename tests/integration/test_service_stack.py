"""The service as the composition root builds it: SQLite, the Docker engine, a real proxy.

Only the hub is a stand-in (``tests/support/fake_hub.py``); the real one is covered by
``test_hub_auth.py`` and ``test_managed_service.py``. Containers run in DIRECT mode, in a
realm of their own that is force-removed afterwards; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from remoteappmanager import bootstrap
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.fake_hub import FakeHub, running_fake_hub
from tests.support.services import Proxy, ServiceMissing, free_port, skip_or_fail
from tests.support.session_images import NS, WEB_IMAGE, ensure_session_images, remove_realm

pytestmark = [pytest.mark.docker, pytest.mark.proxy]

PREFIX = "/services/remoteapp/"
CONTAINERS = PREFIX + "api/v1/containers/"
APPLICATIONS = PREFIX + "api/v1/applications/"


@pytest.fixture(scope="session")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


@dataclass
class Service:
    client: TestClient[Any, Any]
    proxy: Proxy
    hub: FakeHub
    realm: str
    mapping_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


async def _seed(database_url: str) -> str:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        await catalogue.create_user(uow, "alice")
        await catalogue.create_application(uow, WEB_IMAGE)
        grant = await catalogue.grant_access(uow, WEB_IMAGE, "alice", Policy())
    return grant.mapping_id


@pytest.fixture
async def service(session_images: None, proxy: Proxy, tmp_path: Path) -> AsyncIterator[Service]:
    realm = f"stack-{secrets.token_hex(4)}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    mapping_id = await _seed(database_url)
    port = free_port()
    try:
        async with running_fake_hub() as hub:
            settings = Settings(
                database_url=database_url,
                configproxy_api_url=proxy.api_url,
                configproxy_auth_token=proxy.token,
                realm=realm,
                container_access="direct",
                workspace_root=tmp_path / "workspaces",
                network_timeout=20,
                reconcile_interval=0.2,
                jupyterhub_api_url=hub.api_url,
                jupyterhub_api_token=secrets.token_hex(16),
                jupyterhub_service_prefix=PREFIX,
                jupyterhub_service_url=f"http://127.0.0.1:{port}",
            )
            server = TestServer(create_app(bootstrap.build(settings)), port=port)
            async with TestClient(server) as client:
                yield Service(
                    client=client,
                    proxy=proxy,
                    hub=hub,
                    realm=realm,
                    mapping_id=mapping_id,
                    token=hub.issue_token("alice"),
                )
    finally:
        await remove_realm(realm)


async def _realm_containers(realm: str) -> list[Any]:
    async with aiodocker.Docker() as docker:
        found: list[Any] = await docker.containers.list(
            all=True, filters={"label": [f"{NS}runinfo.realm={realm}"]}
        )
        return found


def _delete_route(proxy: Proxy, path: str) -> None:
    request = urllib.request.Request(
        proxy.api_url + "/api/routes" + path,
        method="DELETE",
        headers={"Authorization": f"token {proxy.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204)


async def _until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition was not met in time")


async def test_health_reports_every_dependency(service: Service) -> None:
    async with service.client.get(PREFIX + "health") as response:
        body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "docker", "proxy", "hub"}


async def test_start_reach_through_the_proxy_and_stop(service: Service) -> None:
    client, headers = service.client, service.headers
    async with client.get(APPLICATIONS, headers=headers) as response:
        listed = await response.json()
    assert response.status == 200, listed
    item = listed["items"][service.mapping_id]
    assert item["image"]["ui_name"] == "Session test app"
    assert item["image"]["type"] == "webapp"
    assert item["container"] is None

    async with client.post(
        CONTAINERS, json={"mapping_id": service.mapping_id}, headers=headers
    ) as response:
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
    async with client.get(location, headers=headers) as response:
        container = await response.json()
    assert container["state"] == "running"
    url_id = container["url_id"]
    assert container["urlpath"] == f"/user/alice/containers/{url_id}"

    async with (
        aiohttp.ClientSession() as browser,
        browser.get(service.proxy.public_url + container["urlpath"] + "/") as served,
    ):
        assert served.status == 200
        assert await served.text() == f"hello alice from {url_id}\n"

    async with client.get(APPLICATIONS, headers=headers) as response:
        listed = await response.json()
    assert listed["items"][service.mapping_id]["container"]["url_id"] == url_id

    # A route lost behind our back comes back with the next reconciliation.
    _delete_route(service.proxy, container["urlpath"])
    assert container["urlpath"] not in service.proxy.routes()
    await _until(lambda: container["urlpath"] in service.proxy.routes())

    async with client.delete(location, headers=headers) as response:
        assert response.status == 204
    assert container["urlpath"] not in service.proxy.routes()
    assert await _realm_containers(service.realm) == []
    async with client.get(location, headers=headers) as response:
        gone = await response.json()
    assert (response.status, gone["state"], gone["stop_reason"]) == (200, "stopped", "user")


async def test_another_user_sees_nothing_of_it(service: Service) -> None:
    async with service.client.post(
        CONTAINERS, json={"mapping_id": service.mapping_id}, headers=service.headers
    ) as response:
        assert response.status == 201
        location = response.headers["Location"]
    intruder = {"Authorization": f"token {service.hub.issue_token('mallory')}"}
    for method in ("GET", "DELETE"):
        async with service.client.request(method, location, headers=intruder) as response:
            assert response.status == 404
    async with service.client.get(APPLICATIONS, headers=intruder) as response:
        assert (await response.json())["total"] == 0
    assert len(await _realm_containers(service.realm)) == 1


async def _samples(service: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with service.client.get(PREFIX + "metrics") as response:
        text = await response.text()
    assert response.status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_time_every_dependency_and_count_reconcile_actions(
    service: Service,
) -> None:
    client, headers = service.client, service.headers
    async with client.post(
        CONTAINERS, json={"mapping_id": service.mapping_id}, headers=headers
    ) as response:
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
    async with client.get(location, headers=headers) as response:
        urlpath = (await response.json())["urlpath"]
    _delete_route(service.proxy, urlpath)
    await _until(lambda: urlpath in service.proxy.routes())
    await asyncio.sleep(0.5)  # a pass after the repair has counted the running session

    samples = await _samples(service)
    calls = "remoteapp_dependency_call_duration_seconds_count"
    for dependency, operation in (
        ("docker", "create container"),
        ("docker", "start container"),
        ("docker", "list containers"),
        ("proxy", "add route"),
        ("proxy", "list routes"),
        ("hub", "GET /user"),
        ("database", "select"),
    ):
        assert (
            _value(samples, calls, dependency=dependency, operation=operation, outcome="ok") >= 1
        ), (
            dependency,
            operation,
        )
    assert _value(samples, "remoteapp_reconcile_actions_total", action="route_added") >= 1
    assert _value(samples, "remoteapp_running_sessions", image=WEB_IMAGE) == 1
    assert _value(samples, "remoteapp_reconcile_pass_duration_seconds_count") >= 1

    async with client.delete(location, headers=headers) as response:
        assert response.status == 204
    await asyncio.sleep(0.6)  # the next pass sees no running session of the image
    samples = await _samples(service)
    assert ("remoteapp_running_sessions", frozenset({("image", WEB_IMAGE)})) not in samples
