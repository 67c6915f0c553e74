"""The gate behind a real configurable-http-proxy, in front of real application containers.

The service (fake hub, in-memory catalogue) runs on a free 127.0.0.1 port and its gate on
another; the proxy routes ``{svc}`` to the service and every container path to the gate, as
JupyterHub and gated sessions set it up. All traffic goes to 127.0.0.1. Each test has a realm
of its own, force-removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import AccessMode, Session
from remoteappmanager.services.deps import WebDeps
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.web.app import create_app
from remoteappmanager.web.gate import GATE_COOKIE
from tests.support.services import REPO, Proxy, ServiceMissing, free_port, skip_or_fail
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm
from tests.support.webapp import CALLBACK, PREFIX, World, make_settings, parse_login_redirect

pytestmark = [pytest.mark.docker, pytest.mark.proxy]

VNCAPP = "remoteapp-demo/vncapp:latest"
VNC_BUILD_TIMEOUT = 1500.0


@pytest.fixture(scope="session")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


async def _image_exists(image: str) -> bool:
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.inspect(image)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise
    return True


@pytest.fixture(scope="session")
def vncapp_image(docker_engine: None) -> str:
    if asyncio.run(_image_exists(VNCAPP)):
        return VNCAPP
    try:
        result = subprocess.run(
            [str(REPO / "images" / "build.sh"), "vncapp"],
            capture_output=True,
            text=True,
            timeout=VNC_BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        skip_or_fail(f"images/build.sh vncapp could not run: {exc}")
    if result.returncode != 0 or not asyncio.run(_image_exists(VNCAPP)):
        skip_or_fail(f"images/build.sh vncapp failed: {result.stderr[-500:]}")
    return VNCAPP


def add_service_route(proxy: Proxy, target: str) -> None:
    """Route ``{svc}`` to the service, as JupyterHub does for a hub-managed service."""
    request = urllib.request.Request(
        proxy.api_url + "/api/routes" + PREFIX.rstrip("/"),
        data=json.dumps({"target": target}).encode(),
        headers={"Authorization": f"token {proxy.token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


@dataclass
class Stack:
    proxy: Proxy
    world: World
    sessions: Sessions
    service_url: str
    gate_url: str

    async def start(self, user: str, image: str, policy: Policy | None = None) -> Session:
        async with self.world.database.unit_of_work() as uow:
            owner = await uow.users.add(user)
            application = await uow.applications.add(image)
            grant = await uow.grants.grant(owner, application, policy or Policy())
            await uow.commit()
        return await self.sessions.start(grant)

    def browser(self) -> aiohttp.ClientSession:
        """A browser talking to the proxy's public port only."""
        return aiohttp.ClientSession(
            base_url=self.proxy.public_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )

    async def sign_in(self, browser: aiohttp.ClientSession, name: str) -> None:
        response = await browser.get(PREFIX, allow_redirects=False)
        assert response.status == 302, await response.text()
        redirect = parse_login_redirect(response.headers["Location"])
        code = self.world.hub.approve(name, redirect.code_challenge)
        response = await browser.get(
            CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
        )
        assert response.status == 302, await response.text()


@pytest.fixture
async def stack(session_images: None, proxy: Proxy, tmp_path: Path) -> AsyncIterator[Stack]:
    realm = f"gate-{secrets.token_hex(4)}"
    port, gate_port = free_port(), free_port()
    service_url = f"http://127.0.0.1:{port}"
    gate_url = f"http://127.0.0.1:{gate_port}"
    world = World()
    for name in ("alice", "bob"):
        world.hub.add_user(name)
    runtime = AiodockerRuntime()
    routes = ChpRouteTable(proxy.api_url, proxy.token, retries=1, backoff=0.01)
    probe = AiohttpReadinessProbe()
    sessions = Sessions(
        runtime,
        routes,
        DirectoryWorkspaces(tmp_path / "workspaces", uid=os.getuid(), gid=os.getgid()),
        LocalHostPaths(),
        probe,
        realm=realm,
        access=AccessMode.GATED,
        gate_url=gate_url,
        network_timeout=60,
        watch_interval=0.5,
        unit_of_work=world.database.unit_of_work,
    )
    app = create_app(
        WebDeps(
            settings=make_settings(jupyterhub_service_url=service_url, gate_url=gate_url),
            identity=world.hub,
            uow_factory=world.database.unit_of_work,
            clock=world.clock,
            sessions=sessions,
        )
    )
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        add_service_route(proxy, service_url)
        yield Stack(proxy, world, sessions, service_url, gate_url)
    finally:
        await server.close()
        await remove_realm(realm)
        await probe.close()
        await routes.close()
        await runtime.close()


async def test_the_proxy_routes_the_application_to_the_gate(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    route = stack.proxy.routes()[session.urlpath]
    assert route["target"] == stack.gate_url
    assert session.host_ip == "127.0.0.1"


async def test_the_owner_reaches_the_application_through_the_proxy(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    async with stack.browser() as browser:
        await stack.sign_in(browser, "alice")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 200
        assert await response.text() == f"hello alice from {session.url_id}\n"
        assert any(morsel.key == GATE_COOKIE for morsel in browser.cookie_jar)
        response = await browser.get(session.urlpath + "/env.txt")
        assert response.status == 200
        assert f"URL_ID={session.url_id}" in await response.text()


async def test_anonymous_and_other_users_get_no_content(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    hello = f"hello alice from {session.url_id}"
    async with stack.browser() as browser:
        response = await browser.get(session.urlpath + "/", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"].startswith(PREFIX + "gate/" + session.url_id)
        assert hello not in await response.text()
        response = await browser.post(session.urlpath + "/", data=b"x")
        assert response.status == 401
        assert hello not in await response.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await browser.ws_connect(session.urlpath + "/websockify")
        assert refused.value.status == 401

        await stack.sign_in(browser, "bob")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 403
        assert hello not in await response.text()


async def test_novnc_websocket_through_proxy_and_gate(stack: Stack, vncapp_image: str) -> None:
    session = await stack.start("alice", vncapp_image)
    async with stack.browser() as browser:
        await stack.sign_in(browser, "alice")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 200
        async with browser.ws_connect(session.urlpath + "/websockify", protocols=("binary",)) as ws:
            assert ws.protocol == "binary"
            greeting = b""
            while len(greeting) < 12:
                message = await asyncio.wait_for(ws.receive(), 20)
                assert message.type is aiohttp.WSMsgType.BINARY, message
                greeting += message.data
            assert greeting.startswith(b"RFB 003.00"), greeting
