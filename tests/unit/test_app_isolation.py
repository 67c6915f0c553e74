"""Applications never act with the service's origin.

Per-application hosts (``app_origin_template``): the gate serves an application only on its
own host, after a one-time ticket from the entry page. On the shared origin (the default):
the service's pages and API answer a browser's script only with the page's token, and
admins enter someone else's application only after confirming it.

The browser here resolves every ``*.localhost`` name to 127.0.0.1 (as Chromium does), sends
application paths on the service's host to the gate (as the proxy does) and keeps one
cookie jar.
"""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.routing import (
    app_origin,
    app_origin_pattern,
    check_app_origin_template,
    is_any_app_host,
    is_app_host,
)
from remoteappmanager.domain.sessions import Session
from remoteappmanager.domain.shares import ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.settings import SettingsError, load_settings
from remoteappmanager.web.auth import XSRF_COOKIE
from remoteappmanager.web.gate.handler import ENTER_PATH, GATE_COOKIE, TICKET_TTL
from remoteappmanager.web.keys import SHARES
from tests.support.services import free_port
from tests.support.webapp import (
    API,
    PREFIX,
    World,
    confirm_entry,
    cookie,
    make_app,
    sign_in,
)

IMAGE = "remoteapp-test/isolated:latest"
LABELS = {"eu.simphony-project.docker.type": "webapp"}
APP_HOSTS = "http://{url_id}.apps.localhost:%d"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What a script's fetch() carries in a browser (it cannot change these).
SCRIPT_FETCH = {
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
}
NAVIGATION = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


# ------------------------------------------------------------------------------ pure parts
def test_app_origin_template_shapes() -> None:
    template = "https://{url_id}.apps.example.org"
    assert check_app_origin_template(template) == template
    assert app_origin(template, "abc123") == "https://abc123.apps.example.org"
    assert app_origin_pattern("http://{url_id}.apps.localhost:8000") == (
        "http://*.apps.localhost:8000"
    )
    for bad in (
        "https://apps.example.org",
        "https://x{url_id}.apps.example.org",
        "https://{url_id}",
        "https://{url_id}.apps.example.org/path",
        "https://{url_id}.apps.example.org?q",
        "ftp://{url_id}.apps.example.org",
        "https://user@{url_id}.apps.example.org",
        "https://{url_id}.-bad-.org",
        "https://{url_id}.apps.example.org:70000",
        "https://{url_id}.{url_id}.org",
    ):
        with pytest.raises(InvalidRequest):
            check_app_origin_template(bad)
    with pytest.raises(InvalidRequest):
        app_origin(template, "a.b")


def test_app_host_comparison() -> None:
    https = "https://{url_id}.apps.example.org"
    assert is_app_host(https, "abc", "abc.apps.example.org")
    assert is_app_host(https, "abc", "ABC.apps.example.org:443")
    assert not is_app_host(https, "abc", "abd.apps.example.org")
    assert not is_app_host(https, "abc", "abc.apps.example.org:8443")
    assert not is_app_host(https, "abc", "example.org")
    assert not is_app_host(https, "abc", "")
    local = "http://{url_id}.apps.localhost:8000"
    assert is_app_host(local, "abc", "abc.apps.localhost:8000")
    assert not is_app_host(local, "abc", "abc.apps.localhost")


def test_settings_refuse_what_cannot_work() -> None:
    good = {"app_origin_template": "https://{url_id}.apps.example.org"}
    hub = {"jupyterhub_public_url": "https://example.org/"}
    assert load_settings(**good, **hub).app_origin_template == good["app_origin_template"]
    with pytest.raises(SettingsError, match="REMOTEAPP_APP_ORIGIN_TEMPLATE: must look like"):
        load_settings(app_origin_template="https://apps.example.org/{url_id}", **hub)
    with pytest.raises(SettingsError, match="needs JUPYTERHUB_PUBLIC_URL"):
        load_settings(**good)
    with pytest.raises(SettingsError, match="needs REMOTEAPP_CONTAINER_ACCESS=gated"):
        load_settings(**good, **hub, container_access="direct")
    assert load_settings(app_origin_template="  ").app_origin_template is None


# ------------------------------------------------------------------------------ the stack
class LocalhostResolver(AbstractResolver):
    """Every name resolves to 127.0.0.1, as ``*.localhost`` does in Chromium."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == "127.0.0.1" or host.endswith(".localhost"), host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


class Browser(TestClient[Any, Any]):
    """A browser behind the proxy: absolute URLs allowed, application paths on the service's
    host sent to the gate with the service's ``Host``, redirects followed hop by hop."""

    def __init__(self, server: TestServer, gate_port: int) -> None:
        super().__init__(
            server,
            connector=aiohttp.TCPConnector(resolver=LocalhostResolver()),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        self.gate_port = gate_port
        self.service = f"127.0.0.1:{server.port}"
        self.last_url = URL()

    def make_url(self, path: Any) -> URL:
        url = URL(str(path))
        if url.absolute:
            return url
        return super().make_url(path)

    async def _request(self, method: str, path: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        follow = kwargs.pop("allow_redirects", True)
        url = self.make_url(path)  # where the browser thinks it is (not the gate's port)
        response = await self._hop(method, url, **kwargs)
        for _hop in range(10):
            if not follow or response.status not in _REDIRECTS:
                break
            url = url.join(URL(response.headers["Location"]))
            response.release()
            response = await self._hop("GET", url, headers=kwargs.get("headers"))
        self.last_url = url
        return response

    async def _hop(self, method: str, path: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        url = self.make_url(path)
        if url.host == "127.0.0.1" and url.path.startswith("/user/"):
            # The proxy sends application paths to the gate, Host and cookies as they came.
            jar = self.session.cookie_jar.filter_cookies(url)
            headers = dict(kwargs.pop("headers", None) or {})
            headers["Host"] = self.service
            if jar:
                headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in jar.items())
            gate = url.with_port(self.gate_port)
            response = await self.session.request(
                method, gate, headers=headers, allow_redirects=False, **kwargs
            )
            return response
        return await super()._request(method, url, allow_redirects=False, **kwargs)


@dataclass
class Stack:
    world: World
    sessions: Sessions
    client: Browser
    make_client: Callable[[], Awaitable[Browser]]
    gate_port: int
    template: str | None
    seen: list[dict[str, str]]

    async def start(self, user: str = "alice", policy: Policy | None = None) -> Session:
        async with self.world.database.unit_of_work() as uow:
            try:
                owner = await uow.users.get_by_name(user)
            except Exception:
                owner = await uow.users.add(user)
            try:
                application = await uow.applications.get_by_image(IMAGE)
            except Exception:
                application = await uow.applications.add(IMAGE)
            grant = await uow.grants.grant(owner, application, policy or Policy())
            await uow.commit()
        return await self.sessions.start(grant)

    async def share_link(self, session: Session) -> None:
        """The owner shares ``session`` with whoever holds its link, to view."""
        assert self.client.app is not None
        owner = AuthenticatedUser(session.user, admin=False)
        await self.client.app[SHARES].create(
            owner, session.url_id, ShareKind.LINK, "", ShareMode.VIEW
        )

    def app_url(self, session: Session, path: str = "/") -> str:
        assert self.template is not None
        return app_origin(self.template, session.url_id) + session.urlpath + path


def fake_application(seen: list[dict[str, str]]) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append({"path": request.raw_path, "host": request.host})
        return web.Response(
            text=f"app page {request.raw_path}",
            content_type="text/html",
            headers={"Service-Worker-Allowed": "/"},
        )

    app = web.Application()
    app.router.add_route("*", "/user/{name}/containers/{url_id}/{tail:.*}", echo)
    return app


async def _stack(
    aiohttp_server: Callable[..., Awaitable[TestServer]], *, app_hosts: bool
) -> AsyncIterator[Stack]:
    seen: list[dict[str, str]] = []
    upstream = await aiohttp_server(fake_application(seen))
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, LABELS)
    runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    world = World(runtime=runtime)
    for name in ("alice", "bob"):
        world.hub.add_user(name)
    world.hub.add_user("root", admin=True)
    service_port, gate_port = free_port(), free_port()
    template = APP_HOSTS % gate_port if app_hosts else None
    extra: dict[str, Any] = {}
    if template is not None:
        extra = {
            "app_origin_template": template,
            "jupyterhub_public_url": f"http://127.0.0.1:{service_port}/",
        }
    app = make_app(world, realm="isolation-unit", gate_url=f"http://127.0.0.1:{gate_port}", **extra)
    sessions = world.sessions
    server = TestServer(app, port=service_port)
    await server.start_server()
    clients: list[Browser] = []

    async def make_client() -> Browser:
        client = Browser(server, gate_port)
        await client.start_server()
        clients.append(client)
        return client

    client = await make_client()
    try:
        yield Stack(world, sessions, client, make_client, gate_port, template, seen)
    finally:
        for each in clients:
            await each.close()
        await server.close()


@pytest.fixture
async def shared(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Stack]:
    """Applications on the service's origin (the default)."""
    async for stack in _stack(aiohttp_server, app_hosts=False):
        yield stack


@pytest.fixture
async def hosts(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Stack]:
    """Each application on ``<url_id>.apps.localhost:<port>``."""
    async for stack in _stack(aiohttp_server, app_hosts=True):
        yield stack


def _xsrf(page: str) -> str:
    match = re.search(r'<meta name="xsrf-token" content="([^"]+)">', page)
    assert match, page[:400]
    return match.group(1)


# ------------------------------------------------------------------------------ shared origin
async def test_a_script_cannot_read_the_pages(shared: Stack) -> None:
    client = shared.client
    await sign_in(client, shared.world, "root")
    for page in (PREFIX, PREFIX + "admin/"):
        refused = await client.get(page, headers=SCRIPT_FETCH)
        assert refused.status == 403, page
        assert "xsrf-token" not in await refused.text()
        opened = await client.get(page, headers=NAVIGATION)
        assert opened.status == 200
        assert opened.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in opened.headers["Content-Security-Policy"]


async def test_a_script_cannot_read_the_api_without_the_pages_token(shared: Stack) -> None:
    client = shared.client
    await sign_in(client, shared.world, "alice")
    page = await (await client.get(PREFIX, headers=NAVIGATION)).text()
    token = _xsrf(page)
    applications = API + "v1/user"
    refused = await client.get(applications, headers=SCRIPT_FETCH)
    assert refused.status == 403
    assert (await refused.json())["type"] == "Forbidden"
    navigated = await client.get(applications, headers=NAVIGATION)  # e.g. an iframe
    assert navigated.status == 403
    wrong = await client.get(applications, headers={**SCRIPT_FETCH, "X-XSRFToken": "1.x"})
    assert wrong.status == 403
    ours = await client.get(applications, headers={**SCRIPT_FETCH, "X-XSRFToken": token})
    assert ours.status == 200
    # API clients (no browser headers) and hub tokens are unaffected.
    assert (await client.get(applications)).status == 200
    hub_token = shared.world.hub.issue_token("alice")
    other = await shared.make_client()
    with_token = await other.get(
        applications, headers={**SCRIPT_FETCH, "Authorization": f"token {hub_token}"}
    )
    assert with_token.status == 200
    # The API's description holds nothing of the user's: a browser may open it.
    assert (await client.get(API + "openapi.json", headers=NAVIGATION)).status == 200


async def test_the_service_cookies_are_invisible_to_scripts(shared: Stack) -> None:
    client = shared.client
    await sign_in(client, shared.world, "alice")
    session = await shared.start("alice")
    assert (await client.get(session.urlpath + "/")).status == 200
    for morsel in client.session.cookie_jar:
        assert morsel["httponly"], morsel.key
    assert cookie(client, XSRF_COOKIE)


async def test_an_application_cannot_widen_its_service_worker(shared: Stack) -> None:
    await sign_in(shared.client, shared.world, "alice")
    session = await shared.start("alice")
    response = await shared.client.get(session.urlpath + "/sw.js")
    assert response.status == 200
    assert "Service-Worker-Allowed" not in response.headers


async def test_the_entry_page_is_not_for_scripts(shared: Stack) -> None:
    await sign_in(shared.client, shared.world, "alice")
    session = await shared.start("alice")
    refused = await shared.client.get(PREFIX + "gate/" + session.url_id, headers=SCRIPT_FETCH)
    assert refused.status == 403
    assert cookie(shared.client, GATE_COOKIE) is None


# ------------------------------------------------------------------------------ admins
async def test_an_admin_confirms_before_entering_and_it_is_logged(shared: Stack) -> None:
    session = await shared.start("alice")
    client = shared.client
    await sign_in(client, shared.world, "root")
    confirmation = await client.get(session.urlpath + "/")
    assert confirmation.status == 200
    page = await confirmation.text()
    assert "You are about to enter alice's session" in page
    assert shared.seen == []  # nothing reached the application
    assert cookie(client, GATE_COOKIE) is None
    assert "frame-ancestors 'none'" in confirmation.headers["Content-Security-Policy"]
    # The button without the page's token (a forged form) is refused.
    forged = await client.post(confirmation.url.path, data={"next": session.urlpath + "/"})
    assert forged.status == 403
    assert cookie(client, GATE_COOKIE) is None
    with structlog.testing.capture_logs() as logs:
        entered = await confirm_entry(client, confirmation)
    assert entered.status == 200
    assert await entered.text() == f"app page {session.urlpath}/"
    events = [entry for entry in logs if entry["event"] == "enter"]
    assert events == [
        {
            "event": "enter",
            "log_level": "info",
            "actor": "root",
            "owner": "alice",
            "url_id": session.url_id,
        }
    ]
    # Once in, the admin's cookie opens the application without asking again.
    assert (await client.get(session.urlpath + "/more")).status == 200


async def test_owners_and_viewers_are_not_asked(shared: Stack) -> None:
    session = await shared.start("alice")
    await sign_in(shared.client, shared.world, "alice")
    assert await (await shared.client.get(session.urlpath + "/")).text() == (
        f"app page {session.urlpath}/"
    )
    shared_session = await shared.start("bob", Policy(allow_view=True))
    await shared.share_link(shared_session)
    admin = await shared.make_client()
    await sign_in(admin, shared.world, "root")
    # Bob shared it by link: the admin flag is not what lets them in.
    assert (await admin.get(shared_session.urlpath + "/")).status == 200
    assert "enter-confirm" not in await (await admin.get(shared_session.urlpath + "/x")).text()


async def test_an_admin_token_does_not_enter_someone_elses_application(shared: Stack) -> None:
    session = await shared.start("alice")
    token = shared.world.hub.issue_token("root")
    other = await shared.make_client()
    refused = await other.get(session.urlpath + "/", headers={"Authorization": f"token {token}"})
    assert refused.status == 403
    assert shared.seen == []
    owner = shared.world.hub.issue_token("alice")
    allowed = await other.get(session.urlpath + "/", headers={"Authorization": f"token {owner}"})
    assert allowed.status == 200


async def test_the_confirmation_escapes_the_owner_name(shared: Stack) -> None:
    name = '<img src=x onerror="alert(1)">'
    shared.world.hub.add_user(name)
    session = await shared.start(name)
    await sign_in(shared.client, shared.world, "root")
    page = await (await shared.client.get(PREFIX + "gate/" + session.url_id)).text()
    assert "<img" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


# ------------------------------------------------------------------------------ own hosts
async def test_an_application_opens_on_its_own_host(hosts: Stack) -> None:
    session = await hosts.start("alice")
    client = hosts.client
    await sign_in(client, hosts.world, "alice")
    # The page's iframe asks for the path on the service's host: it ends on the app's host.
    response = await client.get(f"http://{client.service}{session.urlpath}/page?x=1")
    assert response.status == 200
    assert str(client.last_url) == hosts.app_url(session, "/page?x=1")
    assert hosts.seen[-1]["host"] == urlsplit(hosts.app_url(session)).netloc
    # Its cookie belongs to that host alone.
    jar = client.session.cookie_jar
    assert GATE_COOKIE in jar.filter_cookies(URL(hosts.app_url(session)))
    elsewhere = (
        f"http://{client.service}{session.urlpath}/",
        f"http://other.apps.localhost:{hosts.gate_port}{session.urlpath}/",
        f"http://apps.localhost:{hosts.gate_port}{session.urlpath}/",
    )
    for url in elsewhere:
        assert GATE_COOKIE not in jar.filter_cookies(URL(url)), url
    again = await client.get(hosts.app_url(session, "/next"), allow_redirects=False)
    assert again.status == 200


async def test_the_service_host_never_serves_an_application(hosts: Stack) -> None:
    session = await hosts.start("alice")
    client = hosts.client
    await sign_in(client, hosts.world, "alice")
    assert (await client.get(hosts.app_url(session))).status == 200
    seen = len(hosts.seen)
    on_service = await client.get(
        f"http://{client.service}{session.urlpath}/", allow_redirects=False
    )
    assert on_service.status == 302
    assert on_service.headers["Location"] == (
        f"http://{client.service}{PREFIX}gate/{session.url_id}?next="
        + quote(session.urlpath + "/", safe="")
    )
    posted = await client.post(f"http://{client.service}{session.urlpath}/x", data=b"")
    assert posted.status == 404
    assert len(hosts.seen) == seen


async def test_one_applications_host_does_not_serve_another(hosts: Stack) -> None:
    alices = await hosts.start("alice")
    carols = await hosts.start("bob")
    client = hosts.client
    await sign_in(client, hosts.world, "root")
    assert (await client.get(hosts.app_url(alices))).status == 200
    # Bob's path asked for on the host of Alice's application.
    host = urlsplit(hosts.app_url(alices)).netloc
    crossed = await client.get(f"http://{host}{carols.urlpath}/", allow_redirects=False)
    assert crossed.status == 302
    assert crossed.headers["Location"].startswith(f"http://{client.service}{PREFIX}gate/")


async def test_a_ticket_works_once_on_its_own_host_and_briefly(hosts: Stack) -> None:
    alices = await hosts.start("alice")
    bobs = await hosts.start("bob", Policy(allow_view=True))
    await hosts.share_link(bobs)
    client = hosts.client
    await sign_in(client, hosts.world, "alice")

    async def ticket_url(session: Session) -> str:
        entry = await client.get(PREFIX + "gate/" + session.url_id, allow_redirects=False)
        assert entry.status == 302
        location = entry.headers["Location"]
        assert location.startswith(hosts.app_url(session, ENTER_PATH + "?ticket="))
        return location

    first = await ticket_url(alices)
    stranger = await hosts.make_client()  # a leaked ticket is spent by whoever uses it first
    assert (await stranger.get(first)).status == 200
    assert (await client.get(first)).status == 403

    # A ticket for Bob's application is worthless on Alice's host (and spent by trying).
    bobs_ticket = await ticket_url(bobs)
    query = urlsplit(bobs_ticket).query
    alice_host = urlsplit(hosts.app_url(alices)).netloc
    misplaced = await client.get(f"http://{alice_host}{alices.urlpath}{ENTER_PATH}?{query}")
    assert misplaced.status == 403
    assert (await client.get(bobs_ticket)).status == 403

    late = await ticket_url(alices)
    hosts.world.clock.advance(TICKET_TTL + 1)
    assert (await client.get(late)).status == 403
    assert cookie(client, GATE_COOKIE) is None


async def test_the_app_host_sends_strangers_to_the_service(hosts: Stack) -> None:
    session = await hosts.start("alice")
    stranger = await hosts.make_client()
    response = await stranger.get(hosts.app_url(session, "/deep"), allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == (
        f"http://{stranger.service}{PREFIX}gate/{session.url_id}?next="
        + quote(session.urlpath + "/deep", safe="")
    )


async def test_the_user_page_may_frame_the_application_hosts(hosts: Stack) -> None:
    await sign_in(hosts.client, hosts.world, "alice")
    page = await hosts.client.get(PREFIX, headers=NAVIGATION)
    assert page.status == 200
    policy = page.headers["Content-Security-Policy"]
    assert f"frame-src 'self' http://*.apps.localhost:{hosts.gate_port}" in policy


async def test_an_admin_confirms_and_lands_on_the_applications_host(hosts: Stack) -> None:
    session = await hosts.start("alice")
    client = hosts.client
    await sign_in(client, hosts.world, "root")
    confirmation = await client.get(f"http://{client.service}{session.urlpath}/")
    assert 'id="enter-confirm"' in await confirmation.text()
    # The button's answer is a redirect to the application's host: the page lets forms go
    # there (browsers check form-action along redirects).
    policy = confirmation.headers["Content-Security-Policy"]
    assert f"form-action 'self' http://*.apps.localhost:{hosts.gate_port}" in policy
    entered = await confirm_entry(client, confirmation)
    assert entered.status == 200
    assert str(client.last_url) == hosts.app_url(session)
    assert await entered.text() == f"app page {session.urlpath}/"


async def test_a_viewers_cookie_does_not_outlive_the_sharing_for_an_admin(shared: Stack) -> None:
    viewed = await shared.start("bob", Policy(allow_view=True))
    await shared.share_link(viewed)
    entered = await shared.start("alice")
    client = shared.client
    await sign_in(client, shared.world, "root")
    assert (await client.get(viewed.urlpath + "/")).status == 200  # shared: not asked
    confirmation = await client.get(entered.urlpath + "/")
    assert (await confirm_entry(client, confirmation)).status == 200
    async with shared.world.database.unit_of_work() as uow:
        await uow.grants.revoke(viewed.mapping_id)
        await uow.commit()
    shared.world.clock.advance(11)  # past the kept target and the kept decision
    # The admin flag alone now lets the admin in: that takes a confirmed entry.
    refused = await client.get(viewed.urlpath + "/again", allow_redirects=False)
    assert refused.status == 403
    assert (await client.get(entered.urlpath + "/again")).status == 200


def test_any_app_host() -> None:
    https = "https://{url_id}.apps.example.org"
    assert is_any_app_host(https, "abc123.apps.example.org")
    assert is_any_app_host(https, "ABC123.apps.example.org:443")
    assert not is_any_app_host(https, "apps.example.org")
    assert not is_any_app_host(https, "a.b.apps.example.org")
    assert not is_any_app_host(https, "example.org")
    assert not is_any_app_host(https, "abc.apps.example.org.evil.net")
    assert not is_any_app_host(https, "abc.apps.example.org:8443")


async def test_the_service_does_not_answer_on_an_applications_host(hosts: Stack) -> None:
    session = await hosts.start("alice")
    client = hosts.client
    await sign_in(client, hosts.world, "alice")
    app_host = urlsplit(hosts.app_url(session)).netloc
    for path in (PREFIX, PREFIX + "admin/", API + "v1/user", PREFIX + "health"):
        response = await client.get(f"http://{app_host}{path}", allow_redirects=False)
        assert response.status == 404, path
    assert (await client.get(PREFIX + "health")).status in (200, 503)
