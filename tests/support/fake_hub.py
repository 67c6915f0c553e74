"""A stand-in for JupyterHub's REST API: ``GET /hub/api/`` and ``GET /hub/api/user`` by token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeHub:
    """Users by API token; ``api_url`` is what ``JUPYTERHUB_API_URL`` would be."""

    tokens: dict[str, str] = field(default_factory=dict)
    admins: set[str] = field(default_factory=set)
    api_url: str = ""

    def issue_token(self, name: str) -> str:
        token = f"token-{name}-{len(self.tokens)}"
        self.tokens[token] = name
        return token

    def app(self) -> web.Application:
        async def root(_request: web.Request) -> web.Response:
            return web.json_response({"version": "5.0.0"})

        async def user(request: web.Request) -> web.Response:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            name = self.tokens.get(token) if scheme.lower() == "token" else None
            if name is None:
                return web.json_response({"status": 403}, status=403)
            return web.json_response(
                {
                    "kind": "user",
                    "name": name,
                    "admin": name in self.admins,
                    "groups": [],
                    "scopes": ["access:services!service=remoteapp"],
                }
            )

        app = web.Application()
        app.router.add_get("/hub/api/", root)
        app.router.add_get("/hub/api/user", user)
        return app


@asynccontextmanager
async def running_fake_hub() -> AsyncIterator[FakeHub]:
    hub = FakeHub()
    server = TestServer(hub.app(), host="127.0.0.1")
    await server.start_server()
    hub.api_url = str(server.make_url("/hub/api"))
    try:
        yield hub
    finally:
        await server.close()
