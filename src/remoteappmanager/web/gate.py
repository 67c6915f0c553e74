"""The gate: authorizes every request to a running application and forwards it (HTTP, WebSocket).

In gated mode the proxy routes ``/user/<name>/containers/<url_id>`` to this service with the
full path. A browser gets in with a per-application cookie (``remoteapp-gate``, scoped to the
application's path, signed, binding the login session and the url id); it is minted by
``{svc}gate/<url_id>``, a page under ``{svc}`` so that the service's own session cookie is
sent there. API clients may send ``Authorization: token <hub token>`` instead. Our cookies and
tokens are never forwarded to the application.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import quote, unquote

import aiohttp
import structlog
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from remoteappmanager.domain.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.services.access import AccessService, AuthenticatedUser
from remoteappmanager.services.deps import WebDeps
from remoteappmanager.services.gate_access import GateAccess, GateTarget
from remoteappmanager.web.auth import (
    SESSION_COOKIE,
    STATE_COOKIE_PREFIX,
    XSRF_COOKIE,
    is_https,
    login_redirect,
    resolve_auth,
)
from remoteappmanager.web.cookies import CookieSigner
from remoteappmanager.web.keys import (
    ACCESS,
    GATE,
    IDENTITY,
    LOGIN_SESSIONS,
    QUIET_ACCESS_LOG,
    REQUEST_ID,
    SIGNER,
    URLS,
)
from remoteappmanager.web.login_sessions import LoginSessionStore

log = structlog.get_logger(__name__)

GATE_COOKIE = "remoteapp-gate"
GATE_PATH = "/user/{name}/containers/{url_id}{tail:.*}"
_GATE_PURPOSE = "gate"
# Responses up to this size are read whole and sent in one write; larger ones (and those of
# unknown length) are streamed as they arrive.
SMALL_BODY = 64 * 1024
# Seconds to reach an application's port; reading has no limit (long polls, streams).
CONNECT_TIMEOUT = 10.0
# Idle upstream connections are kept this long for the next request.
KEEPALIVE_TIMEOUT = 30.0
MAX_VERIFIED_COOKIES = 10_000

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # The gate answers Expect itself; the application must not wait for it again.
        "expect",
    }
)
# Set per hop below, or by the WebSocket client; never copied.
_REQUEST_REWRITTEN = frozenset({"cookie", "authorization", "x-forwarded-for"})
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Cookies that are ours or the hub's: credentials of the service, never the application's.
_OUR_COOKIES = frozenset({GATE_COOKIE, SESSION_COOKIE, XSRF_COOKIE})
_OUR_COOKIE_PREFIXES = (STATE_COOKIE_PREFIX, "jupyterhub-")
# aiohttp's client would otherwise add these when the browser did not send them.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
_PAGE_METHODS = frozenset({"GET", "HEAD"})
# Close codes that may not appear in a close frame (RFC 6455 §7.4.1), or are not codes.
_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


def _is_ours(cookie_name: str) -> bool:
    return cookie_name in _OUR_COOKIES or cookie_name.startswith(_OUR_COOKIE_PREFIXES)


@dataclass(slots=True)
class Gate:
    """What the gate handlers share: the access decisions, and one client to the applications."""

    access: GateAccess
    signer: CookieSigner
    store: LoginSessionStore
    identify: AccessService
    prefix: str
    clock: Callable[[], float]
    client: aiohttp.ClientSession | None = field(default=None)
    # Cookie values whose signature was checked: value -> (valid until, payload). Checking
    # an HMAC on every request of a page's assets is a tenth of the gate's time.
    verified: dict[str, tuple[float, str]] = field(default_factory=dict)

    def cookie_payload(self, value: str) -> str | None:
        now = self.clock()
        known = self.verified.get(value)
        if known is not None and now <= known[0]:
            return known[1]
        payload = self.signer.unsign(_GATE_PURPOSE, value, max_age=self.store.max_age)
        if payload is not None:
            if len(self.verified) >= MAX_VERIFIED_COOKIES:
                self.verified.clear()
            issued = int(value.split(".")[1])
            self.verified[value] = (issued + self.store.max_age, payload)
        return payload

    def entry_url(self, url_id: str) -> str:
        return f"{self.prefix}gate/{url_id}"


def setup_gate(app: web.Application, deps: WebDeps) -> bool:
    """Mount the gate when the sessions route through it (gated mode); True if mounted.

    Needs ``ACCESS``, ``SIGNER``, ``LOGIN_SESSIONS``, ``IDENTITY`` and ``URLS`` set on
    ``app``, and ``deps.sessions`` built with ``AccessMode.GATED``. Otherwise (direct mode,
    or no container engine) nothing is mounted and container paths answer 404 here.
    """
    sessions = deps.sessions
    if sessions is None or sessions.access is not AccessMode.GATED:
        return False
    prefix = app[URLS].prefix
    app[GATE] = Gate(
        access=GateAccess(sessions, deps.uow_factory, clock=deps.clock),
        signer=app[SIGNER],
        store=app[LOGIN_SESSIONS],
        identify=app[ACCESS],
        prefix=prefix,
        clock=deps.clock,
    )
    app.cleanup_ctx.append(_client_lifespan)
    app.router.add_get(prefix + "gate/{url_id}", gate_entry, name="gate_entry")
    app.router.add_route("*", GATE_PATH, gated, name="gated")
    return True


async def _client_lifespan(app: web.Application) -> AsyncIterator[None]:
    gate = app[GATE]
    connector = aiohttp.TCPConnector(
        limit=0, keepalive_timeout=KEEPALIVE_TIMEOUT, use_dns_cache=False
    )
    gate.client = aiohttp.ClientSession(
        connector=connector,
        # One client serves every user: a shared cookie jar would hand one user's application
        # cookies to another's requests.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
    )
    try:
        yield
    finally:
        client, gate.client = gate.client, None
        await client.close()


# ---------------------------------------------------------------------------- {svc}gate/<url_id>
def safe_next(target: GateTarget, next_url: str | None) -> str:
    """Where to go after the cookie is set: ``next`` if it stays inside the application.

    Raises ``InvalidRequest`` for anything else (another path, a scheme or host, dot
    segments, backslashes, control characters), so the gate never redirects elsewhere.
    """
    base = target.urlpath
    if not next_url:
        return base + "/"
    if (
        not (next_url == base or next_url.startswith(base + "/") or next_url.startswith(base + "?"))
        or "\\" in next_url
        or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in next_url)
    ):
        raise InvalidRequest("the page to return to is not part of this application")
    path = next_url.partition("?")[0].partition("#")[0]
    if any(segment in {".", ".."} for segment in unquote(path).split("/")):
        raise InvalidRequest("the page to return to is not part of this application")
    return next_url


async def gate_entry(request: web.Request) -> web.StreamResponse:
    """Sign in if needed, decide access to the application, set its cookie, go back."""
    gate = request.app[GATE]
    target = await gate.access.target(request.match_info["url_id"])
    next_url = safe_next(target, request.query.get("next"))
    auth = await resolve_auth(request)
    if auth is None:
        raise login_redirect(request)
    if auth.session_id is None:
        raise Unauthorized("open the application in a browser signed in to this service")
    allowed = gate.access.may_enter(auth.user, target)
    gate.access.remember(auth.session_id, target.url_id, allowed)
    if not allowed:
        log.info("gate.refused", user=auth.user.name, url_id=target.url_id)
        raise Forbidden("this application is not shared with you")
    response = web.HTTPFound(next_url)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        GATE_COOKIE,
        gate.signer.sign(_GATE_PURPOSE, f"{auth.session_id} {target.url_id}"),
        path=target.urlpath + "/",
        max_age=int(gate.store.max_age),
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    log.info("gate.entered", user=auth.user.name, url_id=target.url_id, owner=target.owner)
    raise response


# ---------------------------------------------------------------------------- the gated paths
@dataclass(slots=True)
class _Caller:
    """What the request carries: the valid gate cookie's login session, and what to forward."""

    session_id: str | None = None
    hub_token: str | None = None
    user: str | None = None
    stale_cookie: bool = False
    forwarded_cookie: str | None = None


def _read_cookies(request: web.Request, gate: Gate, url_id: str) -> _Caller:
    caller = _Caller()
    kept: list[str] = []
    for header in request.headers.getall("Cookie", ()):
        for part in header.split(";"):
            crumb = part.strip()
            if not crumb:
                continue
            name, _, value = crumb.partition("=")
            if name != GATE_COOKIE:
                if not _is_ours(name):
                    kept.append(crumb)
                continue
            if caller.session_id is not None:
                continue
            payload = gate.cookie_payload(value)
            session_id, _, cookie_url_id = (payload or "").partition(" ")
            session = gate.store.get(session_id) if cookie_url_id == url_id else None
            if session is None:
                caller.stale_cookie = True
                continue
            caller.session_id, caller.hub_token, caller.user = (
                session.id,
                session.hub_token,
                session.user,
            )
    if kept:
        caller.forwarded_cookie = "; ".join(kept)
    return caller


def _authorization_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


async def _hub_user(request: web.Request, token: str) -> AuthenticatedUser:
    hub_user = await request.app[IDENTITY].user_for_token(token)
    return request.app[GATE].identify.identify(hub_user)


async def _admit(request: web.Request, gate: Gate, target: GateTarget, caller: _Caller) -> None:
    """Return if the caller may reach ``target``; else raise (or redirect to the gate page)."""
    session_id = caller.session_id
    if session_id is not None:
        allowed = gate.access.decision(session_id, target.url_id)
        if allowed is None:
            assert caller.hub_token is not None
            try:
                user = await _hub_user(request, caller.hub_token)
            except Unauthorized:
                # The hub ended the sign-in (logout, revocation): so does the gate.
                gate.store.delete(session_id)
                gate.access.forget_principal(session_id)
                log.info("gate.session_ended_by_hub", user=caller.user)
                user = None
            if user is not None and user.name != caller.user:
                user = None
            if user is None:
                caller.session_id, caller.stale_cookie = None, True
                _refuse_anonymous(request, gate, target, caller)
            allowed = gate.access.may_enter(user, target)
            gate.access.remember(session_id, target.url_id, allowed)
        if allowed:
            return
        raise Forbidden("this application is not shared with you")

    token = _authorization_token(request)
    if token is not None:
        user = await _hub_user(request, token)
        if gate.access.may_enter(user, target):
            return
        raise Forbidden("this application is not shared with you")
    _refuse_anonymous(request, gate, target, caller)


def _refuse_anonymous(
    request: web.Request, gate: Gate, target: GateTarget, caller: _Caller
) -> NoReturn:
    if request.method in _PAGE_METHODS and not _is_websocket(request):
        redirect = web.HTTPFound(
            gate.entry_url(target.url_id) + "?next=" + quote(request.raw_path, safe="")
        )
        redirect.headers["Cache-Control"] = "no-store"
        if caller.stale_cookie:
            redirect.del_cookie(GATE_COOKIE, path=target.urlpath + "/")
        raise redirect
    raise Unauthorized("sign in to the service first, then open the application again")


def _is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def gated(request: web.Request) -> web.StreamResponse:
    """Every request below ``/user/<name>/containers/<url_id>``: check, then forward."""
    gate = request.app[GATE]
    url_id = request.match_info["url_id"]
    target = gate.access.cached_target(url_id) or await gate.access.target(url_id)
    path, _, query = request.raw_path.partition("?")
    base = target.urlpath
    # The name segment too must be the owner's, exactly as the route spells it.
    if not path.startswith(base) or (len(path) > len(base) and path[len(base)] != "/"):
        raise NotFound(f"there is no application {url_id} running")
    if len(path) == len(base) and request.method in _PAGE_METHODS:
        # The cookie's path is the application's folder: go there first.
        raise web.HTTPFound(base + "/" + ("?" + query if query else ""))

    caller = _read_cookies(request, gate, url_id)
    await _admit(request, gate, target, caller)
    client = gate.client
    if client is None:
        raise Unavailable("the service is shutting down")
    request[QUIET_ACCESS_LOG] = True
    headers = _upstream_headers(request, caller)
    url = URL(target.origin + request.raw_path, encoded=True)
    if _is_websocket(request):
        return await _forward_websocket(request, client, url, headers, gate, target)
    return await _forward_http(request, client, url, headers, gate, target)


# ---------------------------------------------------------------------------- headers
def _connection_tokens(headers: Iterable[str]) -> frozenset[str]:
    tokens: set[str] = set()
    for value in headers:
        tokens.update(token.strip().lower() for token in value.split(","))
    return frozenset(tokens)


def _upstream_headers(request: web.Request, caller: _Caller) -> CIMultiDict[str]:
    incoming = request.headers
    listed = _connection_tokens(incoming.getall("Connection", ()))
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in _REQUEST_REWRITTEN or lower in listed:
            continue
        headers.add(name, value)
    if caller.forwarded_cookie:
        headers["Cookie"] = caller.forwarded_cookie
    authorization = incoming.get("Authorization")
    if authorization is not None and not _carries_our_token(authorization, caller):
        headers["Authorization"] = authorization
    peer = request.remote or "unknown"
    chain = incoming.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{chain}, {peer}" if chain else peer
    if "X-Forwarded-Proto" not in headers:
        headers["X-Forwarded-Proto"] = "https" if is_https(request) else "http"
    if "X-Forwarded-Host" not in headers and request.host:
        headers["X-Forwarded-Host"] = request.host
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return headers


def _carries_our_token(authorization: str, caller: _Caller) -> bool:
    """JupyterHub's ``token`` scheme always; a bearer token when it is the hub token we hold."""
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "token":
        return True
    return scheme == "bearer" and caller.hub_token is not None and value.strip() == caller.hub_token


def _downstream_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    incoming = upstream.headers
    listed = _connection_tokens(incoming.getall("Connection", ()))
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in listed:
            continue
        if lower == "set-cookie" and _is_ours(value.partition("=")[0].strip()):
            # An application may not plant or overwrite the service's credentials.
            continue
        headers.add(name, value)
    return headers


# ---------------------------------------------------------------------------- HTTP
async def _forward_http(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    gate: Gate,
    target: GateTarget,
) -> web.StreamResponse:
    method = request.method
    try:
        upstream_cm = client.request(
            method,
            url,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        )
        upstream = await upstream_cm.__aenter__()
    except aiohttp.ClientConnectorError:
        gate.access.forget(target.url_id)
        raise Unavailable("the application does not answer") from None
    except (TimeoutError, aiohttp.ClientError):
        raise Unavailable("the application did not answer properly") from None
    try:
        response_headers = _downstream_headers(upstream)
        length = upstream.content_length
        if method != "HEAD" and length is not None and length <= SMALL_BODY:
            try:
                body = await upstream.read()
            except (TimeoutError, aiohttp.ClientError):
                raise Unavailable("the application did not answer properly") from None
            response_headers.popall("Content-Length", None)
            return web.Response(
                status=upstream.status,
                reason=upstream.reason,
                headers=response_headers,
                body=body,
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=response_headers
        )
        await response.prepare(request)
        if method != "HEAD":
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError):
                # The status is sent already: cut the connection so the browser sees a
                # truncated answer, not a complete one.
                if request.transport is not None:
                    request.transport.close()
                return response
            except ConnectionResetError:
                return response  # the browser went away
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
    finally:
        upstream.release()


# ---------------------------------------------------------------------------- WebSocket
def _requested_protocols(request: web.Request) -> tuple[str, ...]:
    protocols: list[str] = []
    for value in request.headers.getall("Sec-WebSocket-Protocol", ()):
        protocols.extend(p.strip() for p in value.split(",") if p.strip())
    return tuple(protocols)


def _sendable(code: int | None) -> int:
    if code is None or code == 1005:
        return 1000
    if code in _RESERVED_CLOSE_CODES or not (1000 <= code <= 4999) or 1016 <= code < 3000:
        return 1011
    return code


async def _forward_websocket(
    request: web.Request,
    client: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    gate: Gate,
    target: GateTarget,
) -> web.StreamResponse:
    for name in _WS_HANDSHAKE:
        headers.popall(name, None)
    try:
        upstream = await client.ws_connect(
            url,
            protocols=_requested_protocols(request),
            headers=headers,
            autoclose=False,
            autoping=True,
            max_msg_size=0,
            compress=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        # The application refused the upgrade: say so with its status, not its body.
        status = exc.status if 400 <= exc.status < 600 else 502
        return web.Response(status=status, text=f"{status}: the application refused\n")
    except aiohttp.ClientConnectorError:
        gate.access.forget(target.url_id)
        raise Unavailable("the application does not answer") from None
    except (TimeoutError, aiohttp.ClientError):
        raise Unavailable("the application did not answer properly") from None

    browser = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=True,
        max_msg_size=0,
        compress=False,
    )
    try:
        await browser.prepare(request)
        await _splice(browser, upstream)
    finally:
        await upstream.close()
    return browser


_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: _Socket, sink: _Socket) -> int:
    """Copy messages until ``source`` closes; returns the close code to pass on."""
    binary, text, close = WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CLOSE
    while True:
        message = await source.receive()
        kind = message.type
        if kind is binary:
            await sink.send_bytes(message.data)
        elif kind is text:
            await sink.send_str(message.data)
        elif kind is close:
            code = _sendable(message.data)
            extra = message.extra if isinstance(message.extra, str) else ""
            await sink.close(code=code, message=extra.encode()[:123])
            return code
        elif kind is WSMsgType.CLOSING:
            return 1000  # the other pump is closing this side
        else:  # CLOSED, ERROR: the connection went without a close frame
            return 1011 if kind is WSMsgType.ERROR else 1001


async def _splice(
    browser: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Pump both directions at once; the first side to close closes the other with its code."""
    tasks = (
        asyncio.ensure_future(_pump(browser, upstream)),
        asyncio.ensure_future(_pump(upstream, browser)),
    )
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        code = 1011 if first.cancelled() or first.exception() is not None else first.result()
        # Answers the side that closed first, and stops the other pump (a no-op if closed).
        await browser.close(code=code)
        await upstream.close(code=code)
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
