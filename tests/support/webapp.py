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

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_events import InMemoryEventStore
from remoteappmanager.adapters.memory_identity import AUTHORIZE_PATH, InMemoryIdentityProvider
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.bootstrap import Database
from remoteappmanager.ports.coordination import ControlStates, LeaderElection
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.ports.login_sessions import LoginSessionRecords
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.applications import DEFAULT_MISSING_IMAGE_TTL
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.services.catalogue import VolumeGuard
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


def memory_database(database: InMemoryDatabase, events: InMemoryEventStore) -> Database:
    """The in-memory catalogue and audit store, as the composition root takes a database."""

    async def nothing() -> None:
        return None

    return Database(
        location="in-memory database",
        unit_of_work=database.unit_of_work,
        events=events,
        ping=nothing,
        close=nothing,
    )


@dataclass
class World:
    """The service's ports as in-memory stand-ins; ``build`` wires the service over them
    through the composition root (production wiring, caches and time-outs), on this world's
    clock."""

    clock: FakeClock = field(default_factory=FakeClock)
    # The hub caches what it answers on the world's clock, as production does on the real one:
    # a hub-side change shows once ``clock.advance(hub.cache_ttl)``.
    hub: InMemoryIdentityProvider = field(init=False)
    database: InMemoryDatabase = field(default_factory=InMemoryDatabase)
    # The container side: an "engine" without a cache of its own (the service's caches age on
    # the world's clock: ``engine_changed``).
    runtime: InMemoryRuntime = field(default_factory=lambda: InMemoryRuntime(image_cache_ttl=0))
    routes: InMemoryRouteTable = field(default_factory=InMemoryRouteTable)
    probe: InMemoryReadinessProbe = field(default_factory=InMemoryReadinessProbe)
    workspaces: InMemoryWorkspaces = field(default_factory=InMemoryWorkspaces)
    host_paths: InMemoryHostPaths = field(default_factory=InMemoryHostPaths)
    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    built: WebDeps | None = None
    """The service last built over this world."""

    def __post_init__(self) -> None:
        # Containers start on this world's clock, as deadlines are counted on it.
        self.runtime.wall_clock = self.clock
        self.hub = InMemoryIdentityProvider(clock=self.clock)

    def hub_changed(self) -> None:
        """Let the hub's cached answers expire, as they do ``cache_ttl`` after a change."""
        self.clock.advance(self.hub.cache_ttl)

    def engine_changed(self) -> None:
        """Let cached answers about the engine expire (the realm's container list, missing
        or unreadable images), as they do a few seconds after a change in production."""
        self.clock.advance(max(bootstrap.SESSION_LISTING_TTL, DEFAULT_MISSING_IMAGE_TTL))

    def build(self, settings: Settings, **overrides: Any) -> WebDeps:
        """The service over this world's stand-ins, as ``bootstrap.build`` wires it;
        ``overrides`` replace ports (``identity``, ``login_sessions``, ``election``, ...)."""
        ports: dict[str, Any] = {
            "identity": self.hub,
            "database": memory_database(self.database, self.events),
            "runtime": self.runtime,
            "routes": self.routes,
            "probe": self.probe,
            "workspaces": self.workspaces,
            "host_paths": self.host_paths,
            "clock": self.clock,
            "monotonic": self.clock,
        }
        ports.update(overrides)
        self.built = bootstrap.build(settings, **ports)
        return self.built

    def _built(self) -> WebDeps:
        assert self.built is not None, "build the service first (make_app or World.build)"
        return self.built

    @property
    def sessions(self) -> Sessions:
        return self._built().sessions

    @property
    def activity(self) -> ActivityTracker:
        return self._built().activity

    @property
    def stop_log(self) -> StopLog:
        return self._built().stop_log

    @property
    def audit(self) -> AuditTrail:
        return self._built().audit

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
        "realm": REALM,
        "network_timeout": 5,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(
    world: World,
    *,
    health_checks: Mapping[str, HealthCheck] | None = None,
    identity: IdentityProvider | None = None,
    login_sessions: LoginSessionRecords | None = None,
    control_states: ControlStates | None = None,
    election: LeaderElection | None = None,
    **settings: Any,
) -> web.Application:
    """The application over ``world``, wired by the composition root; ``settings`` are
    ``Settings`` fields."""
    overrides: dict[str, Any] = {}
    if health_checks is not None:
        overrides["health_checks"] = health_checks
    if identity is not None:
        overrides["identity"] = identity
    if login_sessions is not None:
        overrides["login_sessions"] = login_sessions
    if control_states is not None:
        overrides["control_states"] = control_states
    if election is not None:
        overrides["election"] = election
    return create_app(world.build(make_settings(**settings), **overrides))


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
