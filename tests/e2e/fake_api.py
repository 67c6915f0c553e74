"""A stand-in for the hub's authorize page, the user REST API and containers, for page tests.

``FakeBackend.middleware`` is added to the real application (``create_app``), innermost: the
real sign-in, sessions, CSRF checks, page and static files run; the paths below are answered
here whether or not the real API is registered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.adapters.memory_identity import AUTHORIZE_PATH, InMemoryIdentityProvider
from remoteappmanager.web.auth import current_user

API = "/services/remoteapp/api/v1/"
CALLBACK = "/services/remoteapp/oauth_callback"


@dataclass
class FakeApplication:
    mapping_id: str
    image: dict[str, Any] | None
    policy: dict[str, Any]
    container: dict[str, Any] | None = None
    limits: dict[str, Any] = field(
        default_factory=lambda: {"memory_limit_mb": 4096, "cpu_limit": 2.0, "pids_limit": 1024}
    )
    last_stop: dict[str, Any] | None = None
    source_group: str | None = None

    def as_item(self) -> dict[str, Any]:
        return {
            "mapping_id": self.mapping_id,
            "image": self.image,
            "policy": self.policy,
            "limits": self.limits,
            "container": self.container,
            "last_stop": self.last_stop,
            "source_group": self.source_group,
        }


def image(
    name: str,
    ui_name: str,
    *,
    description: str = "",
    type: str = "webapp",
    icon: str = "",
    configurables: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "name": name,
        "ui_name": ui_name,
        "icon_128": icon,
        "description": description,
        "type": type,
        "configurables": list(configurables),
    }


def policy(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "app_license": None,
        "allow_home": False,
        "allow_view": False,
        "volume_source": None,
        "volume_target": None,
        "volume_mode": None,
        "allow_startup_data": False,
    }
    values.update(overrides)
    return values


@dataclass
class FakeBackend:
    hub: InMemoryIdentityProvider
    user: str = "alice"
    applications: dict[str, FakeApplication] = field(default_factory=dict)
    start_delay: float = 0.0
    start_error: str | None = None
    # The steps a start shows (as a starting container), each for an equal share of the delay.
    start_steps: list[str] = field(default_factory=list)
    # What each start asked for, in order: (mapping_id, configurables).
    starts: list[tuple[str, Any]] = field(default_factory=list)
    csrf_headers: list[str | None] = field(default_factory=list)
    # Seconds from a start (or a "Keep working") until the container's expires_at; None: never.
    expires_in: float | None = None
    # The url ids "Keep working" was pressed for, in order.
    activity: list[str] = field(default_factory=list)
    # url_id -> the session's shares as the API lists them.
    shares: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, image: dict[str, Any] | None, policy: dict[str, Any]) -> FakeApplication:
        app = FakeApplication(secrets.token_hex(16), image, policy)
        self.applications[app.mapping_id] = app
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == AUTHORIZE_PATH:
            return self._authorize(request)
        if path == "/hub/logout":
            return web.Response(text="<!DOCTYPE html><h1>Signed out of the hub</h1>",
                                content_type="text/html")  # fmt: skip
        if path.startswith("/user/"):
            return self._container_page(request)
        if path.startswith(API + "applications/") or path.startswith(API + "containers/"):
            user = await current_user(request)
            if user is None:
                return _error(401, "Unauthorized", "sign in first")
            return await self._api(request)
        return await handler(request)

    def _authorize(self, request: web.Request) -> web.StreamResponse:
        code = self.hub.approve(self.user, request.query["code_challenge"])
        state = request.query["state"]
        raise web.HTTPFound(f"{CALLBACK}?code={code}&state={state}")

    def _container_page(self, request: web.Request) -> web.StreamResponse:
        for app in self.applications.values():
            container = app.container
            if container and request.path.startswith(container["urlpath"] + "/"):
                name = (app.image or {}).get("ui_name", "")
                body = (
                    "<!DOCTYPE html><html><body style='font-family:sans-serif'>"
                    f"<h1 id='fake-app'>Inside {json.dumps(name)[1:-1]}</h1>"
                    "<p>This is what the running application shows.</p></body></html>"
                )
                return web.Response(text=body, content_type="text/html")
        return web.Response(status=404, text="no such container")

    async def _api(self, request: web.Request) -> web.StreamResponse:
        rest = request.path.removeprefix(API)
        parts = [part for part in rest.split("/") if part]
        if parts == ["applications"] and request.method == "GET":
            items = {key: app.as_item() for key, app in self.applications.items()}
            return web.json_response(
                {"offset": 0, "total": len(items), "items": items, "identifiers": list(items)}
            )
        if len(parts) == 2 and parts[0] == "applications" and request.method == "GET":
            found = self.applications.get(parts[1])
            if found is None:
                return _error(404, "NotFound", "no such application")
            return web.json_response(found.as_item())
        if parts == ["containers"] and request.method == "POST":
            self.csrf_headers.append(request.headers.get("X-XSRFToken"))
            return await self._start(await request.json())
        if parts[:1] == ["containers"] and parts[2:] == ["activity"] and request.method == "POST":
            self.csrf_headers.append(request.headers.get("X-XSRFToken"))
            for app in self.applications.values():
                if app.container and app.container["url_id"] == parts[1]:
                    self.activity.append(parts[1])
                    app.container["expires_at"] = self._expiry()
                    return web.json_response(app.container)
            return _error(404, "NotFound", "no such container")
        if len(parts) == 2 and parts[0] == "containers" and request.method == "DELETE":
            self.csrf_headers.append(request.headers.get("X-XSRFToken"))
            for app in self.applications.values():
                if app.container and app.container["url_id"] == parts[1]:
                    app.container = None
                    return web.Response(status=204)
            return _error(404, "NotFound", "no such container")
        if len(parts) >= 3 and parts[0] == "containers" and parts[2] in ("shares", "control"):
            return await self._sharing(request, parts)
        return _error(404, "NotFound", "no such resource")

    async def _sharing(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        """Shares and control of a running container, as the service answers them."""
        url_id = parts[1]
        if not any(app.container and app.container["url_id"] == url_id for app in
                   self.applications.values()):  # fmt: skip
            return _error(404, "NotFound", "no such container")
        shares = self.shares.setdefault(url_id, [])
        if parts[2] == "control":
            return web.json_response(
                {
                    "owner": self.user,
                    "urlpath": f"/user/{self.user}/containers/{url_id}",
                    "controller": None,
                    "owner_holds": False,
                    "everyone": False,
                    "requests": [],
                    "mode": None,
                    "input": True,
                }
            )
        if len(parts) == 3 and request.method == "GET":
            items = {share["id"]: share for share in shares}
            return web.json_response(
                {
                    "offset": 0,
                    "total": len(items),
                    "items": items,
                    "identifiers": list(items),
                    "connected": [],
                }
            )
        if len(parts) == 3 and request.method == "POST":
            self.csrf_headers.append(request.headers.get("X-XSRFToken"))
            body = await request.json()
            share = {"id": str(len(shares) + 1), "mode": body.get("mode", "view"),
                     "created_at": "2026-12-04T19:30:00Z"}  # fmt: skip
            share.update({key: body[key] for key in ("user", "group", "link") if key in body})
            shares.append(share)
            return web.Response(status=201, headers={"Location": f"{share['id']}/"})
        if len(parts) == 4 and request.method == "DELETE":
            self.shares[url_id] = [share for share in shares if share["id"] != parts[3]]
            return web.Response(status=204)
        return _error(404, "NotFound", "no such resource")

    async def _start(self, body: dict[str, Any]) -> web.StreamResponse:
        mapping_id = body.get("mapping_id")
        self.starts.append((str(mapping_id), body.get("configurables")))
        app = self.applications.get(str(mapping_id))
        if app is None:
            return _error(404, "NotFound", "no such application")
        url_id = secrets.token_hex(16)
        urlpath = f"/user/{self.user}/containers/{url_id}"
        for step in self.start_steps:
            app.container = {"url_id": url_id, "urlpath": urlpath, "state": "starting",
                             "step": step, "mapping_id": app.mapping_id}  # fmt: skip
            await asyncio.sleep(self.start_delay / len(self.start_steps))
        if not self.start_steps:
            await asyncio.sleep(self.start_delay)
        if self.start_error is not None:
            app.container = None
            return _error(500, "Unable", self.start_error)
        app.container = {
            "url_id": url_id,
            "urlpath": urlpath,
            "state": "running",
            "mapping_id": app.mapping_id,
            "expires_at": self._expiry(),
        }
        return web.Response(status=201, headers={"Location": f"{API}containers/{url_id}/"})

    def _expiry(self) -> str | None:
        if self.expires_in is None:
            return None
        moment = datetime.now(UTC) + timedelta(seconds=self.expires_in)
        return moment.isoformat().replace("+00:00", "Z")


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": kind, "message": message}, status=status)
