"""Two replicas' gates on one (fake) database: either lets in a browser that entered through the
other, a sign-out through one closes the way in through both within seconds, and both agree on
who controls a shared desktop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.adapters.memory_shared_state import (
    InMemoryControlStates,
    InMemoryLoginSessionRecords,
    InMemorySharedState,
)
from remoteappmanager.domain.errors import NotFound
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.domain.shares import ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import ControlAction
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.keys import DEPS, GATE, SESSIONS, SHARES
from tests.support.webapp import PREFIX, World, cookie, make_app, sign_in
from tests.unit.test_gate import IMAGE, LABELS, ProxiedClient, Upstream, fake_application


@dataclass
class Replica:
    server: TestServer
    gate_port: int
    sessions: Sessions


@dataclass
class Pair:
    world: World
    replicas: list[Replica]

    async def start(self, user: str) -> Session:
        async with self.world.database.unit_of_work() as uow:
            owner = await uow.users.add(user)
            try:
                application = await uow.applications.get_by_image(IMAGE)
            except NotFound:
                application = await uow.applications.add(IMAGE)
            grant = await uow.grants.grant(owner, application, Policy())
            await uow.commit()
        return await self.replicas[0].sessions.start(grant)


@pytest.fixture
async def pair(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Pair]:
    upstream = await aiohttp_server(fake_application(Upstream()))
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, LABELS)
    runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    world = World(runtime=runtime)
    world.hub.add_user("alice")
    world.hub.add_user("bob")
    shared = InMemorySharedState()
    replicas = []
    try:
        for _ in range(2):
            # Each replica its own wiring over the one engine, proxy and database.
            app = make_app(
                world, realm="gate-replicas", login_sessions=InMemoryLoginSessionRecords(shared)
            )
            sessions = app[DEPS].sessions
            server = TestServer(app)
            await server.start_server()
            replicas.append(Replica(server, app[GATE].server.port, sessions))
        yield Pair(world, replicas)
    finally:
        for replica in replicas:
            await replica.server.close()


async def _through_gate(port: int, path: str, gate_cookie: str) -> int:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.get(
            f"http://127.0.0.1:{port}{path}",
            headers={"Cookie": f"{GATE_COOKIE}={gate_cookie}"},
            allow_redirects=False,
        ) as response,
    ):
        return response.status


async def test_either_gate_lets_in_a_browser_that_entered_through_the_other(pair: Pair) -> None:
    session = await pair.start("alice")
    a, b = pair.replicas
    browser = ProxiedClient(a.server, a.gate_port)
    await browser.start_server()
    try:
        await sign_in(browser, pair.world, "alice")
        assert (await browser.get(session.urlpath + "/")).status == 200
        gate_cookie = cookie(browser, GATE_COOKIE)
        assert gate_cookie is not None

        # The next request lands on the other replica's gate, which never saw this browser.
        assert await _through_gate(b.gate_port, session.urlpath + "/x", gate_cookie) == 200

        # Signing out through the first replica closes the second gate too, within seconds.
        xsrf = {"X-XSRFToken": cookie(browser, "_xsrf") or ""}
        signed_out = await browser.post(PREFIX + "logout", headers=xsrf, allow_redirects=False)
        assert signed_out.status == 302
        statuses: list[int] = []

        async def refused() -> bool:
            statuses.append(await _through_gate(b.gate_port, session.urlpath + "/x", gate_cookie))
            return statuses[-1] != 200

        for _ in range(40):
            if await refused():
                break
            await asyncio.sleep(0.1)
        assert statuses[-1] in {302, 401}  # a page visit is sent to sign in again
        assert len(statuses) <= 30  # within 3 s (the replicas check every second)
    finally:
        await browser.close()


async def test_another_users_cookie_from_the_other_replica_opens_nothing(pair: Pair) -> None:
    session = await pair.start("alice")
    bobs = await pair.start("bob")
    a, b = pair.replicas
    browser = ProxiedClient(a.server, a.gate_port)
    await browser.start_server()
    try:
        await sign_in(browser, pair.world, "bob")
        assert (await browser.get(bobs.urlpath + "/")).status == 200
        bobs_cookie = cookie(browser, GATE_COOKIE)
        assert bobs_cookie is not None
        # Bob's cookie names Bob's application: on either gate it does not open Alice's.
        for port in (a.gate_port, b.gate_port):
            assert await _through_gate(port, session.urlpath + "/", bobs_cookie) in {302, 401}
            assert await _through_gate(port, bobs.urlpath + "/", bobs_cookie) == 200
    finally:
        await browser.close()


# ------------------------------------------------------------------------------ control
DESKTOP_IMAGE = "remoteapp-test/desktop:latest"
# The client's side of an RFB 3.8 handshake (version, security None, shared ClientInit).
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
KEY_DOWN = b"\x04\x01\x00\x00\x00\x00\x00\x61"
UPDATE_REQUEST = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"


@dataclass
class DesktopPair:
    world: World
    apps: list[web.Application]
    ports: list[int]
    servers: list[TestServer]


@pytest.fixture
async def desktop_pair(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[DesktopPair]:
    """Two replicas on one (fake) database, control states included, serving a desktop
    whose fake engine echoes each WebSocket frame back reversed."""
    upstream = await aiohttp_server(fake_application(Upstream()))
    runtime = InMemoryRuntime(image_cache_ttl=0)
    # The gate tells desktops from web applications by the image's labels.
    runtime.add_image(DESKTOP_IMAGE, {"eu.simphony-project.docker.type": "vncapp"})
    runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    world = World(runtime=runtime)
    for name in ("alice", "bob"):
        world.hub.add_user(name)
    shared = InMemorySharedState()
    built = DesktopPair(world, [], [], [])
    try:
        for _ in range(2):
            app = make_app(
                world,
                realm="gate-replicas",
                login_sessions=InMemoryLoginSessionRecords(shared),
                control_states=InMemoryControlStates(shared),
            )
            server = TestServer(app)
            await server.start_server()
            built.apps.append(app)
            built.servers.append(server)
            built.ports.append(app[GATE].server.port)
        yield built
    finally:
        for server in built.servers:
            await server.close()


async def _key_passes(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Sends a key press, then a picture request; whether the key reached the desktop (the
    fake one echoes every frame it gets, reversed)."""
    await ws.send_bytes(KEY_DOWN)
    await ws.send_bytes(UPDATE_REQUEST)
    first = await ws.receive_bytes(timeout=5)
    if first == KEY_DOWN[::-1]:
        assert await ws.receive_bytes(timeout=5) == UPDATE_REQUEST[::-1]
        return True
    assert first == UPDATE_REQUEST[::-1]
    return False


async def test_both_replicas_agree_on_who_controls_a_shared_desktop(
    desktop_pair: DesktopPair,
) -> None:
    world = desktop_pair.world
    a, b = desktop_pair.apps
    async with world.database.unit_of_work() as uow:
        owner = await uow.users.add("alice")
        application = await uow.applications.add(DESKTOP_IMAGE)
        grant = await uow.grants.grant(owner, application, Policy(allow_view=True))
        await uow.commit()
    session = await a[SESSIONS].start(grant)
    alice = AuthenticatedUser("alice", admin=False)
    await a[SHARES].create(alice, session.url_id, ShareKind.USER, "bob", ShareMode.VIEW)

    # Bob watches through the second replica's gate.
    browser = ProxiedClient(desktop_pair.servers[1], desktop_pair.ports[1])
    await browser.start_server()
    try:
        await sign_in(browser, world, "bob")
        assert (await browser.get(session.urlpath + "/")).status == 200
        ws = await browser.ws_connect(
            session.urlpath + "/ws",
            protocols=("binary",),
            origin=f"http://127.0.0.1:{desktop_pair.ports[1]}",
            compress=0,
        )
        await ws.send_bytes(HANDSHAKE)
        assert await ws.receive_bytes(timeout=5) == HANDSHAKE[::-1]
        assert not await _key_passes(ws)

        # Bob asks through the second replica; Alice, on the first, sees it and gives control.
        bob = AuthenticatedUser("bob", admin=False)
        await b[SHARES].control(bob, session.url_id, ControlAction.REQUEST)
        view = await a[SHARES].control_view(alice, session.url_id)
        assert view.requests == ("bob",)
        await a[SHARES].control(alice, session.url_id, ControlAction.GIVE, "bob")
        assert (await b[SHARES].control_view(bob, session.url_id)).input_allowed

        # The second replica's gate lets his keys through within its recheck interval.
        deadline = asyncio.get_running_loop().time() + 2 * b[GATE].recheck_interval + 2
        passed = await _key_passes(ws)
        while not passed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            passed = await _key_passes(ws)
        assert passed

        # Alice takes control back through the first replica: his keys stop again.
        await a[SHARES].control(alice, session.url_id, ControlAction.TAKE)
        deadline = asyncio.get_running_loop().time() + 2 * b[GATE].recheck_interval + 2
        while passed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            passed = await _key_passes(ws)
        assert not passed
        assert not (await b[SHARES].control_view(bob, session.url_id)).input_allowed
        await ws.close()
    finally:
        await browser.close()


async def test_two_replicas_changing_control_at_once_both_count(
    desktop_pair: DesktopPair,
) -> None:
    world = desktop_pair.world
    a, b = desktop_pair.apps
    async with world.database.unit_of_work() as uow:
        owner = await uow.users.add("alice")
        application = await uow.applications.add(DESKTOP_IMAGE)
        grant = await uow.grants.grant(owner, application, Policy(allow_view=True))
        await uow.commit()
    session = await a[SESSIONS].start(grant)
    alice = AuthenticatedUser("alice", admin=False)
    for viewer in ("bob", "carol"):
        await a[SHARES].create(alice, session.url_id, ShareKind.USER, viewer, ShareMode.VIEW)
    world.hub.add_user("carol")
    # Both ask at the same moment, each through another replica: neither request is lost.
    await asyncio.gather(
        a[SHARES].control(
            AuthenticatedUser("bob", admin=False), session.url_id, ControlAction.REQUEST
        ),
        b[SHARES].control(
            AuthenticatedUser("carol", admin=False), session.url_id, ControlAction.REQUEST
        ),
    )
    assert sorted((await b[SHARES].control_view(alice, session.url_id)).requests) == [
        "bob",
        "carol",
    ]
