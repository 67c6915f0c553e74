"""The gate in front of running applications: who gets in, and what reaches the application.

The browser here is a client that sends application paths to the gate's listener and every
other path to the service, with one cookie jar: what the proxy does for a real browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.domain.shares import Share, ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import ControlAction
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.gate.upstream import WRITE_HIGH
from remoteappmanager.web.keys import GATE, SHARES
from tests.support.services import free_port
from tests.support.webapp import (
    PREFIX,
    World,
    confirm_entry,
    cookie,
    make_app,
    sign_in,
)

IMAGE = "remoteapp-test/gated:latest"
LABELS = {"eu.simphony-project.docker.type": "webapp"}
GATE_ENTRY = PREFIX + "gate/"

Client = TestClient[Any, Any]


# The service runs on uvloop; every test runs on it and on asyncio's own loop.
EVENT_LOOPS = ("asyncio", "uvloop")
HUGE = 64 * 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ProxiedClient(TestClient[Any, Any]):
    """A browser behind the proxy: ``/user/...`` goes to the gate, the rest to the service."""

    def __init__(self, server: TestServer, gate_port: int) -> None:
        super().__init__(server)
        self.gate = URL(f"http://127.0.0.1:{gate_port}")

    def make_url(self, path: Any) -> URL:
        if str(path).startswith("/user/"):
            return self.gate.join(URL(str(path)))
        return super().make_url(path)

    async def _request(self, method: str, path: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        # Redirects are followed here so that each hop goes where the proxy would send it.
        follow = kwargs.pop("allow_redirects", True)
        response = await super()._request(method, path, allow_redirects=False, **kwargs)
        for _hop in range(10):
            if not follow or response.status not in _REDIRECTS:
                break
            location = response.headers["Location"]
            response.release()
            response = await super()._request("GET", location, allow_redirects=False)
        return response


# ------------------------------------------------------------------------------ the fake app
@dataclass
class Upstream:
    """What the fake application saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    ws_closes: list[int | None] = field(default_factory=list)
    ws_protocols: list[str | None] = field(default_factory=list)
    streamed: int = 0


def fake_application(seen: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.requests.append(
            {
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": [(k, v) for k, v in request.headers.items()],
                "body_sha": hashlib.sha256(body).hexdigest(),
                "body_len": len(body),
            }
        )
        return web.json_response({"path": request.raw_path, "len": len(body)})

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(64):
            await response.write(bytes([i]) * 32768)
        await response.write_eof()
        return response

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = HUGE
        await response.prepare(request)
        block = bytes(range(256)) * 1024
        for _ in range(HUGE // len(block)):
            await response.write(block)
            seen.streamed += len(block)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        headers = {"ETag": '"v1"'} if code == 304 else {}
        return web.Response(status=code, headers=headers)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Trailing": "yes"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"first,", b"", b"second,", b"x" * 70000):
            if piece:
                await response.write(piece)
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=302, headers={"Location": "/somewhere/else?x=1"})
        response.set_cookie("app-cookie", "yes", path="/")
        response.set_cookie("remoteapp-session", "planted", path=PREFIX)
        return response

    async def websocket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("binary",))
        await ws.prepare(request)
        seen.ws_protocols.append(ws.ws_protocol)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                if message.data == "close-please":
                    await ws.close(code=4001, message=b"bye")
                    break
                await ws.send_str("echo:" + message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        seen.ws_closes.append(ws.close_code)
        return ws

    app = web.Application(client_max_size=64 * 1024 * 1024)
    base = "/user/{name}/containers/{url_id}"
    app.router.add_get(base + "/big", big)
    app.router.add_get(base + "/huge", huge)
    app.router.add_get(base + "/chunked", chunked)
    app.router.add_route("*", base + "/status/{code:[0-9]+}", status)
    app.router.add_get(base + "/redirect", redirect)
    app.router.add_get(base + "/ws", websocket)
    app.router.add_route("*", base + "/{tail:.*}", echo)
    return app


# ------------------------------------------------------------------------------ the service
@dataclass
class Stack:
    world: World
    runtime: InMemoryRuntime
    sessions: Sessions
    seen: Upstream
    client: Client
    make_client: Callable[[], Awaitable[Client]]
    gate_port: int

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


@pytest.fixture
async def stack(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Stack]:
    seen = Upstream()
    upstream = await aiohttp_server(fake_application(seen))
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, LABELS)
    # Every container the fake engine starts is "published" on the fake application's port.
    runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    world = World(runtime=runtime)
    for name in ("alice", "bob", "carol"):
        world.hub.add_user(name)
    world.hub.add_user("root", admin=True)
    app = make_app(world, realm="gate-unit")
    sessions = world.sessions
    server = TestServer(app)
    await server.start_server()
    gate_port = app[GATE].server.port
    clients: list[Client] = []

    async def make_client() -> Client:
        client = ProxiedClient(server, gate_port)
        await client.start_server()
        clients.append(client)
        return client

    client = await make_client()
    try:
        yield Stack(world, runtime, sessions, seen, client, make_client, gate_port)
    finally:
        for each in clients:
            await each.close()
        await server.close()


async def enter(client: Client, path: str) -> aiohttp.ClientResponse:
    """A browser opening ``path``: redirects followed, cookies kept."""
    return await client.get(path)


def same_origin(stack: Stack) -> str:
    """The origin of pages behind this proxy (the gate's address stands in for it here)."""
    return f"http://127.0.0.1:{stack.gate_port}"


def headers_seen(stack: Stack, index: int = -1) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in stack.seen.requests[index]["headers"]:
        result.setdefault(name.lower(), []).append(value)
    return result


# ------------------------------------------------------------------------------ anonymous
async def test_anonymous_page_visit_goes_to_the_gate_page(stack: Stack) -> None:
    session = await stack.start()
    path = session.urlpath + "/index.html?a=1&b=%26x"
    response = await stack.client.get(path, allow_redirects=False)
    assert response.status == 302
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.path == GATE_ENTRY + session.url_id
    assert parse_qs(parts.query)["next"] == [path]
    assert stack.seen.requests == []


async def test_anonymous_api_and_websocket_get_401_without_content(stack: Stack) -> None:
    session = await stack.start()
    response = await stack.client.post(session.urlpath + "/api", data=b"x")
    assert response.status == 401
    assert len(await response.read()) < 1024
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect(
            session.urlpath + "/ws", protocols=("binary",), origin=same_origin(stack)
        )
    assert refused.value.status == 401
    assert stack.seen.requests == []
    assert stack.seen.ws_protocols == []


async def test_the_gate_page_asks_anonymous_browsers_to_sign_in(stack: Stack) -> None:
    session = await stack.start()
    entry = GATE_ENTRY + session.url_id + "?next=" + quote(session.urlpath + "/", safe="")
    response = await stack.client.get(entry, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/hub/api/oauth2/authorize")


async def test_unknown_application_and_wrong_owner_segment_are_404(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    unknown = session.urlpath.replace(session.url_id, "z" * 26) + "/"
    assert (await stack.client.get(unknown, allow_redirects=False)).status == 404
    other_name = session.urlpath.replace("/user/alice/", "/user/bob/") + "/"
    response = await stack.client.get(other_name, allow_redirects=False)
    assert response.status == 404
    assert (await stack.client.get(GATE_ENTRY + "z" * 26)).status == 404
    assert len(stack.seen.requests) == 1


# ------------------------------------------------------------------------------ who gets in
async def test_owner_gets_in_with_a_scoped_cookie(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    first = await stack.client.get(session.urlpath + "/", allow_redirects=False)
    entry = await stack.client.get(first.headers["Location"], allow_redirects=False)
    assert entry.status == 302
    assert entry.headers["Location"] == session.urlpath + "/"
    set_cookie = entry.headers["Set-Cookie"]
    assert set_cookie.startswith(GATE_COOKIE + "=")
    assert f"Path={session.urlpath}/" in set_cookie
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    response = await stack.client.get(session.urlpath + "/page?q=1")
    assert response.status == 200
    assert (await response.json())["path"] == session.urlpath + "/page?q=1"


async def test_bare_application_path_gets_its_slash(stack: Stack) -> None:
    session = await stack.start()
    response = await stack.client.get(session.urlpath + "?x=1", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == session.urlpath + "/?x=1"


async def test_another_user_is_refused(stack: Stack) -> None:
    session = await stack.start("alice")
    await sign_in(stack.client, stack.world, "bob")
    response = await enter(stack.client, session.urlpath + "/")
    assert response.status == 403
    assert cookie(stack.client, GATE_COOKIE) is None
    assert stack.seen.requests == []


async def share(
    stack: Stack,
    session: Session,
    kind: ShareKind = ShareKind.USER,
    subject: str = "bob",
    mode: ShareMode = ShareMode.CONTROL,
) -> Share:
    """The owner shares ``session`` (as the share dialog does)."""
    assert stack.client.app is not None
    owner = AuthenticatedUser(session.user, admin=False)
    return await stack.client.app[SHARES].create(owner, session.url_id, kind, subject, mode)


async def test_another_user_gets_in_when_a_share_names_them(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session)
    await sign_in(stack.client, stack.world, "bob")
    response = await enter(stack.client, session.urlpath + "/shared")
    assert response.status == 200
    assert len(stack.seen.requests) == 1


async def test_holding_the_address_is_not_enough_without_a_share(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session, subject="carol")
    await sign_in(stack.client, stack.world, "bob")
    response = await enter(stack.client, session.urlpath + "/shared")
    assert response.status == 403
    assert stack.seen.requests == []


async def test_a_link_share_lets_anyone_signed_in_with_the_address_in(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session, ShareKind.LINK, "")
    await sign_in(stack.client, stack.world, "bob")
    assert (await enter(stack.client, session.urlpath + "/shared")).status == 200


async def test_a_share_without_allow_view_opens_nothing(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session)
    async with stack.world.database.unit_of_work() as uow:
        grant = await uow.grants.get(session.mapping_id)
        await uow.grants.revoke(session.mapping_id)
        await uow.grants.grant(grant.user, grant.application, Policy())
        await uow.commit()
    await sign_in(stack.client, stack.world, "bob")
    assert (await enter(stack.client, session.urlpath + "/shared")).status == 403


async def test_a_viewer_of_a_web_application_reads_but_does_not_act(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session, mode=ShareMode.VIEW)
    await sign_in(stack.client, stack.world, "bob")
    assert (await enter(stack.client, session.urlpath + "/page")).status == 200
    posted = await stack.client.post(session.urlpath + "/act", data=b"delete everything")
    assert posted.status == 403
    assert not any(r["path_qs"].endswith("/act") for r in stack.seen.requests)
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    mode, viewer = gate.viewers[(session.url_id, "bob")]
    assert (mode, viewer.input_allowed, viewer.protocol) == (ShareMode.VIEW, False, "web")
    # The owner hands control over: the same viewer's input now counts, at once.
    owner = AuthenticatedUser("alice", admin=False)
    shares = stack.client.app[SHARES]
    bob = AuthenticatedUser("bob", admin=False)
    await shares.control(bob, session.url_id, ControlAction.REQUEST)
    await shares.control(owner, session.url_id, ControlAction.GIVE, "bob")
    assert viewer.input_allowed
    assert (await stack.client.post(session.urlpath + "/act", data=b"x")).status == 200
    await shares.control(owner, session.url_id, ControlAction.TAKE)
    assert not viewer.input_allowed
    assert (await stack.client.post(session.urlpath + "/act", data=b"x")).status == 403


async def test_deleting_a_share_closes_the_viewers_websocket_at_once(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    made = await share(stack, session)
    await sign_in(stack.client, stack.world, "bob")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    ws = await open_ws(stack, session)
    assert stack.client.app is not None
    await stack.client.app[SHARES].delete(
        AuthenticatedUser("alice", admin=False), session.url_id, made.id
    )
    assert await closed_within(ws, 2)
    assert (await enter(stack.client, session.urlpath + "/")).status == 403


async def test_admin_gets_in_after_confirming(stack: Stack) -> None:
    session = await stack.start("alice")
    await sign_in(stack.client, stack.world, "root")
    response = await confirm_entry(stack.client, await enter(stack.client, session.urlpath + "/"))
    assert response.status == 200
    assert len(stack.seen.requests) == 1


async def test_a_cookie_for_one_application_does_not_open_another(stack: Stack) -> None:
    alices = await stack.start("alice")
    carols = await stack.start("carol")
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, alices.urlpath + "/")).status == 200
    value = cookie(stack.client, GATE_COOKIE)
    assert value is not None
    other = await stack.make_client()
    response = await other.post(
        carols.urlpath + "/", data=b"x", headers={"Cookie": f"{GATE_COOKIE}={value}"}
    )
    assert response.status == 401


async def test_a_forged_cookie_is_worthless(stack: Stack) -> None:
    session = await stack.start()
    response = await stack.client.post(
        session.urlpath + "/", headers={"Cookie": f"{GATE_COOKIE}=abc.123.def"}
    )
    assert response.status == 401


async def test_hub_token_clients_get_in_and_the_token_is_not_forwarded(stack: Stack) -> None:
    session = await stack.start("alice")
    token = stack.world.hub.issue_token("alice")
    response = await stack.client.post(
        session.urlpath + "/api", data=b"{}", headers={"Authorization": f"token {token}"}
    )
    assert response.status == 200
    assert "authorization" not in headers_seen(stack)
    bobs = stack.world.hub.issue_token("bob")
    response = await stack.client.get(
        session.urlpath + "/api", headers={"Authorization": f"token {bobs}"}
    )
    assert response.status == 403
    response = await stack.client.get(
        session.urlpath + "/api", headers={"Authorization": "token not-a-token"}
    )
    assert response.status == 401


# ------------------------------------------------------------------------------ what is forwarded
async def test_our_cookies_and_tokens_never_reach_the_application(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    gate_cookie = cookie(stack.client, GATE_COOKIE)
    service_cookie = cookie(stack.client, "remoteapp-session")
    assert gate_cookie
    assert service_cookie
    # Browsers send only the cookies whose path matches; here they are all sent by hand.
    all_cookies = (
        f"theme=dark; {GATE_COOKIE}={gate_cookie}; remoteapp-session={service_cookie}; "
        "_xsrf=abc; remoteapp-oauth-xyz=s; jupyterhub-session-id=s; app-session=42"
    )
    response = await stack.client.get(
        session.urlpath + "/page",
        headers={"Cookie": all_cookies, "Authorization": "Basic dXNlcjpwdw=="},
    )
    assert response.status == 200
    seen = headers_seen(stack)
    assert len(seen["cookie"]) == 1
    assert sorted(seen["cookie"][0].split("; ")) == ["app-session=42", "theme=dark"]
    assert seen["authorization"] == ["Basic dXNlcjpwdw=="]

    hub_token = stack.world.hub.issue_token("alice")
    response = await stack.client.post(
        session.urlpath + "/form",
        data=b"payload",
        headers={"Cookie": f"{GATE_COOKIE}={gate_cookie}", "Authorization": f"token {hub_token}"},
    )
    assert response.status == 200
    seen = headers_seen(stack)
    assert "cookie" not in seen
    assert "authorization" not in seen
    assert stack.seen.requests[-1]["body_len"] == len(b"payload")


async def test_host_and_forwarding_headers(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    response = await stack.client.get(
        session.urlpath + "/h",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Accept-Encoding": "gzip",
        },
    )
    assert response.status == 200
    seen = headers_seen(stack)
    assert seen["host"] == [f"127.0.0.1:{stack.gate_port}"]
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{stack.gate_port}"]
    assert "x-secret-hop" not in seen
    assert seen["accept-encoding"] == ["gzip"]
    assert "x-request-id" in seen


async def test_large_bodies_stream_both_ways(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    response = await stack.client.get(session.urlpath + "/big")
    body = await response.read()
    assert response.status == 200
    assert body == b"".join(bytes([i]) * 32768 for i in range(64))

    payload = bytes(range(256)) * 8192  # 2 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    response = await stack.client.put(session.urlpath + "/upload", data=chunks())
    assert response.status == 200
    assert stack.seen.requests[-1]["body_sha"] == hashlib.sha256(payload).hexdigest()


async def test_head_and_other_methods(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    assert (await stack.client.head(session.urlpath + "/x")).status == 200
    assert (await stack.client.delete(session.urlpath + "/x")).status == 200
    assert [r["method"] for r in stack.seen.requests[-2:]] == ["HEAD", "DELETE"]


async def test_redirects_pass_through_and_our_cookies_cannot_be_planted(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    planted_before = cookie(stack.client, "remoteapp-session")
    response = await stack.client.get(session.urlpath + "/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/somewhere/else?x=1"
    set_cookies = response.headers.getall("Set-Cookie")
    assert any(c.startswith("app-cookie=yes") for c in set_cookies)
    assert not any(c.startswith("remoteapp-session=") for c in set_cookies)
    assert cookie(stack.client, "remoteapp-session") == planted_before


# ------------------------------------------------------------------------------ next= checks
@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/",
        "https://evil.example/user/alice/containers/",
        "/services/remoteapp/",
        "{base}/../../bob/containers/x/",
        "{base}/%2e%2e/%2e%2e/",
        "{base}\\..\\",
        "{base}x/",
        "{base}/\r\nSet-Cookie: a=b",
    ],
)
async def test_the_gate_page_refuses_to_send_the_browser_elsewhere(
    stack: Stack, next_url: str
) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    target = next_url.format(base=session.urlpath)
    response = await stack.client.get(
        GATE_ENTRY + session.url_id, params={"next": target}, allow_redirects=False
    )
    assert response.status == 400
    assert "Location" not in response.headers
    assert cookie(stack.client, GATE_COOKIE) is None


# ------------------------------------------------------------------------------ access ends
async def test_signing_out_ends_container_access(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    gate_cookie = cookie(stack.client, GATE_COOKIE)
    xsrf = {"X-XSRFToken": cookie(stack.client, "_xsrf") or ""}
    signed_out = await stack.client.post(PREFIX + "logout", headers=xsrf, allow_redirects=False)
    assert signed_out.status == 302
    # The cookie is still in this browser (its path is the application's), but worthless.
    response = await stack.client.post(
        session.urlpath + "/x", headers={"Cookie": f"{GATE_COOKIE}={gate_cookie}"}
    )
    assert response.status == 401
    response = await stack.client.get(session.urlpath + "/x", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith(GATE_ENTRY)


async def test_hub_logout_ends_container_access_once_the_decision_expires(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    stack.world.hub.revoke_user("alice")
    stack.world.hub_changed()  # the hub's cached answer expires; the decision's (5 s) too
    response = await stack.client.post(session.urlpath + "/x", data=b"")
    assert response.status == 401


async def test_lost_admin_rights_end_access_once_the_decision_expires(stack: Stack) -> None:
    session = await stack.start("alice")
    await sign_in(stack.client, stack.world, "root")
    confirmation = await enter(stack.client, session.urlpath + "/")
    assert (await confirm_entry(stack.client, confirmation)).status == 200
    stack.world.hub.set_admin("root", False)
    assert (await stack.client.get(session.urlpath + "/")).status == 200  # decision kept
    stack.world.hub_changed()
    assert (await stack.client.get(session.urlpath + "/")).status == 403


async def test_a_stopped_application_is_404_at_once(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    await stack.sessions.stop("alice", session.url_id)
    response = await stack.client.get(session.urlpath + "/", allow_redirects=False)
    assert response.status == 404
    assert len(stack.seen.requests) == 1


async def test_the_hot_path_asks_neither_engine_nor_hub(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    stack.runtime.available = False
    stack.world.hub.available = False
    for _ in range(3):
        assert (await stack.client.get(session.urlpath + "/again")).status == 200


async def test_an_application_that_stopped_answering_is_503(stack: Stack) -> None:
    stack.runtime._ports = itertools.repeat(free_port())  # type: ignore[assignment]
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    response = await enter(stack.client, session.urlpath + "/")
    assert response.status == 503
    assert stack.client.app is not None
    assert stack.client.app[GATE].access.cached_target(session.url_id) is None


# ------------------------------------------------------------------------------ WebSocket
async def test_websocket_both_ways_with_subprotocol_and_close_codes(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    ws = await stack.client.ws_connect(
        session.urlpath + "/ws", protocols=("binary", "base64"), origin=same_origin(stack)
    )
    assert ws.protocol == "binary"
    await ws.send_str("hello")
    assert (await ws.receive_str()) == "echo:hello"
    frame = bytes(range(256)) * 256
    await ws.send_bytes(frame)
    assert (await ws.receive_bytes()) == frame[::-1]
    await ws.close(code=4000)
    assert stack.seen.ws_protocols == ["binary"]
    for _ in range(100):
        if stack.seen.ws_closes:
            break
        await asyncio.sleep(0.01)
    assert stack.seen.ws_closes == [4000]


async def test_websocket_close_from_the_application_reaches_the_browser(stack: Stack) -> None:
    session = await stack.start()
    await sign_in(stack.client, stack.world, "alice")
    await enter(stack.client, session.urlpath + "/")
    ws = await stack.client.ws_connect(
        session.urlpath + "/ws", protocols=("binary",), origin=same_origin(stack)
    )
    await ws.send_str("close-please")
    message = await ws.receive()
    assert message.type is WSMsgType.CLOSE
    assert message.data == 4001
    await ws.close()
    assert ws.close_code == 4001


# ------------------------------------------------------------------------------ direct mode
async def test_direct_mode_mounts_no_gate(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    app = make_app(World(), realm="gate-unit", container_access="direct")
    assert GATE not in app
    client = await aiohttp_client(app)
    url_id = "a" * 26
    assert (await client.get(f"/user/alice/containers/{url_id}/")).status == 404
    assert (await client.get(GATE_ENTRY + url_id)).status == 404


# ------------------------------------------------------------------------------ byte by byte
@dataclass
class RawResponse:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class RawConnection:
    """One connection to the gate's listener, written and read by hand (as the proxy would)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024 * 1024)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, list[str]]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers

    async def response(self, *, to_head: bool = False) -> RawResponse:
        status, headers = await self.head()
        if 100 <= status < 200:
            return await self.response(to_head=to_head)
        if to_head or status in (204, 304):
            return RawResponse(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", [""])[-1]:
            body = bytearray()
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readline() != b"\r\n":
                        pass
                    return RawResponse(status, headers, bytes(body))
                body += await self.reader.readexactly(size)
                assert await self.reader.readexactly(2) == b"\r\n"
        if "content-length" in headers:
            length = int(headers["content-length"][0])
            return RawResponse(status, headers, await self.reader.readexactly(length))
        return RawResponse(status, headers, await self.reader.read())

    async def closed(self) -> bool:
        """Whether the gate closes the connection (nothing more arrives) within a few seconds."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), 5)
        except (TimeoutError, ConnectionError):
            return False
        return rest == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def request(path: str, cookie: str | None = None, *, method: str = "GET", extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gate.test"]
    if cookie is not None:
        lines.append(f"Cookie: theme=dark; {GATE_COOKIE}={cookie}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def gate_cookie(client: Client, session: Session) -> str:
    for morsel in client.session.cookie_jar:
        if morsel.key == GATE_COOKIE and morsel["path"] == session.urlpath + "/":
            return morsel.value
    raise AssertionError(f"no gate cookie for {session.urlpath}")


async def entered(
    stack: Stack, user: str = "alice", as_user: str | None = None
) -> tuple[Session, str]:
    """A running application of ``user``, and the gate cookie of a browser let in to it."""
    session = await stack.start(user)
    if cookie(stack.client, "remoteapp-session") is None:
        await sign_in(stack.client, stack.world, as_user or user)
    response = await enter(stack.client, session.urlpath + "/")
    if as_user is not None and as_user != user:
        response = await confirm_entry(stack.client, response)
    assert response.status == 200
    return session, gate_cookie(stack.client, session)


def gate_buffers(stack: Stack) -> int:
    """The most any connection from the proxy holds in the gate's write buffer right now."""
    assert stack.client.app is not None
    connections = stack.client.app[GATE].server.connections
    return max((c.transport.get_write_buffer_size() for c in connections if c.transport), default=0)


async def test_pipelined_requests_are_answered_in_order(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    base = session.urlpath
    await conn.send(request(base + "/one", value) + request(base + "/two?x=1", value))
    await conn.send(request(base + "/three", value, method="DELETE"))
    answers = [json.loads((await conn.response()).body)["path"] for _ in range(3)]
    assert answers == [base + "/one", base + "/two?x=1", base + "/three"]
    assert [r["path_qs"] for r in stack.seen.requests[-3:]] == answers
    await conn.close()


async def test_a_chunked_request_body_reaches_the_application(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(
        request(
            session.urlpath + "/upload", value, method="POST", extra="Transfer-Encoding: chunked"
        )
    )
    for piece in (b"5\r\nhello\r\n", b"6\r\n wor", b"ld\r\n", b"0\r\n\r\n"):
        await conn.send(piece)
        await asyncio.sleep(0.01)
    response = await conn.response()
    assert response.status == 200
    assert stack.seen.requests[-1]["body_sha"] == hashlib.sha256(b"hello world").hexdigest()
    assert "transfer-encoding" in headers_seen(stack)
    await conn.send(request(session.urlpath + "/after", value))
    assert (await conn.response()).status == 200
    await conn.close()


async def test_a_chunked_answer_passes_as_it_is_and_the_connection_carries_on(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/chunked", value))
    response = await conn.response()
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"first,second," + b"x" * 70000
    await conn.send(request(session.urlpath + "/next", value))
    assert (await conn.response()).status == 200
    await conn.close()


async def test_head_204_and_304_answers_have_no_body(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    base = session.urlpath
    await conn.send(request(base + "/status/200", value, method="HEAD"))
    head = await conn.response(to_head=True)
    assert head.status == 200
    await conn.send(request(base + "/big", value, method="HEAD"))
    assert (await conn.response(to_head=True)).status == 200
    await conn.send(request(base + "/status/204", value))
    assert (await conn.response()).status == 204
    await conn.send(request(base + "/status/304", value, extra='If-None-Match: "v1"'))
    not_modified = await conn.response()
    assert not_modified.status == 304
    assert not_modified.header("etag") == '"v1"'
    # Had the gate waited for a body after any of them, this answer would never come.
    await conn.send(request(base + "/last", value))
    last = await conn.response()
    assert last.status == 200
    assert b"/last" in last.body
    await conn.close()


async def test_head_requests_refused_by_the_gate_get_no_body(stack: Stack) -> None:
    session = await stack.start()
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/x", method="HEAD"))
    refused = await conn.response(to_head=True)
    assert refused.status == 302
    await conn.send(request(session.urlpath + "/x", method="PUT", extra="Content-Length: 0"))
    assert (await conn.response()).status == 401
    await conn.close()


async def test_a_huge_answer_streams_in_constant_memory(stack: Stack) -> None:
    session, value = await entered(stack)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/huge", value))
    status, headers = await conn.head()
    assert status == 200
    assert headers["content-length"] == [str(HUGE)]
    received = 0
    most_buffered = most_in_flight = 0
    digest = hashlib.sha256()
    while received < HUGE:
        data = await asyncio.wait_for(conn.reader.read(1024 * 1024), 10)
        assert data
        received += len(data)
        digest.update(data)
        most_buffered = max(most_buffered, gate_buffers(stack))
        most_in_flight = max(most_in_flight, stack.seen.streamed - received)
    block = bytes(range(256)) * 1024
    expected = hashlib.sha256()
    for _ in range(HUGE // len(block)):
        expected.update(block)
    assert digest.hexdigest() == expected.hexdigest()
    assert most_buffered <= WRITE_HIGH + 512 * 1024
    # Socket buffers hold some megabytes; the gate holds little more.
    assert most_in_flight < 24 * 1024 * 1024
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 40 * 1024 * 1024
    await conn.send(request(session.urlpath + "/after", value))
    assert (await conn.response()).status == 200
    await conn.close()


async def test_a_slow_reader_stops_the_application_not_the_memory(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/huge", value))
    status, _headers = await conn.head()
    assert status == 200
    # The reader reads nothing more: the application must come to a stop.
    last, still = -1, 0
    for _ in range(500):
        await asyncio.sleep(0.02)
        if stack.seen.streamed == last:
            still += 1
            if still >= 10:
                break
        else:
            last, still = stack.seen.streamed, 0
    assert still >= 10, "the application kept on writing"
    assert stack.seen.streamed < HUGE // 2
    assert gate_buffers(stack) <= WRITE_HIGH + 512 * 1024
    received = 0
    while received < HUGE:
        data = await asyncio.wait_for(conn.reader.read(1024 * 1024), 10)
        assert data
        received += len(data)
    assert received == HUGE
    await conn.close()


async def test_malformed_requests_get_400_and_the_connection_is_closed(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/fine", value))
    assert (await conn.response()).status == 200
    await conn.send(b"GET " + session.urlpath.encode() + b"/x HTTP/1.1\r\nNo colon here\r\n\r\n")
    response = await conn.response()
    assert response.status == 400
    assert await conn.closed()
    count = len(stack.seen.requests)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello
    assert (await conn.response()).status == 400
    assert await conn.closed()
    assert len(stack.seen.requests) == count


async def test_oversized_headers_get_431(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/x", value, extra="X-Big: " + "a" * 100_000))
    assert (await conn.response()).status == 431
    assert await conn.closed()
    conn = await RawConnection.open(stack.gate_port)
    many = "\r\n".join(f"X-Header-{i}: {'b' * 100}" for i in range(1000))
    await conn.send(request(session.urlpath + "/x", value, extra=many))
    assert (await conn.response()).status == 431
    assert await conn.closed()


async def test_a_request_head_that_never_ends_gets_408(stack: Stack) -> None:
    session, value = await entered(stack)
    assert stack.client.app is not None
    stack.client.app[GATE].server.head_timeout = 0.2
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/x", value)[:-2])  # the blank line never comes
    assert (await conn.response()).status == 408
    assert await conn.closed()


async def test_expect_100_continue_is_answered_by_the_gate(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(
        request(
            session.urlpath + "/form",
            value,
            method="POST",
            extra="Content-Length: 7\r\nExpect: 100-continue",
        )
    )
    status, _headers = await conn.head()
    assert status == 100
    await conn.send(b"payload")
    assert (await conn.response()).status == 200
    assert stack.seen.requests[-1]["body_len"] == 7
    assert "expect" not in headers_seen(stack)


async def test_two_applications_on_one_connection(
    stack: Stack, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    other_seen = Upstream()
    other = await aiohttp_server(fake_application(other_seen))
    alices, alice_cookie = await entered(stack, "alice", as_user="root")
    stack.runtime._ports = itertools.repeat(other.port)  # type: ignore[assignment]
    carols, carol_cookie = await entered(stack, "carol", as_user="root")
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(alices.urlpath + "/a", alice_cookie))
    await conn.send(request(carols.urlpath + "/c", carol_cookie))
    await conn.send(request(alices.urlpath + "/a2", alice_cookie))
    bodies = [(await conn.response()).body for _ in range(3)]
    assert b"/a" in bodies[0]
    assert b"/c" in bodies[1]
    assert b"/a2" in bodies[2]
    assert [r["path_qs"] for r in stack.seen.requests[-2:]] == [
        alices.urlpath + "/a",
        alices.urlpath + "/a2",
    ]
    assert [r["path_qs"] for r in other_seen.requests] == [
        carols.urlpath + "/",
        carols.urlpath + "/c",
    ]
    # A cookie for one application does not open the other, on the same connection.
    await conn.send(
        request(carols.urlpath + "/c", alice_cookie, method="POST", extra="Content-Length: 0")
    )
    assert (await conn.response()).status == 401
    await conn.close()


# ------------------------------------------------------------------------------ bad applications
_MISBEHAVIOUR = {
    b"/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100,
    b"/silent": b"",
    b"/smuggle": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    b"/until-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    b"/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninjectd",
    b"/answer": b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nanswer",
    b"/pinned-length": b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n"
    b"helloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    b"/pinned-encoding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: keep-alive, Transfer-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\nsmuggled",
    b"/cookies": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    b"Set-Cookie: =nameless; Path=/\r\n"
    b"Set-Cookie: lone-value\r\n"
    b"Set-Cookie: __Host-jupyterhub-hub-login=planted; Path=/; Secure\r\n"
    b"Set-Cookie: __Secure-remoteapp-session=planted; Path=/services/remoteapp/; Secure\r\n"
    b"Set-Cookie: service-remoteapp=planted; Path=/services/remoteapp/\r\n"
    b"Set-Cookie: site-wide=1; Path=/; Domain=127.0.0.1; HttpOnly\r\n"
    b"Set-Cookie: inside=2; Path={base}/deeper/\r\n"
    b"Set-Cookie: default=3\r\n\r\nok",
    b"/hops": b"HTTP/1.0 200 Fine\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\n"
    b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nSet-Cookie: remoteapp-session=x\r\n"
    b"set-cookie: app=1; Path=/\r\nX-App: kept\r\nCONTENT-length: 4\r\n\r\nhops",
}


@pytest.fixture
async def misbehaving(stack: Stack) -> AsyncIterator[tuple[Session, str]]:
    """An application answering each path with the raw bytes above, then closing."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1]
            base, _, tail = path.rpartition(b"/")
            answer = _MISBEHAVIOUR.get(b"/" + tail, _MISBEHAVIOUR[b"/answer"])
            writer.write(answer.replace(b"{base}", base))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    stack.runtime._ports = itertools.repeat(server.sockets[0].getsockname()[1])  # type: ignore[assignment]
    try:
        yield await entered(stack)
    finally:
        server.close()


async def test_an_application_closing_mid_answer_cuts_the_connection(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/truncated", value))
    status, headers = await conn.head()
    assert status == 200
    assert headers["content-length"] == ["1000"]
    rest = await asyncio.wait_for(conn.reader.read(), 5)
    assert rest == b"a" * 100  # and then the end of the connection: visibly short


async def test_an_application_closing_without_answering_is_502(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/silent", value))
    response = await conn.response()
    assert response.status == 502
    assert len(response.body) < 200


@pytest.mark.parametrize("path", ["/smuggle", "/pinned-length", "/pinned-encoding"])
async def test_answers_with_ambiguous_framing_are_refused_at_once(
    stack: Stack, misbehaving: tuple[Session, str], path: str
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + path, value))
    response = await conn.response()
    assert response.status == 502
    assert b"smuggled" not in response.body
    # The gate's own answer is well framed: the proxy's connection carries on.
    await conn.send(request(session.urlpath + "/answer", value))
    assert (await conn.response()).body == b"answer"


async def test_an_answer_whose_chunks_go_wrong_is_cut_short(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/bad-chunk", value))
    status, headers = await conn.head()
    # The head went out before the body went wrong: the connection is cut, never completed.
    assert status == 200
    assert headers["transfer-encoding"] == ["chunked"]
    rest = await asyncio.wait_for(conn.reader.read(), 5)  # then the end of the connection
    assert b"5\r\nhello\r\n".startswith(rest)


async def test_bytes_after_an_answer_are_never_passed_on(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/extra", value))
    first = await conn.response()
    assert first.body == b"hello"
    await conn.send(request(session.urlpath + "/next", value))
    second = await conn.response()
    assert second.body == b"answer"


async def test_an_answer_ended_by_closing_closes_the_connection_after_it(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/until-close", value))
    response = await conn.response()
    assert response.status == 200
    assert response.header("connection") == "close"
    assert response.body == b"until the end"


async def test_the_gate_listens_on_loopback_only(stack: Stack) -> None:
    assert stack.client.app is not None
    host, _port = stack.client.app[GATE].server._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    assert host == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", stack.gate_port), timeout=5):
        pass


async def test_gate_traffic_is_counted_in_the_metrics(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/counted", value))
    assert (await conn.response()).status == 200
    await conn.send(request("/user/alice/containers/" + "z" * 26 + "/", value))
    assert (await conn.response()).status == 404
    await conn.close()
    text = await (await stack.client.get(PREFIX + "metrics")).text()
    assert 'remoteapp_gate_requests_total{outcome="forwarded"} 2.0' in text  # and the entry's
    assert 'remoteapp_gate_requests_total{outcome="answered"} 2.0' in text  # and the first 302
    assert re.search(r"^remoteapp_gate_connections [0-9.]+$", text, re.MULTILINE)
    moved = {
        direction: float(amount)
        for direction, amount in re.findall(
            r'^remoteapp_gate_bytes_total\{direction="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE
        )
    }
    assert moved["to_apps"] > 0
    assert moved["to_clients"] > 0
    assert "remoteapp_gate_websockets_open 0.0" in text
    ws = await open_ws(stack, session)
    text = await (await stack.client.get(PREFIX + "metrics")).text()
    assert "remoteapp_gate_websockets_open 1.0" in text
    await ws.close()


async def test_hop_by_hop_headers_and_our_cookies_are_taken_out_of_answers(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/hops", value))
    raw_head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
    assert raw_head.startswith(b"HTTP/1.1 200 Fine\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")[1:-2]
    assert sorted(lines) == [
        "CONTENT-length: 4",
        f"Set-Cookie: app=1; Path={session.urlpath}/",
        "X-App: kept",
    ]
    assert await conn.reader.readexactly(4) == b"hops"
    # The connection from the proxy stays usable.
    await conn.send(request(session.urlpath + "/answer", value))
    assert (await conn.response()).body == b"answer"


async def test_application_cookies_are_confined_to_the_application_path(
    stack: Stack, misbehaving: tuple[Session, str]
) -> None:
    session, value = misbehaving
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/cookies", value))
    response = await conn.response()
    assert response.status == 200
    base = session.urlpath + "/"
    assert sorted(response.headers["set-cookie"]) == [
        f"default=3; Path={base}",
        f"inside=2; Path={base}deeper/",
        f"site-wide=1; HttpOnly; Path={base}",
    ]


# ------------------------------------------------------------------------------ credentials
async def test_a_bearer_token_opens_the_gate_but_never_reaches_the_application(
    stack: Stack,
) -> None:
    session, value = await entered(stack, "alice")
    token = stack.world.hub.issue_token("alice")
    for scheme in ("Bearer", "bearer", "TOKEN"):
        response = await stack.make_client()
        answer = await response.get(
            session.urlpath + "/api", headers={"Authorization": f"{scheme} {token}"}
        )
        assert answer.status == 200
        assert "authorization" not in headers_seen(stack)
    # An admin's token opens nobody else's application (entering is an explicit, confirmed
    # step of a signed-in admin), and reaches it in no scheme either.
    admin_token = stack.world.hub.issue_token("root")
    for scheme in ("Bearer", "TOKEN"):
        response = await stack.make_client()
        answer = await response.get(
            session.urlpath + "/api", headers={"Authorization": f"{scheme} {admin_token}"}
        )
        assert answer.status == 403
        assert admin_token not in str(headers_seen(stack))
    # Signed in with the gate cookie, a visitor's token in any scheme is kept back too.
    viewer_token = stack.world.hub.issue_token("bob")
    for header in (f"Bearer {viewer_token}", f"token {viewer_token}", f"Custom {viewer_token}"):
        conn = await RawConnection.open(stack.gate_port)
        await conn.send(request(session.urlpath + "/x", value, extra=f"Authorization: {header}"))
        assert (await conn.response()).status == 200
        assert "authorization" not in headers_seen(stack)
        await conn.close()


async def test_a_token_in_the_query_opens_nothing(stack: Stack) -> None:
    session = await stack.start("alice")
    token = stack.world.hub.issue_token("alice")
    response = await stack.client.post(session.urlpath + f"/api?token={token}", data=b"")
    assert response.status == 401
    assert stack.seen.requests == []


async def test_prefixed_hub_and_service_cookies_never_reach_the_application(stack: Stack) -> None:
    session, value = await entered(stack)
    crumbs = [
        "__Host-jupyterhub-hub-login=h",
        "__Secure-jupyterhub-session-id=s",
        "jupyterhub-user-alice=u",
        "service-remoteapp=o",
        "__Host-remoteapp-session=r",
        f"__Host-{GATE_COOKIE}=g",
        "__Secure-_xsrf=x",
        "=nameless",
        "app=1",
    ]
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/c", value, extra="Cookie: " + "; ".join(crumbs)))
    assert (await conn.response()).status == 200
    assert headers_seen(stack)["cookie"] == ["theme=dark; app=1"]
    await conn.close()


# ------------------------------------------------------------------------------ smuggling
_SMUGGLED = "GET {base}/smuggled HTTP/1.1\r\nHost: gate.test\r\nCookie: {gate}={value}\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "head", "body"),
    [
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: {n}",
            "{smuggled}",
        ),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Transfer-Encoding\r\n"
            "Transfer-Encoding: chunked",
            "0\r\n\r\n{smuggled}",
        ),
        (400, "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: Cookie", ""),
        (
            400,
            "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: authorization\r\n"
            "Authorization: Basic eA==",
            "",
        ),
        (400, "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: HOST", ""),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked",
            "0\r\n\r\n{smuggled}",
        ),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",
            "0\r\n\r\n{smuggled}",
        ),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: {n}",
            "{smuggled}",
        ),
        (400, "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0, {n}", "{smuggled}"),
        (400, "GET {path} HTTP/1.1\r\nHost: h\r\nHost: other", ""),
        (400, "GET {path} HTTP/1.1", ""),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nX: a\r\n Transfer-Encoding: chunked",
            "0\r\n\r\n",
        ),
        (
            400,
            "POST {path} HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked",
            "0\r\n\r\n{smuggled}",
        ),
        (400, "GET {path} HTTP/1.1\nHost: h", ""),
        (400, "GET {path} HTTP/1.1\r\nHost: h\nX: y", ""),
        (400, "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked", "zz\r\n{smuggled}"),
        (400, "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked", "-1\r\n{smuggled}"),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked",
            "1ffffffffffffffff\r\n",
        ),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked",
            "0 \r\n\r\n{smuggled}",
        ),
        (
            400,
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity",
            "0\r\n\r\n{smuggled}",
        ),
        (
            501,
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked",
            "0\r\n\r\n{smuggled}",
        ),
        (
            400,
            "GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Basic eA==\r\n"
            "Authorization: Basic eQ==",
            "",
        ),
    ],
    ids=[
        "connection-content-length",
        "connection-transfer-encoding",
        "connection-cookie",
        "connection-authorization",
        "connection-host",
        "cl-te",
        "te-cl",
        "duplicate-cl",
        "cl-list",
        "duplicate-host",
        "no-host",
        "obs-fold",
        "http10-chunked",
        "bare-lf",
        "bare-lf-header",
        "bad-chunk-size",
        "negative-chunk-size",
        "chunk-size-overflow",
        "chunk-size-space",
        "te-chunked-identity",
        "te-gzip-chunked",
        "duplicate-authorization",
    ],
)
async def test_smuggling_attempts_are_refused_and_nothing_reaches_the_application(
    stack: Stack, status: int, head: str, body: str
) -> None:
    session, value = await entered(stack)
    before = len(stack.seen.requests)
    path = session.urlpath + "/first"
    smuggled = _SMUGGLED.format(base=session.urlpath, gate=GATE_COOKIE, value=value)
    body = body.format(smuggled=smuggled)
    head = head.format(path=path, n=len(body))
    cookie_line = f"\r\nCookie: {GATE_COOKIE}={value}"
    text = head.replace("\r\n", cookie_line + "\r\n", 1) if "\r\n" in head else head + cookie_line
    conn = await RawConnection.open(stack.gate_port)
    # A valid request first: the refusal must come after its answer, on the same connection.
    await conn.send(
        request(session.urlpath + "/before", value) + (text + "\r\n\r\n" + body).encode()
    )
    assert (await conn.response()).status == 200
    refused = await conn.response()
    assert refused.status == status
    assert await conn.closed()
    paths = [r["path_qs"] for r in stack.seen.requests[before:]]
    assert paths == [session.urlpath + "/before"]


@pytest.mark.parametrize("bad", ["zz", "-1", "1ffffffffffffffff", "0 ", "5;\nhello"])
async def test_a_bad_chunk_in_a_forwarded_request_cuts_the_connection(
    stack: Stack, bad: str
) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    head = request(
        session.urlpath + "/upload", value, method="POST", extra="Transfer-Encoding: chunked"
    )
    await conn.send(head + b"3\r\nabc\r\n")
    await asyncio.sleep(0.2)  # the head and the first chunk are on their way to the app
    smuggled = _SMUGGLED.format(base=session.urlpath, gate=GATE_COOKIE, value=value)
    await conn.send(f"{bad}\r\n{smuggled}".encode())
    # Part of the request went through: it cannot be answered, only cut; what follows the
    # bad chunk is never read as a request.
    assert await conn.closed()
    await asyncio.sleep(0.2)
    assert not any(r["path_qs"].endswith("/smuggled") for r in stack.seen.requests)


# ------------------------------------------------------------------------------ WebSocket origin
async def open_ws(
    stack: Stack, session: Session, client: Client | None = None, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    kwargs.setdefault("origin", same_origin(stack))
    ws: aiohttp.ClientWebSocketResponse = await (client or stack.client).ws_connect(
        session.urlpath + "/ws", protocols=("binary",), **kwargs
    )
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "echo:ping"
    return ws


async def closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bool:
    """Whether the gate ends this WebSocket within ``seconds`` (an error or a close)."""
    try:
        message = await ws.receive(timeout=seconds)
    except TimeoutError:
        return False
    return message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1:1",
        "https://127.0.0.1:{port}",
        "null",
        "http://127.0.0.1:{port}.evil.example",
        "http://user@127.0.0.1:{port}",
    ],
)
async def test_a_websocket_from_another_origin_is_refused(stack: Stack, origin: str) -> None:
    session, _value = await entered(stack)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect(
            session.urlpath + "/ws", origin=origin.format(port=stack.gate_port)
        )
    assert refused.value.status == 403
    assert stack.seen.ws_protocols == []


async def test_a_browser_websocket_without_origin_is_refused(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(
        request(
            session.urlpath + "/ws",
            value,
            extra="Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        )
    )
    assert (await conn.response()).status == 403
    assert stack.seen.ws_protocols == []


async def test_a_token_client_may_open_a_websocket_without_origin(stack: Stack) -> None:
    session, _value = await entered(stack)
    token = stack.world.hub.issue_token("alice")
    other = await stack.make_client()
    ws = await open_ws(
        stack, session, other, origin=None, headers={"Authorization": f"token {token}"}
    )
    await ws.close()
    # Without Origin, the cookie counts for nothing: only a token gets in.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect(session.urlpath + "/ws")
    assert refused.value.status == 403
    bobs = stack.world.hub.issue_token("bob")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await other.ws_connect(session.urlpath + "/ws", headers={"Authorization": f"token {bobs}"})
    assert refused.value.status == 403


async def test_the_public_and_application_origins_are_allowed(stack: Stack) -> None:
    session, _value = await entered(stack)
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    gate.public_origins = frozenset({"https://hub.example.org"})
    gate.application_origins = lambda target: [f"https://{target.url_id}.apps.example.org:443"]
    ws = await open_ws(stack, session, origin="https://HUB.example.org:443")
    await ws.close()
    ws = await open_ws(stack, session, origin=f"https://{session.url_id}.apps.example.org")
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await stack.client.ws_connect(
            session.urlpath + "/ws", origin="https://other.apps.example.org"
        )


# ------------------------------------------------------------------------- open connections end
async def sign_out(client: Client) -> None:
    """The user page's sign-out button: a POST with the page's XSRF token."""
    xsrf = {"X-XSRFToken": cookie(client, "_xsrf") or ""}
    signed_out = await client.post(PREFIX + "logout", headers=xsrf, allow_redirects=False)
    assert signed_out.status == 302


async def test_signing_out_closes_open_websockets_at_once(stack: Stack) -> None:
    session, _value = await entered(stack)
    ws = await open_ws(stack, session)
    await sign_out(stack.client)
    assert await closed_within(ws, 2)


async def test_another_login_session_keeps_its_websocket(stack: Stack) -> None:
    session, _value = await entered(stack)
    other = await stack.make_client()
    await sign_in(other, stack.world, "alice")
    assert (await enter(other, session.urlpath + "/")).status == 200
    kept = await open_ws(stack, session, other)
    ws = await open_ws(stack, session)
    await sign_out(stack.client)
    assert await closed_within(ws, 2)
    await kept.send_str("still")
    assert await kept.receive_str(timeout=5) == "echo:still"


@pytest.mark.parametrize("change", ["hub_logout", "admin_lost", "grant_revoked", "stopped"])
async def test_open_websockets_close_when_the_access_that_let_them_in_ends(
    stack: Stack, change: str
) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    visitor = "root" if change == "admin_lost" else "bob"
    session = await stack.start("alice", Policy(allow_view=visitor == "bob"))
    if visitor == "bob":
        await share(stack, session)
    await sign_in(stack.client, stack.world, visitor)
    entry = await enter(stack.client, session.urlpath + "/")
    if visitor == "root":  # an admin entering someone else's application confirms it
        entry = await confirm_entry(stack.client, entry)
    assert entry.status == 200
    ws = await open_ws(stack, session)
    assert await gate.recheck() == 0
    assert not await closed_within(ws, 0.2)
    if change == "hub_logout":
        stack.world.hub.revoke_user(visitor)
        stack.world.hub_changed()
    elif change == "admin_lost":
        stack.world.hub.set_admin(visitor, False)
        stack.world.hub_changed()
    elif change == "grant_revoked":
        async with stack.world.database.unit_of_work() as uow:
            await uow.grants.revoke(session.mapping_id)
            await uow.commit()
    else:
        await stack.sessions.stop("alice", session.url_id)
    await gate.recheck()
    assert await closed_within(ws, 2)


async def test_the_gate_rechecks_by_itself(stack: Stack) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    session = await stack.start("alice", Policy(allow_view=True))
    await share(stack, session)
    await sign_in(stack.client, stack.world, "bob")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    ws = await open_ws(stack, session)
    async with stack.world.database.unit_of_work() as uow:
        await uow.grants.revoke(session.mapping_id)
        await uow.commit()
    # The running loop sleeps RECHECK_INTERVAL between rounds: closed within two of them.
    assert await closed_within(ws, 2 * gate.recheck_interval + 1)


# ------------------------------------------------------------------------------ per-user cap
async def test_one_user_cannot_hold_more_than_the_cap(stack: Stack) -> None:
    assert stack.client.app is not None
    server = stack.client.app[GATE].server
    server.max_per_user = 2
    session, value = await entered(stack)
    first = await open_ws(stack, session)
    second = await open_ws(stack, session)
    assert server.in_use("alice") == 2
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/third", value))
    crowded = await conn.response()
    assert crowded.status == 429
    assert crowded.header("retry-after") == "5"
    assert not any(r["path_qs"].endswith("/third") for r in stack.seen.requests)
    # Another user is not held back by alice's connections.
    carols = await stack.start("carol")
    other = await stack.make_client()
    await sign_in(other, stack.world, "carol")
    assert (await enter(other, carols.urlpath + "/")).status == 200
    carol_value = gate_cookie(other, carols)
    await conn.send(request(carols.urlpath + "/fine", carol_value))
    assert (await conn.response()).status == 200
    await first.close()
    for _ in range(100):
        if server.in_use("alice") < 2:
            break
        await asyncio.sleep(0.02)
    await conn.send(request(session.urlpath + "/again", value))
    assert (await conn.response()).status == 200
    await conn.close()
    await second.close()
    for _ in range(100):
        if server.in_use("alice") == 0:
            break
        await asyncio.sleep(0.02)
    assert server.in_use("alice") == 0
    text = await (await stack.client.get(PREFIX + "metrics")).text()
    assert "remoteapp_gate_crowded_total 1.0" in text


async def test_a_verified_gate_cookie_is_remembered_only_until_it_expires(stack: Stack) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    _session, value = await entered(stack)
    payload = gate.cookie_payload(value)
    assert payload is not None
    assert gate.verified.peek(value) is not None  # checked once, then answered from memory
    assert gate.cookie_payload(value) == payload

    stack.world.clock.advance(gate.store.max_age + 1)

    assert gate.verified.peek(value) is None
    assert gate.cookie_payload(value) is None


async def test_an_expired_login_session_closes_its_websockets(stack: Stack) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    session, _value = await entered(stack)
    ws = await open_ws(stack, session)
    stack.world.clock.advance(gate.store.idle_timeout + 1)
    assert await gate.recheck() == 1
    assert await closed_within(ws, 2)


async def test_a_token_websocket_closes_when_the_hub_revokes_the_token(stack: Stack) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    session = await stack.start("alice")
    token = stack.world.hub.issue_token("alice")
    ws = await open_ws(stack, session, origin=None, headers={"Authorization": f"token {token}"})
    assert await gate.recheck() == 0
    stack.world.hub.revoke_user("alice")
    assert await gate.recheck() == 0  # the hub's answer is cached for its stated time
    stack.world.hub_changed()
    assert await gate.recheck() == 1
    assert await closed_within(ws, 2)


async def test_signing_out_cuts_an_answer_under_way(stack: Stack) -> None:
    session, value = await entered(stack)
    conn = await RawConnection.open(stack.gate_port)
    await conn.send(request(session.urlpath + "/huge", value))
    status, _headers = await conn.head()
    assert status == 200  # and the reader takes its time: the answer stays under way
    await sign_out(stack.client)
    received = 0
    while True:
        data = await asyncio.wait_for(conn.reader.read(1024 * 1024), 5)
        if not data:
            break
        received += len(data)
    assert received < HUGE


async def test_leaving_the_hub_group_of_a_grant_stops_the_session_on_recheck(
    stack: Stack,
) -> None:
    assert stack.client.app is not None
    gate = stack.client.app[GATE]
    stack.world.hub.set_groups("alice", frozenset({"physics"}))
    async with stack.world.database.unit_of_work() as uow:
        owner = await uow.users.add("alice")
        application = await uow.applications.add(IMAGE)
        group_grant = await uow.grants.grant_group("physics", application, Policy())
        await uow.commit()
    session = await stack.sessions.start(group_grant.for_user(owner))
    token = stack.world.hub.issue_token("alice")
    ws = await open_ws(stack, session, origin=None, headers={"Authorization": f"token {token}"})
    assert await gate.recheck() == 0

    stack.world.hub.set_groups("alice", frozenset({"chemistry"}))
    assert await gate.recheck() == 0  # the hub's answer is cached for its stated time
    assert stack.runtime.container_ids
    stack.world.hub_changed()
    assert await gate.recheck() == 1
    assert await closed_within(ws, 2)
    assert stack.runtime.container_ids == frozenset()
    assert await stack.sessions.list_for_user("alice") == []
