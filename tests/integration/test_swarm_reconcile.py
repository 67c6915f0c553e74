"""The reconciler on a single-node swarm and a real proxy: it reads the manager's services and
tasks, routes the running sessions to their overlay addresses, and removes the service of a
session that died (restart policy none: it stays dead)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiodocker
import pytest

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.adapters.swarm import SwarmRuntime
from remoteappmanager.domain.confinement import Confinement, ResourceLimits
from remoteappmanager.domain.containers import (
    RUNINFO_MAPPING_ID,
    RUNINFO_REALM,
    RUNINFO_URL_ID,
    RUNINFO_URLPATH,
    RUNINFO_USER,
    ContainerSpec,
)
from remoteappmanager.domain.naming import container_name, new_url_id, urlpath
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from tests.support.busybox_image import ensure_test_image
from tests.support.services import Proxy, ServiceMissing, skip_or_fail
from tests.support.swarm import remove_services_labelled

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.proxy]

NETWORK = "remoteapp-test-reconcile-overlay"


@pytest.fixture(scope="module")
def real_image(docker_engine: None) -> str:
    try:
        return ensure_test_image()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
        raise AssertionError("unreachable") from exc


@pytest.fixture
async def world(
    swarm_engine: str, real_image: str, proxy: Proxy
) -> AsyncIterator[tuple[SwarmRuntime, Sessions, Reconciler, str]]:
    realm = f"swarm-reconcile-{secrets.token_hex(4)}"
    runtime = SwarmRuntime(None, network=NETWORK, start_timeout=30)
    routes = ChpRouteTable(proxy.api_url, proxy.token)
    sessions = Sessions(
        runtime,
        routes,
        InMemoryWorkspaces(),
        InMemoryHostPaths(),
        InMemoryReadinessProbe(),
        realm=realm,
        access=AccessMode.DIRECT,
    )
    try:
        yield runtime, sessions, Reconciler(runtime, routes, sessions), realm
    finally:
        try:
            for info in await runtime.list({RUNINFO_REALM: realm}):
                await runtime.remove(info.id)
        finally:
            await routes.close()
            await runtime.close()
            remove_services_labelled(f"{RUNINFO_REALM}={realm}")


def _spec(image: str, realm: str, user: str) -> ContainerSpec:
    url_id = new_url_id()
    mapping_id = secrets.token_hex(16)
    return ContainerSpec(
        name=container_name(realm, user, mapping_id),
        image=image,
        labels={
            RUNINFO_USER: user,
            RUNINFO_MAPPING_ID: mapping_id,
            RUNINFO_URL_ID: url_id,
            RUNINFO_URLPATH: urlpath(user, url_id),
            RUNINFO_REALM: realm,
        },
        environment={"JPY_USER": user, "URL_ID": url_id},
        # The default limits (2 CPUs) are reservations on a swarm: two would not fit here.
        confinement=Confinement(limits=ResourceLimits(64, None, 128)),
    )


async def test_the_reconciler_routes_running_services_and_removes_dead_ones(
    world: tuple[SwarmRuntime, Sessions, Reconciler, str], real_image: str, proxy: Proxy
) -> None:
    runtime, _, reconciler, realm = world
    alive = _spec(real_image, realm, "alice")
    dying = _spec(real_image, realm, "bob")
    alive_id = await runtime.create(alive)
    alive_info = await runtime.start(alive_id)
    dying_id = await runtime.create(dying)
    await runtime.start(dying_id)

    async with aiodocker.Docker() as docker:
        for task in await docker.tasks.list(filters={"service": [dying_id]}):
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            await docker.containers.container(container).kill()
    for _ in range(100):
        info = await runtime.inspect(dying_id)
        if info is not None and not info.running:
            break
        await asyncio.sleep(0.1)

    report = await reconciler.reconcile_once()

    alive_path = alive.labels[RUNINFO_URLPATH]
    assert report.routes_added == [alive_path]
    assert report.containers_removed == [dying_id]
    assert proxy.routes()[alive_path]["target"] == f"http://{alive_info.host_ip}:8888"
    assert dying.labels[RUNINFO_URLPATH] not in proxy.routes()
    # Restart policy none: the dead session did not come back; its service is gone.
    assert await runtime.inspect(dying_id) is None
    assert [info.id for info in await runtime.list({RUNINFO_REALM: realm})] == [alive_id]
    # A second pass has nothing to do.
    assert not (await reconciler.reconcile_once()).changed
