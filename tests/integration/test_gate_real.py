"""The gate behind a real configurable-http-proxy, in front of real application containers.

The service (fake hub, in-memory catalogue) runs on a free 127.0.0.1 port and its gate on
another; the proxy routes ``{svc}`` to the service and every container path to the gate, as
JupyterHub and gated sessions set it up. All traffic goes to 127.0.0.1. Each test has a realm
of its own, force-removed afterwards.

``ECHO_IMAGE`` is an application written as raw HTTP (busybox ``nc`` and a shell script), so
that it can echo what reaches it, answer with any header, and hold a spliced connection open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import os
import secrets
import tarfile
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.domain.shares import ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import Shares
from remoteappmanager.web.app import create_app
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.gate.relay import TEXT, encode_frame
from remoteappmanager.web.keys import SHARES
from tests.support.services import Proxy, ServiceMissing, free_port, skip_or_fail
from tests.support.session_images import (
    LABELS,
    WEB_IMAGE,
    ensure_session_images,
    ensure_vnc_image,
    remove_realm,
)
from tests.support.webapp import CALLBACK, PREFIX, World, make_settings, parse_login_redirect

pytestmark = [pytest.mark.docker, pytest.mark.proxy]


# Tagged by what its handler does (the tag changes with it: a cached image is reused).
ECHO_IMAGE = "remoteapp-test/gate-echo:ws-frames"
# One connection, one answer, by path: the request head echoed back; cookies to confine; an
# answer whose Connection header drops its own Content-Length; a WebSocket switch after which
# the first byte from the client is answered with one text frame, "pong", and the rest is
# read and dropped. Every request line is logged, and /log serves the log.
_ECHO_HANDLER = r"""#!/bin/sh
head=""
while IFS= read -r line; do
  line="${line%$(printf '\r')}"
  [ -z "$line" ] && break
  head="$head$line
"
done
request=$(printf '%s' "$head" | sed -n 1p)
echo "$request" >> /tmp/requests.log
path=$(echo "$request" | cut -d' ' -f2)
out() { printf '%b' "$@"; }
answer() {
  out 'HTTP/1.1 200 OK\r\n' "Content-Length: ${#1}\r\n" 'Connection: close\r\n\r\n'
  printf '%s' "$1"
}
case "$path" in
  */headers) answer "$head" ;;
  */log) answer "$(cat /tmp/requests.log)" ;;
  */cookies) out 'HTTP/1.1 200 OK\r\n' \
    'Set-Cookie: site-wide=1; Path=/; Domain=127.0.0.1\r\n' \
    'Set-Cookie: =nameless; Path=/\r\n' \
    'Set-Cookie: __Host-jupyterhub-hub-login=planted; Path=/; Secure\r\n' \
    'Set-Cookie: jupyterhub-session-id=planted; Path=/\r\n' \
    'Set-Cookie: inside=2\r\n' 'Content-Length: 2\r\n' 'Connection: close\r\n\r\nok' ;;
  */pinned) out 'HTTP/1.1 200 OK\r\n' 'Connection: content-length\r\n' \
    'Content-Length: 5\r\n\r\nhello' 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled' ;;
  */ws) out 'HTTP/1.1 101 Switching Protocols\r\n' \
    'Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
    head -c 1 >/dev/null
    out '\0201\0004pong'
    exec cat >/dev/null ;;
  *) answer "ok" ;;
esac
"""
_ECHO_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp"]
COPY handler /bin/handler
EXPOSE 8888
CMD ["/bin/nc", "-ll", "-p", "8888", "-e", "/bin/handler"]
"""


async def _build_echo_image(busybox: bytes) -> None:
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.inspect(ECHO_IMAGE)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data, mode in (
                ("Dockerfile", _ECHO_DOCKERFILE.encode(), 0o644),
                ("busybox", busybox, 0o755),
                ("handler", _ECHO_HANDLER.encode(), 0o755),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        buffer.seek(0)
        await docker.images.build(
            fileobj=buffer, encoding="identity", tag=ECHO_IMAGE, labels=LABELS, rm=True, pull=False
        )


@pytest.fixture(scope="session")
def echo_image(session_images: None) -> str:
    # In a thread of its own: safe whether or not an event loop runs here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _build_echo_image(Path("/bin/busybox").read_bytes())).result()
    return ECHO_IMAGE


@pytest.fixture(scope="session")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="session")
def vncapp_image(docker_engine: None) -> str:
    """The demo desktop, built from ``images/`` if the engine does not have it."""
    try:
        return ensure_vnc_image()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
        raise


def add_service_route(proxy: Proxy, target: str) -> None:
    """Route ``{svc}`` to the service, as JupyterHub does for a hub-managed service."""
    request = urllib.request.Request(
        proxy.api_url + "/api/routes" + PREFIX.rstrip("/"),
        data=json.dumps({"target": target}).encode(),
        headers={"Authorization": f"token {proxy.token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


@dataclass
class Stack:
    proxy: Proxy
    world: World
    sessions: Sessions
    service_url: str
    gate_url: str
    shares: Shares

    async def start(self, user: str, image: str, policy: Policy | None = None) -> Session:
        async with self.world.database.unit_of_work() as uow:
            owner = await uow.users.add(user)
            application = await uow.applications.add(image)
            grant = await uow.grants.grant(owner, application, policy or Policy())
            await uow.commit()
        return await self.sessions.start(grant)

    def browser(self) -> aiohttp.ClientSession:
        """A browser talking to the proxy's public port only."""
        return aiohttp.ClientSession(
            base_url=self.proxy.public_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )

    async def sign_in(self, browser: aiohttp.ClientSession, name: str) -> None:
        response = await browser.get(PREFIX, allow_redirects=False)
        assert response.status == 302, await response.text()
        redirect = parse_login_redirect(response.headers["Location"])
        code = self.world.hub.approve(name, redirect.code_challenge)
        response = await browser.get(
            CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
        )
        assert response.status == 302, await response.text()


@pytest.fixture
async def stack(session_images: None, proxy: Proxy, tmp_path: Path) -> AsyncIterator[Stack]:
    realm = f"gate-{secrets.token_hex(4)}"
    port, gate_port = free_port(), free_port()
    service_url = f"http://127.0.0.1:{port}"
    gate_url = f"http://127.0.0.1:{gate_port}"
    world = World()
    for name in ("alice", "bob", "carol"):
        world.hub.add_user(name)
    settings = make_settings(
        jupyterhub_service_url=service_url, gate_url=gate_url, realm=realm, network_timeout=60
    )
    # The production wiring over the real engine, proxy and probe; hub and database in memory.
    app = create_app(
        world.build(
            settings,
            runtime=AiodockerRuntime(),
            routes=ChpRouteTable(proxy.api_url, proxy.token, retries=1, backoff=0.01),
            probe=AiohttpReadinessProbe(),
            workspaces=DirectoryWorkspaces(
                tmp_path / "workspaces", uid=os.getuid(), gid=os.getgid()
            ),
            host_paths=LocalHostPaths(),
            monotonic=time.monotonic,
        )
    )
    sessions = world.sessions
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        add_service_route(proxy, service_url)
        yield Stack(proxy, world, sessions, service_url, gate_url, app[SHARES])
    finally:
        await server.close()  # closes the engine, proxy and probe clients
        await remove_realm(realm)


async def test_the_proxy_routes_the_application_to_the_gate(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    route = stack.proxy.routes()[session.urlpath]
    assert route["target"] == stack.gate_url
    assert session.host_ip == "127.0.0.1"


async def test_the_owner_reaches_the_application_through_the_proxy(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    async with stack.browser() as browser:
        await stack.sign_in(browser, "alice")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 200
        assert await response.text() == f"hello alice from {session.url_id}\n"
        assert any(morsel.key == GATE_COOKIE for morsel in browser.cookie_jar)
        response = await browser.get(session.urlpath + "/env.txt")
        assert response.status == 200
        assert f"URL_ID={session.url_id}" in await response.text()


async def test_anonymous_and_other_users_get_no_content(stack: Stack) -> None:
    session = await stack.start("alice", WEB_IMAGE)
    hello = f"hello alice from {session.url_id}"
    async with stack.browser() as browser:
        response = await browser.get(session.urlpath + "/", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"].startswith(PREFIX + "gate/" + session.url_id)
        assert hello not in await response.text()
        response = await browser.post(session.urlpath + "/", data=b"x")
        assert response.status == 401
        assert hello not in await response.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await browser.ws_connect(session.urlpath + "/websockify", origin=stack.proxy.public_url)
        assert refused.value.status == 401

        await stack.sign_in(browser, "bob")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 403
        assert hello not in await response.text()


async def test_novnc_websocket_through_proxy_and_gate(stack: Stack, vncapp_image: str) -> None:
    session = await stack.start("alice", vncapp_image)
    async with stack.browser() as browser:
        await stack.sign_in(browser, "alice")
        response = await browser.get(session.urlpath + "/")
        assert response.status == 200
        async with browser.ws_connect(
            session.urlpath + "/websockify", protocols=("binary",), origin=stack.proxy.public_url
        ) as ws:
            assert ws.protocol == "binary"
            greeting = b""
            while len(greeting) < 12:
                message = await asyncio.wait_for(ws.receive(), 20)
                assert message.type is aiohttp.WSMsgType.BINARY, message
                greeting += message.data
            assert greeting.startswith(b"RFB 003.00"), greeting


# ------------------------------------------------------------------------------ raw HTTP
class Raw:
    """One connection to the proxy's public port, written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Raw:
        host, _, port = url.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, list[str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")
        return int(lines[0].split(" ")[1]), [line for line in lines[1:] if line]

    async def ended_within(self, seconds: float) -> bool:
        """Whether the other side closes the connection within ``seconds``."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), seconds):
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def websocket_request(host: str, path: str, origin: str | None, cookie: str | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if cookie is not None:
        lines.append(f"Cookie: {GATE_COOKIE}={cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def public_host(stack: Stack) -> str:
    """The ``Host`` a browser sends to the proxy's public port."""
    return stack.proxy.public_url.removeprefix("http://")


def gate_cookie_of(browser: aiohttp.ClientSession) -> str:
    for morsel in browser.cookie_jar:
        if morsel.key == GATE_COOKIE:
            return morsel.value
    raise AssertionError("the browser holds no gate cookie")


async def entered(stack: Stack, browser: aiohttp.ClientSession, user: str, session: Session) -> str:
    """Sign ``user`` in and open ``session`` in the browser; its gate cookie."""
    await stack.sign_in(browser, user)
    response = await browser.get(session.urlpath + "/")
    assert response.status == 200, await response.text()
    return gate_cookie_of(browser)


async def logged_requests(stack: Stack, session: Session, token: str) -> str:
    async with aiohttp.ClientSession(base_url=stack.proxy.public_url) as client:
        response = await client.get(
            session.urlpath + "/log", headers={"Authorization": f"token {token}"}
        )
        assert response.status == 200
        return await response.text()


# ------------------------------------------------------------------------------ credentials
async def test_bearer_tokens_and_prefixed_hub_cookies_never_reach_the_container(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image)
    token = stack.world.hub.issue_token("alice")
    async with aiohttp.ClientSession(base_url=stack.proxy.public_url) as client:
        response = await client.get(
            session.urlpath + "/headers",
            headers={
                "Authorization": f"Bearer {token}",
                "Cookie": "__Host-jupyterhub-hub-login=h; __Secure-jupyterhub-session-id=s; "
                "__Host-remoteapp-session=r; service-remoteapp=o; app=1",
            },
        )
        assert response.status == 200
        seen = (await response.text()).lower()
    assert seen.startswith(f"get {session.urlpath}/headers http/1.1")
    assert token.lower() not in seen
    assert "authorization" not in seen
    assert "cookie: app=1\n" in seen
    assert "jupyterhub" not in seen
    assert "remoteapp-session" not in seen
    assert "service-remoteapp" not in seen


async def test_container_cookies_are_confined_to_the_application_path(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image)
    token = stack.world.hub.issue_token("alice")
    async with aiohttp.ClientSession(base_url=stack.proxy.public_url) as client:
        response = await client.get(
            session.urlpath + "/cookies", headers={"Authorization": f"token {token}"}
        )
        assert response.status == 200
        set_cookies = response.headers.getall("Set-Cookie")
    base = session.urlpath + "/"
    assert sorted(set_cookies) == [f"inside=2; Path={base}", f"site-wide=1; Path={base}"]


# ------------------------------------------------------------------------------ framing
async def test_connection_content_length_is_refused_both_ways(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image)
    token = stack.world.hub.issue_token("alice")
    auth = f"Authorization: token {token}\r\n"
    smuggled = f"GET {session.urlpath}/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
    # Straight to the gate, as the proxy would pass it on: refused before anything is sent.
    gate = await Raw.open(stack.gate_url)
    await gate.send(
        f"POST {session.urlpath}/first HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Connection: content-length\r\nContent-Length: {len(smuggled)}\r\n\r\n{smuggled}".encode()
    )
    status, _headers = await gate.head()
    assert status == 400
    assert await gate.ended_within(5)
    # Through the proxy, which passes the header on: refused, and nothing is smuggled.
    public = await Raw.open(stack.proxy.public_url)
    await public.send(
        f"POST {session.urlpath}/second HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Connection: content-length\r\nContent-Length: {len(smuggled)}\r\n\r\n{smuggled}".encode()
    )
    status, _headers = await public.head()
    assert status == 400
    public.close()
    log = await logged_requests(stack, session, token)
    assert "/first" not in log
    assert "/smuggled" not in log

    # An answer whose Connection header drops its own framing: 502, at once.
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=stack.proxy.public_url) as client:
        response = await client.get(
            session.urlpath + "/pinned",
            headers={"Authorization": f"token {token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        )
        assert response.status == 502
        assert "smuggled" not in await response.text()
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------ WebSocket
async def test_a_websocket_from_another_origin_is_refused(stack: Stack, echo_image: str) -> None:
    session = await stack.start("alice", echo_image)
    async with stack.browser() as browser:
        value = await entered(stack, browser, "alice", session)
    for origin in ("http://evil.example", "null", None):
        raw = await Raw.open(stack.proxy.public_url)
        await raw.send(
            websocket_request(public_host(stack), session.urlpath + "/ws", origin, value)
        )
        status, _headers = await raw.head()
        assert status == 403, origin
        raw.close()
    raw = await Raw.open(stack.proxy.public_url)
    await raw.send(
        websocket_request(
            public_host(stack), session.urlpath + "/ws", stack.proxy.public_url, value
        )
    )
    status, _headers = await raw.head()
    assert status == 101
    raw.close()
    assert "/ws" in await logged_requests(stack, session, stack.world.hub.issue_token("alice"))


async def open_websocket_as_viewer(stack: Stack, session: Session, cookie: str) -> Raw:
    """A WebSocket opened by a viewer without input: it opens, and nothing it sends counts."""
    raw = await Raw.open(stack.proxy.public_url)
    await raw.send(
        websocket_request(
            public_host(stack), session.urlpath + "/ws", stack.proxy.public_url, cookie
        )
    )
    status, _headers = await raw.head()
    assert status == 101
    return raw


async def open_websocket(stack: Stack, session: Session, cookie: str) -> Raw:
    raw = await Raw.open(stack.proxy.public_url)
    await raw.send(
        websocket_request(
            public_host(stack), session.urlpath + "/ws", stack.proxy.public_url, cookie
        )
    )
    status, _headers = await raw.head()
    assert status == 101
    await raw.send(encode_frame(TEXT, b"ping", masked=True))
    assert await asyncio.wait_for(raw.reader.readexactly(6), 10) == b"\x81\x04pong"
    return raw


async def test_an_open_websocket_closes_within_seconds_of_signing_out(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image)
    async with stack.browser() as browser:
        value = await entered(stack, browser, "alice", session)
        raw = await open_websocket(stack, session, value)
        assert not await raw.ended_within(1)
        xsrf = next(morsel.value for morsel in browser.cookie_jar if morsel.key == "_xsrf")
        response = await browser.post(
            PREFIX + "logout", headers={"X-XSRFToken": xsrf}, allow_redirects=False
        )
        assert response.status == 302
        started = time.monotonic()
        assert await raw.ended_within(10)
        assert time.monotonic() - started < 10


async def test_only_a_share_opens_a_session_and_deleting_it_closes_the_viewer_at_once(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image, Policy(allow_view=True))
    api = f"{PREFIX}api/v1/containers/{session.url_id}/"
    owner = {"Authorization": f"token {stack.world.hub.issue_token('alice')}"}
    stranger = {"Authorization": f"token {stack.world.hub.issue_token('carol')}"}
    async with stack.browser() as browser:
        # Carol holds the address and is signed in: that opens nothing, nor does the API.
        await stack.sign_in(browser, "carol")
        assert (await browser.get(session.urlpath + "/")).status == 403
        assert (await browser.get(api + "shares/", headers=stranger)).status == 404
        assert (await browser.get(api + "control", headers=stranger)).status == 404
        refused = await browser.post(api + "shares/", json={"user": "carol"}, headers=stranger)
        assert refused.status == 404
    async with stack.browser() as client:
        created = await client.post(api + "shares/", json={"user": "bob"}, headers=owner)
        assert created.status == 201
        location = created.headers["Location"]
    async with stack.browser() as browser:
        value = await entered(stack, browser, "bob", session)
        raw = await open_websocket_as_viewer(stack, session, value)
        assert not await raw.ended_within(1)
        async with stack.browser() as client:
            listing = await (await client.get(api + "shares/", headers=owner)).json()
            assert listing["connected"] == [{"user": "bob", "mode": "view", "input": False}]
            assert (await client.delete(location, headers=owner)).status == 204
        started = time.monotonic()
        assert await raw.ended_within(10)
        assert time.monotonic() - started < 10
        assert (await browser.get(session.urlpath + "/")).status == 403


async def test_an_open_websocket_closes_within_seconds_of_revocation(
    stack: Stack, echo_image: str
) -> None:
    session = await stack.start("alice", echo_image, Policy(allow_view=True))
    await stack.shares.create(
        AuthenticatedUser("alice", admin=False),
        session.url_id,
        ShareKind.USER,
        "bob",
        ShareMode.CONTROL,
    )
    async with stack.browser() as browser:
        value = await entered(stack, browser, "bob", session)
        raw = await open_websocket(stack, session, value)
        assert not await raw.ended_within(1)
        async with stack.world.database.unit_of_work() as uow:
            await uow.grants.revoke(session.mapping_id)
            await uow.commit()
        started = time.monotonic()
        assert await raw.ended_within(10)
        assert time.monotonic() - started < 10
        # And it does not open again.
        again = await Raw.open(stack.proxy.public_url)
        await again.send(
            websocket_request(
                public_host(stack), session.urlpath + "/ws", stack.proxy.public_url, value
            )
        )
        status, _headers = await again.head()
        assert status == 403
        again.close()
