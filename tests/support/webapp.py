"""The web application wired to in-memory fakes, and a browser sign-in through the fake hub."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.adapters.memory_identity import AUTHORIZE_PATH, InMemoryIdentityProvider
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.login_sessions import LoginSessionRecords
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.applications import Applications, ImageMetadataCache
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from remoteappmanager.web.deps import HealthCheck, WebDeps

PREFIX = "/services/remoteapp/"
CALLBACK = PREFIX + "oauth_callback"
API = PREFIX + "api/"


class ApiClient:
    """A client of the REST API: ``Authorization: token`` for one hub user (or anonymous);
    ``call`` answers (status, decoded JSON body or None, headers)."""

    def __init__(self, client: TestClient[Any, Any], token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"token {token}"} if token else {}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
            return response.status, body, response.headers


class PageOutline(HTMLParser):
    """What the page tests look at in a served page: element ids (to their tag), meta tags,
    linked scripts and style sheets, links (to their id) and the body's attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.links: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if "id" in attributes:
            self.ids[attributes["id"]] = tag
        if tag == "meta" and "name" in attributes:
            self.meta[attributes["name"]] = attributes.get("content", "")
        if tag == "script":
            self.scripts.append(attributes.get("src", ""))
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes["href"])
        if tag == "a" and "href" in attributes:
            self.links[attributes["href"]] = attributes.get("id", "")
        if tag == "body":
            self.body = attributes


def static_text(name: str) -> str:
    """A static file as the package ships it."""
    return (resources.files("remoteappmanager.web") / "static" / name).read_text()


class FakeClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


REALM = "web-realm"
VOLUME_ROOT = "/data"


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    # The hub caches what it answers on the world's clock, as production does on the real one:
    # a hub-side change shows once ``clock.advance(hub.cache_ttl)``.
    hub: InMemoryIdentityProvider = field(init=False)
    database: InMemoryDatabase = field(default_factory=InMemoryDatabase)
    # The container side: an "engine" without image caching, so tests see changes at once.
    runtime: InMemoryRuntime = field(default_factory=lambda: InMemoryRuntime(image_cache_ttl=0))
    routes: InMemoryRouteTable = field(default_factory=InMemoryRouteTable)
    probe: InMemoryReadinessProbe = field(default_factory=InMemoryReadinessProbe)
    workspaces: InMemoryWorkspaces = field(default_factory=InMemoryWorkspaces)
    host_paths: InMemoryHostPaths = field(default_factory=InMemoryHostPaths)
    sessions: Sessions | None = None
    activity: ActivityTracker = field(init=False)
    stop_log: StopLog = field(init=False)
    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    audit: AuditTrail = field(init=False)

    def __post_init__(self) -> None:
        # Containers start on this world's clock, as deadlines are counted on it.
        self.runtime.wall_clock = self.clock
        self.activity = ActivityTracker(clock=self.clock)
        self.stop_log = StopLog(self.database.unit_of_work, self.activity, clock=self.clock)
        self.hub = InMemoryIdentityProvider(clock=self.clock)
        self.audit = AuditTrail(self.events)

    def hub_changed(self) -> None:
        """Let the hub's cached answers expire, as they do ``cache_ttl`` after a change."""
        self.clock.advance(self.hub.cache_ttl)

    def make_sessions(self, settings: Settings) -> Sessions:
        """The sessions service over this world's fakes, as the composition root builds it."""
        self.sessions = Sessions(
            self.runtime,
            self.routes,
            self.workspaces,
            self.host_paths,
            self.probe,
            realm=REALM,
            access=AccessMode(settings.container_access.value),
            gate_url=settings.effective_gate_url,
            network_timeout=5,
            watch_interval=0.01,
            unit_of_work=self.database.unit_of_work,
            confinement=settings.confinement,
            volume_rules=settings.volume_rules,
            start_rate_per_minute=settings.start_rate_per_minute,
            max_sessions_per_user=settings.max_sessions_per_user,
            clock=self.clock,
            stop_log=self.stop_log,
            audit=self.audit,
        )
        return self.sessions

    def volume_guard(self, settings: Settings) -> VolumeGuard:
        return VolumeGuard(settings.volume_rules, self.host_paths)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jupyterhub_api_token": "service-token-" + "0" * 32,
        "jupyterhub_service_prefix": PREFIX,
        "jupyterhub_base_url": "/",
        # Any free port: tests run side by side, and in-memory routes need no real address.
        "gate_url": "http://127.0.0.1:0",
        # Grants may mount host folders from here (the fake host has none unless told).
        "volume_roots": [VOLUME_ROOT],
    }
    values.update(overrides)
    return Settings(**values)


def make_app(
    world: World,
    *,
    health_checks: Mapping[str, HealthCheck] | None = None,
    identity: IdentityProvider | None = None,
    login_sessions: LoginSessionRecords | None = None,
    leadership: Leadership | None = None,
    **settings: Any,
) -> web.Application:
    values = make_settings(**settings)
    sessions = world.make_sessions(values)
    images = ImageMetadataCache(world.runtime, ttl=0, missing_ttl=0)
    deps = WebDeps(
        settings=values,
        identity=identity or world.hub,
        uow_factory=world.database.unit_of_work,
        clock=world.clock,
        health_checks=dict(health_checks or {}),
        sessions=sessions,
        applications=Applications(
            world.database.unit_of_work, sessions, images, grants_ttl=0, activity=world.activity
        ),
        volumes=world.volume_guard(values),
        activity=world.activity,
        stop_log=world.stop_log,
        audit=world.audit,
        login_sessions=login_sessions,
        leadership=leadership,
    )
    return create_app(deps)


@dataclass(frozen=True)
class LoginRedirect:
    state: str
    code_challenge: str
    query: Mapping[str, str]


def parse_login_redirect(location: str) -> LoginRedirect:
    parts = urlsplit(location)
    assert parts.path == AUTHORIZE_PATH, location
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    return LoginRedirect(state=query["state"], code_challenge=query["code_challenge"], query=query)


async def start_sign_in(client: TestClient[Any, Any], page: str = PREFIX) -> LoginRedirect:
    response = await client.get(page, allow_redirects=False)
    assert response.status == 302, await response.text()
    return parse_login_redirect(response.headers["Location"])


async def sign_in(client: TestClient[Any, Any], world: World, name: str, page: str = PREFIX) -> str:
    """Sign ``name`` in as a browser would; returns where the callback sent the browser."""
    redirect = await start_sign_in(client, page)
    code = world.hub.approve(name, redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 302, await response.text()
    return response.headers["Location"]


def cookie(client: TestClient[Any, Any], name: str) -> str | None:
    for morsel in client.session.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


def replace_cookie(client: TestClient[Any, Any], name: str, value: str, path: str = PREFIX) -> None:
    """Put ``value`` in the browser's cookie ``name`` (scoped to ``path``), as a forger would."""
    jar = client.session.cookie_jar
    jar.clear(lambda morsel: morsel.key == name)
    forged: SimpleCookie = SimpleCookie()
    forged[name] = value
    forged[name]["path"] = path
    jar.update_cookies(forged, client.make_url(path))


async def confirm_entry(
    client: TestClient[Any, Any], confirmation: aiohttp.ClientResponse
) -> aiohttp.ClientResponse:
    """Press the button of the gate's "you are about to enter <user>'s session" page."""
    page = await confirmation.text()
    assert 'id="enter-confirm"' in page, page[:500]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    form = {name: html.unescape(value) for name, value in fields.items()}
    return await client.post(confirmation.url.path, data=form)
