"""The gate in front of running applications: who gets in, and what reaches the application."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import AccessMode, Session
from remoteappmanager.services.deps import WebDeps
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.web.app import create_app
from remoteappmanager.web.gate import GATE_COOKIE
from remoteappmanager.web.keys import GATE
from tests.support.services import free_port
from tests.support.webapp import PREFIX, World, cookie, make_settings, sign_in

IMAGE = "remoteapp-test/gated:latest"
LABELS = {"eu.simphony-project.docker.type": "webapp"}
GATE_ENTRY = PREFIX + "gate/"

Client = TestClient[Any, Any]


# ------------------------------------------------------------------------------ the fake app
@dataclass
class Upstream:
    """What the fake application saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    ws_closes: list[int | None] = field(default_factory=list)
    ws_protocols: list[str | None] = field(default_factory=list)


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
async def stack(
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Stack]:
    seen = Upstream()
    upstream = await aiohttp_server(fake_application(seen))
    world = World()
    for name in ("alice", "bob", "carol"):
        world.hub.add_user(name)
    world.hub.add_user("root", admin=True)
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, LABELS)
    # Every container the fake engine starts is "published" on the fake application's port.
    runtime._ports = itertools.repeat(upstream.port)  # type: ignore[assignment]
    sessions = Sessions(
        runtime,
        InMemoryRouteTable(),
        InMemoryWorkspaces(),
        InMemoryHostPaths(),
        InMemoryReadinessProbe(),
        realm="gate-unit",
        access=AccessMode.GATED,
        gate_url="http://127.0.0.1:1",
        unit_of_work=world.database.unit_of_work,
    )
    deps = WebDeps(
        settings=make_settings(),
        identity=world.hub,
        uow_factory=world.database.unit_of_work,
        clock=world.clock,
        sessions=sessions,
    )
    app = create_app(deps)
    server = TestServer(app)
    await server.start_server()

    async def make_client() -> Client:
        return await aiohttp_client(server)

    client = await make_client()
    return Stack(world, runtime, sessions, seen, client, make_client)


async def enter(client: Client, path: str) -> aiohttp.ClientResponse:
    """A browser opening ``path``: redirects followed, cookies kept."""
    return await client.get(path)


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
        await stack.client.ws_connect(session.urlpath + "/ws", protocols=("binary",))
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


async def test_another_user_gets_in_when_the_policy_allows_viewing(stack: Stack) -> None:
    session = await stack.start("alice", Policy(allow_view=True))
    await sign_in(stack.client, stack.world, "bob")
    response = await enter(stack.client, session.urlpath + "/shared")
    assert response.status == 200
    assert len(stack.seen.requests) == 1


async def test_admin_gets_in(stack: Stack) -> None:
    session = await stack.start("alice")
    await sign_in(stack.client, stack.world, "root")
    response = await enter(stack.client, session.urlpath + "/")
    assert response.status == 200


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
    assert seen["host"] == [f"127.0.0.1:{stack.client.port}"]
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{stack.client.port}"]
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
    await stack.client.get(PREFIX + "logout", allow_redirects=False)
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
    stack.world.clock.advance(6)
    response = await stack.client.post(session.urlpath + "/x", data=b"")
    assert response.status == 401


async def test_lost_admin_rights_end_access_once_the_decision_expires(stack: Stack) -> None:
    session = await stack.start("alice")
    await sign_in(stack.client, stack.world, "root")
    assert (await enter(stack.client, session.urlpath + "/")).status == 200
    stack.world.hub.set_admin("root", False)
    assert (await stack.client.get(session.urlpath + "/")).status == 200  # decision kept
    stack.world.clock.advance(6)
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
    ws = await stack.client.ws_connect(session.urlpath + "/ws", protocols=("binary", "base64"))
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
    ws = await stack.client.ws_connect(session.urlpath + "/ws", protocols=("binary",))
    await ws.send_str("close-please")
    message = await ws.receive()
    assert message.type is WSMsgType.CLOSE
    assert message.data == 4001
    await ws.close()
    assert ws.close_code == 4001


# ------------------------------------------------------------------------------ direct mode
async def test_direct_mode_mounts_no_gate(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    world = World()
    sessions = Sessions(
        InMemoryRuntime(),
        InMemoryRouteTable(),
        InMemoryWorkspaces(),
        InMemoryHostPaths(),
        InMemoryReadinessProbe(),
        realm="gate-unit",
        access=AccessMode.DIRECT,
    )
    app = create_app(
        WebDeps(
            settings=make_settings(container_access="direct"),
            identity=world.hub,
            uow_factory=world.database.unit_of_work,
            clock=world.clock,
            sessions=sessions,
        )
    )
    assert GATE not in app
    client = await aiohttp_client(app)
    url_id = "a" * 26
    assert (await client.get(f"/user/alice/containers/{url_id}/")).status == 404
    assert (await client.get(GATE_ENTRY + url_id)).status == 404
