"""The service wired to in-memory fakes in gated mode, with a tiny application behind the gate.

Every container the fake engine starts is "published" on one aiohttp test server that answers
``{"path": ...}`` under any ``/user/<name>/containers/<url_id>/`` path, so requests that the
gate lets through reach something real.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from remoteappmanager.domain.errors import NotFound
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.web.keys import GATE
from tests.support.webapp import World, make_app

GATED_IMAGE = "remoteapp-test/gated:latest"
_LABELS = {"eu.simphony-project.docker.type": "webapp"}


def _application() -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"path": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/user/{name}/containers/{url_id}/{tail:.*}", echo)
    return app


@dataclass
class GatedService:
    world: World
    app: web.Application
    server: TestServer
    gate_port: int

    @property
    def gate_url(self) -> str:
        return f"http://127.0.0.1:{self.gate_port}"

    async def start(self, user: str, policy: Policy | None = None) -> Session:
        """A running application of ``user`` (created in the catalogue if need be)."""
        async with self.world.database.unit_of_work() as uow:
            try:
                owner = await uow.users.get_by_name(user)
            except NotFound:
                owner = await uow.users.add(user)
            try:
                application = await uow.applications.get_by_image(GATED_IMAGE)
            except NotFound:
                application = await uow.applications.add(GATED_IMAGE)
            grant = await uow.grants.grant(owner, application, policy or Policy())
            await uow.commit()
        assert self.world.sessions is not None
        return await self.world.sessions.start(grant)

    async def gate_request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """``method path`` sent to the gate's listener, as the proxy forwards it."""
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
            client.request(
                method, self.gate_url + path, headers=headers or {}, allow_redirects=False
            ) as response,
        ):
            return response.status, await response.read()


@asynccontextmanager
async def gated_service(
    world: World, *, identity: IdentityProvider | None = None, **settings: Any
) -> AsyncIterator[GatedService]:
    """The service (gated mode, gate on a free port) over ``world``, started and stopped;
    ``identity`` replaces the world's fake hub (a real hub's provider, say)."""
    upstream = TestServer(_application(), host="127.0.0.1")
    await upstream.start_server()
    world.runtime.add_image(GATED_IMAGE, _LABELS)
    world.runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    app = make_app(world, identity=identity, **settings)
    server = TestServer(app, host="127.0.0.1")
    try:
        await server.start_server()
        yield GatedService(world, app, server, app[GATE].server.port)
    finally:
        await server.close()
        await upstream.close()


async def client_of(service: GatedService) -> TestClient[Any, Any]:
    """A browser-like client of the service (not of the gate)."""
    client: TestClient[Any, Any] = TestClient(service.server)
    await client.start_server()
    return client
