"""Two replicas' gates on one (fake) database: either lets in a browser that entered through the
other, and a sign-out through one closes the way in through both within seconds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.adapters.memory_shared_state import (
    InMemoryLoginSessionRecords,
    InMemorySharedState,
)
from remoteappmanager.domain.errors import NotFound
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.keys import DEPS, GATE
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
