"""Sessions and the reconciler against the real Docker engine and configurable-http-proxy.

Each test has a realm of its own; every container of it is force-removed afterwards.
All traffic goes to 127.0.0.1: the proxy's ports and the containers' published ports.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiodocker
import pytest

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
from remoteappmanager.domain.errors import Conflict, NotFound, Unable, Unavailable
from remoteappmanager.domain.models import Application, Grant, Policy, User
from remoteappmanager.domain.sessions import AccessMode, Session, SessionState
from remoteappmanager.ports.probe import ReadinessProbe
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from tests.support.services import Proxy, ServiceMissing, skip_or_fail
from tests.support.session_images import (
    CRASHER_IMAGE,
    SLEEPER_IMAGE,
    WEB_IMAGE,
    ensure_session_images,
    remove_realm,
)

pytestmark = [pytest.mark.docker, pytest.mark.proxy]


@pytest.fixture(scope="session")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


@dataclass
class Stack:
    proxy: Proxy
    realm: str
    runtime: AiodockerRuntime
    routes: ChpRouteTable
    probe: ReadinessProbe
    sessions: Sessions
    reconciler: Reconciler
    workspace_root: Path
    make: Callable[..., Sessions]


@pytest.fixture
async def stack(session_images: None, proxy: Proxy, tmp_path: Path) -> AsyncIterator[Stack]:
    realm = f"it-{secrets.token_hex(4)}"
    runtime = AiodockerRuntime()
    routes = ChpRouteTable(proxy.api_url, proxy.token, retries=1, backoff=0.01)
    probe = AiohttpReadinessProbe()
    workspace_root = tmp_path / "workspaces"
    made: list[Sessions] = []

    def make(
        realm: str = realm,
        network_timeout: float = 10,
        probe: ReadinessProbe = probe,
        runtime: AiodockerRuntime = runtime,
    ) -> Sessions:
        sessions = Sessions(
            runtime,
            routes,
            DirectoryWorkspaces(workspace_root, uid=os.getuid(), gid=os.getgid()),
            LocalHostPaths(),
            probe,
            realm=realm,
            access=AccessMode.DIRECT,
            network_timeout=network_timeout,
            watch_interval=0.2,
        )
        made.append(sessions)
        return sessions

    sessions = make()
    try:
        yield Stack(
            proxy=proxy,
            realm=realm,
            runtime=runtime,
            routes=routes,
            probe=probe,
            sessions=sessions,
            reconciler=Reconciler(runtime, routes, sessions),
            workspace_root=workspace_root,
            make=make,
        )
    finally:
        for each in {s.realm for s in made}:
            await remove_realm(each)
        await probe.close()
        await routes.close()
        await runtime.close()


def grant(user: str = "alice", image: str = WEB_IMAGE, policy: Policy | None = None) -> Grant:
    return Grant(secrets.token_hex(16), User(1, user), Application(1, image), policy or Policy())


def get_through_proxy(proxy: Proxy, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(proxy.public_url + path, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


async def fetch(proxy: Proxy, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(get_through_proxy, proxy, path)


async def realm_containers(realm: str) -> list[dict[str, object]]:
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(
            all=True,
            filters={"label": [f"eu.simphony-project.docker.runinfo.realm={realm}"]},
        )
        return [c._container for c in found]


async def nothing_left(stack: Stack) -> bool:
    return not await realm_containers(stack.realm) and not stack.proxy.routes()


# ------------------------------------------------------------------------ the happy path
async def test_start_serves_through_the_proxy_and_stop_removes_everything(stack: Stack) -> None:
    session = await stack.sessions.start(grant("alice"), {"resolution": "1280x800"})

    status, body = await fetch(stack.proxy, session.urlpath + "/")
    assert status == 200
    assert body == f"hello alice from {session.url_id}\n"
    status, env = await fetch(stack.proxy, session.urlpath + "/env.txt")
    assert status == 200
    assert f"URL_ID={session.url_id}" in env
    assert "JPY_BASE_USER_URL=/user/alice\n" in env
    assert "X11_WIDTH=1280\n" in env
    assert "X11_HEIGHT=800\n" in env
    assert "USER=alice\n" in env
    route = stack.proxy.routes()[session.urlpath]
    assert route["target"] == f"http://127.0.0.1:{session.host_port}"
    assert route["remoteappmanager"] is True
    assert "jupyterhub" not in route

    (listed,) = await stack.sessions.list_for_user("alice")
    assert (listed.url_id, listed.state) == (session.url_id, SessionState.RUNNING)

    await stack.sessions.stop("alice", session.url_id)
    assert await nothing_left(stack)
    status, _ = await fetch(stack.proxy, session.urlpath + "/")
    assert status in (404, 503)


async def test_the_published_port_listens_on_loopback_only(stack: Stack) -> None:
    session = await stack.sessions.start(grant())
    (container,) = await realm_containers(stack.realm)
    ports = container["Ports"]
    assert isinstance(ports, list)
    assert {p["IP"] for p in ports if p.get("PublicPort")} == {"127.0.0.1"}
    assert session.host_ip == "127.0.0.1"


async def test_an_odd_user_name_is_reachable_under_its_escaped_path(stack: Stack) -> None:
    name = "José María"
    session = await stack.sessions.start(grant(name))
    assert session.urlpath.startswith("/user/" + quote(name, safe="@~") + "/containers/")
    status, body = await fetch(stack.proxy, session.urlpath + "/")
    assert status == 200
    assert body == f"hello {name} from {session.url_id}\n"


async def test_the_workspace_is_mounted_and_private(stack: Stack) -> None:
    session = await stack.sessions.start(grant("bob", policy=Policy(allow_home=True)))
    workspace = stack.workspace_root / "bob"
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    written = workspace / "written-by-container"
    assert written.read_text().strip() == session.url_id


async def test_sessions_survive_a_service_restart(stack: Stack) -> None:
    session = await stack.sessions.start(grant())
    restarted = stack.make()
    (found,) = await restarted.list_for_user("alice")
    assert (found.url_id, found.state) == (session.url_id, SessionState.RUNNING)
    await restarted.stop("alice", session.url_id)
    assert await nothing_left(stack)


async def test_starting_again_replaces_the_container(stack: Stack) -> None:
    g = grant()
    first = await stack.sessions.start(g)
    second = await stack.sessions.start(g)
    (only,) = await realm_containers(stack.realm)
    assert only["Id"] == second.container_id
    assert set(stack.proxy.routes()) == {second.urlpath}
    assert first.url_id != second.url_id


# ------------------------------------------------------------------------ faults
async def test_someone_elses_session_is_not_found(stack: Stack) -> None:
    session = await stack.sessions.start(grant("alice"))
    with pytest.raises(NotFound):
        await stack.sessions.stop("mallory", session.url_id)
    assert len(await realm_containers(stack.realm)) == 1


async def test_image_deleted_after_the_grant_is_not_found(stack: Stack) -> None:
    with pytest.raises(NotFound, match="not available"):
        await stack.sessions.start(grant(image="remoteapp-test/deleted-long-ago:latest"))
    assert await nothing_left(stack)


async def test_a_container_that_never_answers_is_removed(stack: Stack) -> None:
    sessions = stack.make(network_timeout=2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(Unable, match="did not become ready within 2 s"):
        await sessions.start(grant(image=SLEEPER_IMAGE))
    assert loop.time() - began < 10
    assert await nothing_left(stack)


async def test_a_container_that_exits_at_once_fails_fast_and_is_removed(stack: Stack) -> None:
    sessions = stack.make(network_timeout=30)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(Unable, match="exited before it became ready"):
        await sessions.start(grant(image=CRASHER_IMAGE))
    assert loop.time() - began < 5
    assert await nothing_left(stack)


async def test_proxy_stopped_during_start_is_a_clear_error_and_leaves_nothing(
    stack: Stack,
) -> None:
    # The route is added while the application gets ready: it meets a proxy that is gone.
    await asyncio.to_thread(stack.proxy.stop)
    sessions = stack.make()
    with pytest.raises(Unavailable, match=r"could not be started \(step: routing\)"):
        await sessions.start(grant())
    assert not await realm_containers(stack.realm)
    await asyncio.to_thread(stack.proxy.start)
    assert stack.proxy.routes() == {}


async def test_engine_unreachable_is_a_clear_error_and_leaves_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    dead = AiodockerRuntime(f"unix://{tmp_path}/no-engine.sock")
    try:
        sessions = stack.make(runtime=dead)
        with pytest.raises(Unavailable, match="Docker engine unavailable"):
            await sessions.start(grant())
    finally:
        await dead.close()
    assert await nothing_left(stack)


async def test_concurrent_starts_of_one_grant_start_one_container(stack: Stack) -> None:
    g = grant()
    results = await asyncio.gather(
        *(stack.sessions.start(g) for _ in range(3)), return_exceptions=True
    )
    started = [r for r in results if isinstance(r, Session)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert (len(started), len(refused)) == (1, 2)
    (only,) = await realm_containers(stack.realm)
    assert only["Id"] == started[0].container_id
    assert set(stack.proxy.routes()) == {started[0].urlpath}


# ------------------------------------------------------------------------ reconciliation
async def test_container_removed_behind_our_back_loses_its_route(stack: Stack) -> None:
    session = await stack.sessions.start(grant())
    async with aiodocker.Docker() as docker:
        await docker.containers.container(str(session.container_id)).delete(force=True)

    report = await stack.reconciler.reconcile_once()

    assert report.routes_removed == [session.urlpath]
    assert await nothing_left(stack)
    assert await stack.sessions.list_for_user("alice") == []


async def test_exited_container_is_removed_with_its_route(stack: Stack) -> None:
    session = await stack.sessions.start(grant())
    async with aiodocker.Docker() as docker:
        await docker.containers.container(str(session.container_id)).kill()
    await asyncio.sleep(0.2)

    report = await stack.reconciler.reconcile_once()

    assert report.containers_removed == [session.container_id]
    assert await nothing_left(stack)


async def test_a_restarted_proxy_gets_its_routes_back(stack: Stack) -> None:
    sessions = [await stack.sessions.start(grant(f"user{i}")) for i in range(3)]
    await asyncio.to_thread(stack.proxy.restart)
    assert stack.proxy.routes() == {}

    report = await stack.reconciler.reconcile_once()

    assert sorted(report.routes_added) == sorted(s.urlpath for s in sessions)
    for session in sessions:
        status, body = await fetch(stack.proxy, session.urlpath + "/")
        assert status == 200
        assert session.url_id in body
    assert not (await stack.reconciler.reconcile_once()).changed


async def test_another_realm_is_never_touched(stack: Stack) -> None:
    other = stack.make(realm=f"other-{secrets.token_hex(4)}")
    theirs_running = await other.start(grant("carol"))
    theirs_exited = await other.start(grant("dave"))
    async with aiodocker.Docker() as docker:
        await docker.containers.container(str(theirs_exited.container_id)).kill()
    ours = await stack.sessions.start(grant("alice"))
    await asyncio.to_thread(stack.proxy.restart)

    report = await stack.reconciler.reconcile_once()

    assert report.routes_added == [ours.urlpath]
    assert not report.containers_removed
    assert set(stack.proxy.routes()) == {ours.urlpath}
    assert {c["Id"] for c in await realm_containers(other.realm)} == {
        theirs_running.container_id,
        theirs_exited.container_id,
    }
    assert {s.url_id for s in await stack.sessions.list_all()} == {ours.url_id}
    with pytest.raises(NotFound):
        await stack.sessions.stop_any(theirs_running.url_id)
