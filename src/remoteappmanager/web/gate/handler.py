"""The gate: who may reach a running application, and the page that lets a browser in."""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote

import structlog
from aiohttp import web

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from remoteappmanager.domain.routing import app_origin, is_app_host
from remoteappmanager.domain.shares import ShareMode
from remoteappmanager.ports.identity import IdentityProvider
from remoteappmanager.services.access import AccessService, AuthenticatedUser
from remoteappmanager.services.activity import ActivityTracker
from remoteappmanager.services.gate_access import GateAccess, GateTarget
from remoteappmanager.settings import Settings
from remoteappmanager.web.auth import is_https, login_redirect, resolve_auth
from remoteappmanager.web.cookies import CookieSigner
from remoteappmanager.web.deps import WebDeps
from remoteappmanager.web.desktop_viewer import (
    PROVISION_STEP,
    VIEWER_DIR,
    DesktopViewer,
    ViewerBuildError,
    bundler_beside,
    find_novnc,
)
from remoteappmanager.web.errors import error_page
from remoteappmanager.web.gate.credentials import (
    GATE_COOKIE,
    GatePass,
    authorization_token,
    expired_gate_cookie,
    forwarded_authorization,
    gate_set_cookie,
    origin_of_url,
    read_gate_pass,
    request_origin,
    serialise_origin,
    sort_cookies,
)
from remoteappmanager.web.gate.framing import GateRequest
from remoteappmanager.web.gate.listener import (
    MAX_CONNECTIONS_PER_USER,
    WEBSOCKET_PING_INTERVAL,
    Answer,
    Forward,
    GateServer,
    Verdict,
    ViewerInput,
)
from remoteappmanager.web.keys import (
    GATE,
    SETTINGS,
    URLS,
)
from remoteappmanager.web.listening import GATE_SETTING, listen_failure
from remoteappmanager.web.login_sessions import LoginSessionStore
from remoteappmanager.web.pages import (
    app_sources,
    page_headers,
    require_navigation,
    xsrf_token_for_page,
)
from remoteappmanager.web.urls import ServiceUrls

log = structlog.get_logger(__name__)

_GATE_PURPOSE = "gate"
# Appended to a gate cookie's payload when an admin confirmed entering someone else's
# application: only such a cookie keeps opening it on the admin flag alone.
MAX_VERIFIED_COOKIES = 10_000
# Per-application hosts: the path under an application's own host where a ticket from
# ``{svc}gate/<url_id>`` becomes that host's cookie; a ticket works once, this long.
ENTER_PATH = "/.remoteapp-gate-enter"
TICKET_TTL = 60.0
MAX_TICKETS = 10_000
MAX_VIEWERS = 10_000
# How often open WebSockets (and answers under way) are checked against the decision that
# let them in: an ended grant, share or admin right cuts them within this (plus the identity
# cache's time).
RECHECK_INTERVAL = 3.0
_PAGE_METHODS = frozenset({"GET", "HEAD"})
_CONFIRM_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Enter {owner}'s session?</title></head>
<body>
<h1 id="enter-title">You are about to enter {owner}'s session</h1>
<p>This application belongs to <strong id="enter-owner">{owner}</strong>. You may open it
because you are an administrator; what you see and do there is {owner}'s, and your entry
is recorded.</p>
<form method="post" action="{action}">
<input type="hidden" name="_xsrf" value="{xsrf}">
<input type="hidden" name="next" value="{next}">
<button type="submit" id="enter-confirm">Enter {owner}'s session</button>
</form>
<p><a href="{home}">Back to the applications</a></p>
</body>
</html>
"""


@dataclass(slots=True)
class _Caller:
    """What the request carries: the valid gate cookie's login session, and what to forward."""

    session_id: str | None = None
    hub_token: str | None = None
    user: str | None = None
    confirmed: bool = False
    stale_cookie: bool = False
    forwarded_cookie: str | None = None


@dataclass(frozen=True, slots=True)
class _Ticket:
    """A one-time pass from ``{svc}gate/<url_id>`` to the application's own host."""

    session_id: str
    url_id: str
    next_url: str
    expires: float
    confirmed: bool
    mode: ShareMode | None = None


@dataclass(slots=True)
class Gate:
    """The gatekeeper of the gate's listener (see ``listener.Gatekeeper``).

    In gated mode the proxy routes ``/user/<name>/containers/<url_id>`` to the gate's own
    listener (``Settings.gate_address``) with the full path. A browser gets in with a
    per-application cookie (``remoteapp-gate``, scoped to the application's path, signed,
    binding the login session and the url id), minted by ``{svc}gate/<url_id>``: a page of
    the service, so that the service's session cookie is sent there. API clients may send
    ``Authorization: token <hub token>`` instead. Our cookies and tokens never reach the
    application (``credentials``).

    A WebSocket is let in only from an allowed ``Origin``: the one the request was
    addressed to (``Host`` and ``X-Forwarded-Proto``), ``public_origins`` (the hub's public
    URL), or one ``application_origins(target)`` names (an application served from a host
    of its own). A WebSocket without ``Origin`` is not a browser's: it must authenticate
    with a hub token in ``Authorization``, and cookies do not count for it.

    Open WebSockets and answers under way (streams, long polls) are found by what let them
    in (login session or token) and cut when it ends: at once when the login session ends
    (``session_ended``), and otherwise at the next ``recheck`` (every ``recheck_interval``
    seconds), which takes the gate's decision again with fresh answers. Idle keep-alive
    connections from the proxy are left alone: they carry any user's next request, which is
    decided on its own.

    With ``app_origins`` (``Settings.app_origin_template``) each application is served only
    on its own host: on any other host (the service's) its paths redirect to the entry page,
    which hands the browser a one-time ticket for ``<app host><urlpath>/.remoteapp-gate-enter``;
    there the gate turns it into a cookie of that host alone.

    ``check`` answers from caches only: the running application (``GateAccess``), the gate
    cookie's signature, the login session, and the access decision per (login session,
    application). Whatever it cannot answer, ``decide`` looks up: the session list, the hub.
    """

    access: GateAccess
    signer: CookieSigner
    store: LoginSessionStore
    identity: IdentityProvider
    identify: AccessService
    prefix: str
    clock: Callable[[], float]
    app_origins: str | None = None
    public_origin: str = ""
    server: GateServer = field(init=False)
    tickets: dict[str, _Ticket] = field(default_factory=dict)
    # Cookie values whose signature was checked: value -> (valid until, payload), kept until
    # the cookie expires. Checking an HMAC on every request of a page's assets is a tenth of
    # the gate's time.
    verified: TtlCache[str, tuple[float, str]] = field(init=False)
    public_origins: frozenset[str] = frozenset()
    application_origins: Callable[[GateTarget], Iterable[str]] | None = None
    max_connections_per_user: int = MAX_CONNECTIONS_PER_USER
    recheck_interval: float = RECHECK_INTERVAL
    # (url_id, viewer) -> (their mode, the input state all their connections share)
    viewers: dict[tuple[str, str], tuple[ShareMode, ViewerInput]] = field(default_factory=dict)
    _rechecks: set[asyncio.Task[int]] = field(default_factory=set)
    websocket_ping_s: float = WEBSOCKET_PING_INTERVAL
    # Served under every application's ``<urlpath>/.remoteapp-desktop/`` to whoever the gate
    # lets in (``web.desktop_viewer``); None when noVNC is not installed beside the proxy.
    desktop: DesktopViewer | None = None
    activity: ActivityTracker | None = None
    """Told of every client input that is let through (idle sessions are culled)."""
    clipboard_in: bool = True

    def __post_init__(self) -> None:
        self.verified = TtlCache(
            ttl=0.0,
            maxsize=MAX_VERIFIED_COOKIES,
            clock=self.clock,
            ttl_of=lambda known: known[0] - self.clock(),
        )
        self.server = GateServer(
            self,
            max_per_user=self.max_connections_per_user,
            ping_interval=self.websocket_ping_s,
        )

    def cookie_payload(self, value: str) -> str | None:
        known = self.verified.peek(value)
        if known is not None:
            return known[1]
        payload = self.signer.unsign(_GATE_PURPOSE, value, max_age=self.store.max_age)
        if payload is not None:
            issued = int(value.split(".")[1])
            self.verified.put(value, (issued + self.store.max_age, payload))
        return payload

    def entry_url(self, url_id: str) -> str:
        """The entry page, absolute when applications have hosts of their own."""
        return f"{self.public_origin}{self.prefix}gate/{url_id}"

    def cookie_value(self, session_id: str, url_id: str, *, confirmed: bool) -> str:
        """A signed gate cookie for this login session and application."""
        payload = GatePass(session_id, url_id, confirmed).payload()
        return self.signer.sign(_GATE_PURPOSE, payload)

    def issue_ticket(
        self,
        session_id: str,
        target: GateTarget,
        next_url: str,
        *,
        confirmed: bool,
        mode: ShareMode | None = None,
    ) -> str:
        """The URL on the application's own host that lets this login session in, once."""
        assert self.app_origins is not None
        now = self.clock()
        if len(self.tickets) >= MAX_TICKETS:
            for key in [key for key, ticket in self.tickets.items() if ticket.expires <= now]:
                del self.tickets[key]
            if len(self.tickets) >= MAX_TICKETS:
                self.tickets.clear()
        ticket = secrets.token_urlsafe(32)
        self.tickets[ticket] = _Ticket(
            session_id, target.url_id, next_url, now + TICKET_TTL, confirmed, mode
        )
        origin = app_origin(self.app_origins, target.url_id)
        return f"{origin}{target.urlpath}{ENTER_PATH}?ticket={ticket}"

    # ------------------------------------------------------------------ the gatekeeper
    def check(self, request: GateRequest) -> Verdict | None:
        path, _, query = request.target.partition("?")
        url_id = _url_id_in(path)
        if url_id is None:
            return self._page(404, "there is no such application running")
        target = self.access.cached_target(url_id)
        if target is None:
            return None
        if self.store.persistent and any(
            self.store.get(session_id) is None
            for session_id in self._cookie_sessions(request.cookies, url_id)
        ):
            return None  # opened through another replica, maybe: ``decide`` loads it
        verdict = self._verdict(request, path, query, target)
        return None if isinstance(verdict, _Caller) else verdict

    async def decide(self, request: GateRequest) -> Verdict:
        path, _, query = request.target.partition("?")
        url_id = _url_id_in(path)
        if url_id is None:
            return self._page(404, "there is no such application running")
        try:
            target = await self.access.target(url_id)
            for session_id in self._cookie_sessions(request.cookies, url_id):
                await self.store.load(session_id)
            verdict = self._verdict(request, path, query, target)
            if not isinstance(verdict, _Caller):
                return verdict
            if verdict.session_id is not None:
                return await self._ask_hub(request, target, verdict)
            return await self._check_token(request, target, verdict)
        except NotFound as exc:
            return self._page(404, exc.message)
        except Unauthorized as exc:
            return self._page(401, exc.message)
        except Forbidden as exc:
            # A token without this service's access scope (the API answers the same).
            return self._page(403, exc.message)
        except Unavailable as exc:
            log.warning("gate.unavailable", url_id=url_id, message=exc.message)
            return self._page(503, exc.message)

    def unreachable(self, url_id: str) -> None:
        self.access.forget(url_id)

    def client_input(self, url_id: str) -> None:
        if self.activity is not None:
            self.activity.client_input(url_id)

    # ------------------------------------------------------------------ decisions
    def _verdict(
        self, request: GateRequest, path: str, query: str, target: GateTarget
    ) -> Verdict | _Caller:
        """The verdict, or the caller when the hub must be asked about them."""
        base = target.urlpath
        # The name segment too must be the owner's, exactly as the route spells it.
        if not path.startswith(base) or (len(path) > len(base) and path[len(base)] != "/"):
            return self._page(404, f"there is no application {target.url_id} running")
        if self.app_origins is not None:
            if not is_app_host(self.app_origins, target.url_id, request.host or ""):
                # Never served on a shared host: the service's origin stays the service's.
                if request.method in _PAGE_METHODS and not request.websocket:
                    location = (
                        self.entry_url(target.url_id) + "?next=" + quote(request.target, safe="")
                    )
                    return Answer(302, (("Location", location), ("Cache-Control", "no-store")))
                return self._page(404, f"application {target.url_id} is served on its own host")
            if path == base + ENTER_PATH:
                return self._redeem(request, query, target)
        if len(path) == len(base) and request.method in _PAGE_METHODS:
            # The cookie's path is the application's folder: go there first.
            return Answer(302, (("Location", base + "/" + ("?" + query if query else "")),))
        if request.websocket and not self.origin_allowed(request, target):
            if request.origin is None and authorization_token(request.authorization):
                # Not a browser's (browsers always send Origin on a WebSocket, and cannot set
                # Authorization): the token alone decides.
                return _Caller(forwarded_cookie=sort_cookies(request.cookies)[1])
            origin = None if request.origin is None else request.origin[:200]
            log.info("gate.foreign_origin", url_id=target.url_id, origin=origin)
            return self._page(403, "a WebSocket opened from another site is not let through")
        caller = self._read_cookies(request.cookies, target.url_id)
        session_id = caller.session_id
        if session_id is not None:
            allowed = self.access.decision(session_id, target.url_id)
            if allowed is None:
                return caller
            if allowed:
                mode = self.access.decided_mode(session_id, target.url_id)
                return self._forward(request, target, caller, caller.user, mode=mode)
            return self._page(403, "this application is not shared with you")
        if authorization_token(request.authorization) is not None:
            return caller
        return self._refuse_anonymous(request, target, caller.stale_cookie)

    def _redeem(self, request: GateRequest, query: str, target: GateTarget) -> Answer:
        """A ticket from the entry page, turned into this host's cookie (once)."""
        values = parse_qs(query).get("ticket", [])
        ticket = self.tickets.pop(values[0], None) if len(values) == 1 else None
        if (
            request.method not in _PAGE_METHODS
            or ticket is None
            or ticket.url_id != target.url_id
            or ticket.expires <= self.clock()
        ):
            return self._page(403, "this entry link was used or has expired: open it again")
        session = self.store.get(ticket.session_id)
        if session is None:
            return self._page(401, "sign in to the service first, then open the application again")
        self.access.remember(session.id, target.url_id, True, ticket.mode)
        value = self.cookie_value(session.id, target.url_id, confirmed=ticket.confirmed)
        assert self.app_origins is not None
        cookie = gate_set_cookie(
            value,
            target.urlpath,
            max_age=int(self.store.max_age),
            secure=self.app_origins.startswith("https:"),
        )
        headers = (
            ("Location", ticket.next_url),
            ("Set-Cookie", cookie),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
        )
        return Answer(302, headers)

    def _cookie_sessions(self, headers: Iterable[str], url_id: str) -> list[str]:
        """The login sessions the request's valid gate cookies for ``url_id`` name."""
        found = []
        for value in sort_cookies(headers)[0]:
            gate_pass = read_gate_pass(self.cookie_payload(value))
            if gate_pass is not None and gate_pass.url_id == url_id:
                found.append(gate_pass.session_id)
        return found

    def _read_cookies(self, headers: Iterable[str], url_id: str) -> _Caller:
        caller = _Caller()
        gate_values, caller.forwarded_cookie = sort_cookies(headers)
        for value in gate_values:
            gate_pass = read_gate_pass(self.cookie_payload(value))
            if gate_pass is None or gate_pass.url_id != url_id:
                caller.stale_cookie = True
                continue
            session = self.store.get(gate_pass.session_id)
            if session is None:
                caller.stale_cookie = True
                continue
            caller.session_id, caller.hub_token, caller.user = (
                session.id,
                session.hub_token,
                session.user,
            )
            caller.confirmed = gate_pass.confirmed
            break
        return caller

    async def _ask_hub(self, request: GateRequest, target: GateTarget, caller: _Caller) -> Verdict:
        session_id, hub_token = caller.session_id, caller.hub_token
        assert session_id is not None
        assert hub_token is not None
        user: AuthenticatedUser | None
        try:
            user = self.identify.identify(await self.identity.user_for_token(hub_token))
        except Unauthorized:
            # The hub ended the sign-in (logout, revocation): so does the gate.
            await self.store.end(session_id)
            self.access.forget_principal(session_id)
            log.info("gate.session_ended_by_hub", user=caller.user)
            user = None
        if user is None or user.name != caller.user:
            return self._refuse_anonymous(request, target, stale_cookie=True)
        # The admin flag alone opens someone else's application only to a confirmed entry
        # (the application may have been shared when this cookie was made, and no longer is).
        allowed = self.access.admits(user, target, confirmed=caller.confirmed)
        mode = self.access.mode_of(user, target, confirmed=caller.confirmed)
        self.access.remember(session_id, target.url_id, allowed, mode)
        if not allowed:
            log.info("gate.refused", user=user.name, url_id=target.url_id)
            return self._page(403, "this application is not shared with you")
        return self._forward(request, target, caller, user.name, mode=mode)

    async def _check_token(
        self, request: GateRequest, target: GateTarget, caller: _Caller
    ) -> Verdict:
        token = authorization_token(request.authorization)
        assert token is not None
        user = self.identify.identify(await self.identity.user_for_token(token))
        # An admin enters someone else's application only as a confirmed browser action.
        if self.access.admits(user, target, confirmed=False):
            mode = self.access.mode_of(user, target, confirmed=False)
            return self._forward(request, target, caller, user.name, token=token, mode=mode)
        log.info("gate.refused", user=user.name, url_id=target.url_id)
        return self._page(403, "this application is not shared with you")

    def _forward(
        self,
        request: GateRequest,
        target: GateTarget,
        caller: _Caller,
        user: str | None,
        *,
        token: str | None = None,
        mode: ShareMode | None = None,
    ) -> Verdict:
        if self.desktop is not None and not request.websocket:
            path = request.target.partition("?")[0]
            viewer_dir = target.urlpath + VIEWER_DIR
            if path.startswith(viewer_dir):
                # Let in like any request to the application, answered from memory.
                if request.method not in _PAGE_METHODS:
                    return self._page(405, "the desktop viewer's files can only be read")
                return self.desktop.answer(
                    request.method,
                    path[len(viewer_dir) :],
                    accept_encoding=request.accept_encoding,
                    if_none_match=request.if_none_match,
                )
        viewer: ViewerInput | None = None
        if mode is not None and user is not None:
            viewer = self.viewer_input(target, user, mode)
            if not viewer.input_allowed and request.method not in _PAGE_METHODS:
                # A viewer reads; anything but a read could act in the application (and for
                # a desktop, the only input is over its WebSocket, which the relay filters).
                return self._page(403, "this application is shared with you to view only")
        elif not self.clipboard_in and target.protocol == "vnc":
            # The owner's (or an admin's) input passes, but not the browser's clipboard.
            viewer = ViewerInput(input_allowed=True, protocol="vnc", clipboard_in=False)
        principal: Hashable | None = None
        if caller.session_id is not None:
            principal = (_SESSION, caller.session_id)
        elif token is not None:
            principal = (_TOKEN, token)
        return Forward(
            url_id=target.url_id,
            host=target.host,
            port=target.port,
            cookie=caller.forwarded_cookie,
            authorization=forwarded_authorization(request.authorization),
            cookie_path=target.urlpath + "/",
            user=user,
            principal=principal,
            viewer=viewer,
            rfb_activity=target.protocol == "vnc",
        )

    # ------------------------------------------------------------------ viewers
    def viewer_input(self, target: GateTarget, user: str, mode: ShareMode) -> ViewerInput:
        """The input state of ``user``'s connections to ``target`` (one object for all)."""
        key = (target.url_id, user)
        entry = self.viewers.get(key)
        allowed = self.access.input_allowed(target.url_id, user, mode)
        if entry is None:
            if len(self.viewers) >= MAX_VIEWERS:
                self._sweep_viewers()
            viewer = ViewerInput(
                input_allowed=allowed, protocol=target.protocol, clipboard_in=self.clipboard_in
            )
            self.viewers[key] = (mode, viewer)
            return viewer
        viewer = entry[1]
        viewer.input_allowed = allowed
        if entry[0] is not mode:
            self.viewers[key] = (mode, viewer)
        return viewer

    def _sweep_viewers(self) -> None:
        held = {url_id for _who, url_id in self.server.holders()}
        for key in [key for key in self.viewers if key[0] not in held]:
            del self.viewers[key]

    def shares_changed(self, url_id: str) -> None:
        """A session's shares or control changed: flip its viewers' input now, decide
        afresh, and cut at once the connections no share lets in any more."""
        self.access.forget_url(url_id)
        for (viewed, user), (mode, viewer) in list(self.viewers.items()):
            if viewed == url_id:
                viewer.input_allowed = self.access.input_allowed(url_id, user, mode)
        try:
            task = asyncio.get_running_loop().create_task(self.recheck({url_id}))
        except RuntimeError:
            return  # no loop (a command-line use): nothing is connected either
        self._rechecks.add(task)
        task.add_done_callback(self._rechecked)

    def _rechecked(self, task: asyncio.Task[int]) -> None:
        self._rechecks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gate.recheck_failed", error=str(task.exception()))

    def connected(self, url_id: str) -> list[tuple[str, ShareMode | None, bool]]:
        """Who has a connection to session ``url_id`` open now, as (user, viewer's mode
        or None, whether their input gets through), by name; signed-in browsers only."""
        found: dict[str, tuple[str, ShareMode | None, bool]] = {}
        for principal, held in self.server.holders():
            if held != url_id or not isinstance(principal, tuple) or principal[0] != _SESSION:
                continue
            session = self.store.get(principal[1])
            if session is None:
                continue
            entry = self.viewers.get((url_id, session.user))
            if entry is None:
                found[session.user] = (session.user, None, True)
            else:
                found[session.user] = (session.user, entry[0], entry[1].input_allowed)
        return [found[name] for name in sorted(found)]

    # ------------------------------------------------------------------ open connections
    def origin_allowed(self, request: GateRequest, target: GateTarget) -> bool:
        """Whether a WebSocket may be opened from the request's ``Origin``."""
        origin = serialise_origin(request.origin)
        if origin is None:
            return False
        if origin == request_origin(request.host, request.forwarded_proto):
            return True
        if origin in self.public_origins:
            return True
        others = self.application_origins
        return others is not None and any(
            origin == serialise_origin(allowed) for allowed in others(target)
        )

    def session_ended(self, session_id: str) -> None:
        """A login session ended: its decisions go, and its open connections are cut now."""
        self.access.forget_principal(session_id)
        principal = (_SESSION, session_id)
        closed = self.server.close_held(lambda who, _url_id: who == principal)
        if closed:
            log.info("gate.closed_on_sign_out", connections=closed)

    async def recheck(self, url_ids: set[str] | None = None) -> int:
        """Decide again for every open WebSocket and answer under way (of ``url_ids`` only,
        if given); cut the refused ones.

        Targets are looked up afresh (a revoked grant, a stopped application); the hub is
        asked through the identity provider (its cache applies). When the hub, engine or
        database cannot answer, connections stay open: they were let in, and the next
        recheck decides. Returns how many connections were closed.
        """
        pairs = {
            (who, url_id)
            for who, url_id in self.server.holders()
            if url_ids is None or url_id in url_ids
        }
        for url_id in {url_id for _who, url_id in pairs}:
            self.access.forget(url_id)
        doomed: set[tuple[Hashable | None, str]] = set()
        for principal, url_id in pairs:
            if not await self._still_allowed(principal, url_id):
                doomed.add((principal, url_id))
        if not doomed:
            return 0
        closed = self.server.close_held(lambda who, url_id: (who, url_id) in doomed)
        log.info("gate.closed_on_recheck", connections=closed)
        return closed

    async def _still_allowed(self, principal: Hashable | None, url_id: str) -> bool:
        if not isinstance(principal, tuple) or len(principal) != 2:
            return False
        kind, secret = principal
        try:
            session = await self.store.load(secret) if kind == _SESSION else None
        except Unavailable:
            return True
        if kind == _SESSION and session is None:
            return False
        token = session.hub_token if session is not None else secret
        try:
            user = self.identify.identify(await self.identity.user_for_token(token))
        except Unauthorized:
            if session is not None:
                with contextlib.suppress(Unavailable):
                    await self.store.end(session.id)  # the hub ended it: so does the service
            return False
        except Unavailable:
            return True
        try:
            target = await self.access.target(url_id)
        except NotFound:
            return False
        except Unavailable:
            return True
        if session is not None and user.name != session.user:
            return False
        was_viewer = (url_id, user.name) in self.viewers
        allowed = self.access.still_admits(user, target, was_viewer=was_viewer)
        mode = self.access.mode_of(user, target, confirmed=False) if allowed else None
        if allowed and mode is not None:
            self.viewer_input(target, user.name, mode)
        if session is not None:
            self.access.remember(session.id, url_id, allowed, mode)
        if self.access.left_group(user, target):
            # Its owner left the hub group the grant was made to: the session ends.
            await self.access.stop_left_group(user)
        return allowed

    async def rechecking(self) -> None:
        """Run ``recheck`` every ``recheck_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.recheck_interval)
            try:
                await self.recheck()
            except Exception:
                log.exception("gate.recheck_failed")

    def _refuse_anonymous(
        self, request: GateRequest, target: GateTarget, stale_cookie: bool
    ) -> Answer:
        if request.method in _PAGE_METHODS and not request.websocket:
            location = self.entry_url(target.url_id) + "?next=" + quote(request.target, safe="")
            headers = [("Location", location), ("Cache-Control", "no-store")]
            if stale_cookie:
                headers.append(("Set-Cookie", expired_gate_cookie(target.urlpath)))
            return Answer(302, tuple(headers))
        return self._page(401, "sign in to the service first, then open the application again")

    def _page(self, status: int, message: str) -> Answer:
        page = error_page(status, message, self.public_origin + self.prefix)
        return Answer(status, (("Cache-Control", "no-store"),), page.encode())


_SESSION, _TOKEN = "session", "token"


def _url_id_in(path: str) -> str | None:
    """``<url_id>`` of ``/user/<name>/containers/<url_id>[/...]``, or None."""
    parts = path.split("/", 5)
    if len(parts) < 5 or parts[0] or parts[1] != "user" or parts[3] != "containers":
        return None
    return parts[4] or None


# ---------------------------------------------------------------------------- wiring
def build_gate(
    settings: Settings,
    *,
    access: GateAccess,
    signer: CookieSigner,
    store: LoginSessionStore,
    identity: IdentityProvider,
    identify: AccessService,
    clock: Callable[[], float],
    activity: ActivityTracker | None,
) -> Gate:
    """The gate of a gated service, from the settings and the parts the composition root
    built (its listener starts with the application: ``setup_gate``)."""
    public = origin_of_url(settings.jupyterhub_public_url)
    return Gate(
        access=access,
        signer=signer,
        store=store,
        identity=identity,
        identify=identify,
        prefix=ServiceUrls.from_settings(settings).prefix,
        clock=clock,
        app_origins=settings.app_origin_template,
        public_origin=(settings.public_origin or "") if settings.app_origin_template else "",
        public_origins=frozenset({public} if public else ()),
        max_connections_per_user=settings.gate_max_connections_per_user,
        websocket_ping_s=settings.websocket_ping_s,
        desktop=_desktop_viewer(),
        activity=activity,
        clipboard_in=settings.clipboard_to_app,
    )


def setup_gate(app: web.Application, deps: WebDeps) -> bool:
    """Mount the gate the composition root built (gated mode); True if there is one.

    Mounts ``{svc}gate/<url_id>`` and, while the application runs, listens on
    ``Settings.gate_address``. Otherwise (direct mode) there is no gate and nothing is set up.
    """
    gate = deps.gate
    if gate is None:
        return False
    prefix = app[URLS].prefix
    app[GATE] = gate
    app.cleanup_ctx.append(_listening)
    app.router.add_get(prefix + "gate/{url_id}", gate_entry, name="gate_entry")
    app.router.add_post(prefix + "gate/{url_id}", gate_entry_confirmed)
    return True


def _desktop_viewer() -> DesktopViewer | None:
    """The viewer, or None (desktops then show the noVNC their image serves, if any)."""
    novnc = find_novnc()
    try:
        if novnc is None:
            raise ViewerBuildError("noVNC is not installed beside the proxy")
        viewer = DesktopViewer.load(novnc, bundler_beside(novnc))
    except (ViewerBuildError, OSError) as exc:
        log.error(
            "gate.desktop_viewer_missing",
            reason=str(exc),
            fix=f"run {PROVISION_STEP}; until then desktops show their image's own noVNC",
        )
        return None
    log.info("gate.desktop_viewer", novnc=str(novnc), script=viewer.script)
    return viewer


async def _listening(app: web.Application) -> AsyncIterator[None]:
    server = app[GATE].server
    host, port = app[SETTINGS].gate_address
    try:
        await server.start(host, port)
    except OSError as exc:
        log.error("gate.cannot_listen", host=host, port=port, error=str(exc))
        raise Unavailable(listen_failure("the gate", host, port, exc, GATE_SETTING)) from exc
    log.info("gate.listening", host=host, port=server.port)
    rechecking = asyncio.create_task(app[GATE].rechecking())
    try:
        yield
    finally:
        rechecking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rechecking
        await server.close()
        await app[GATE].access.close()


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
    """Sign in if needed, decide access to the application, let the browser in, go back.

    An admin whom only the admin flag lets in (someone else's unshared application) gets a
    confirmation page instead; its POST (``gate_entry_confirmed``) lets them in.
    """
    require_navigation(request)
    gate = request.app[GATE]
    target = await gate.access.target(request.match_info["url_id"])
    next_url = safe_next(target, request.query.get("next"))
    auth = await resolve_auth(request)
    if auth is None:
        raise login_redirect(request)
    if auth.session_id is None:
        raise Unauthorized("open the application in a browser signed in to this service")
    if not gate.access.may_enter(auth.user, target):
        gate.access.remember(auth.session_id, target.url_id, False)
        log.info("gate.refused", user=auth.user.name, url_id=target.url_id)
        raise Forbidden("this application is not shared with you")
    if gate.access.enters_as_admin(auth.user, target):
        return await _confirmation_page(request, target, next_url)
    mode = gate.access.mode_of(auth.user, target, confirmed=False)
    return _let_in(
        request, auth.session_id, auth.user.name, target, next_url, confirmed=False, mode=mode
    )


async def gate_entry_confirmed(request: web.Request) -> web.StreamResponse:
    """``POST {svc}gate/<url_id>`` from the confirmation page (CSRF-checked by the middleware)."""
    gate = request.app[GATE]
    target = await gate.access.target(request.match_info["url_id"])
    form = await request.post()
    next_field = form.get("next")
    next_url = safe_next(target, next_field if isinstance(next_field, str) else None)
    auth = await resolve_auth(request)
    if auth is None or auth.session_id is None:
        raise Unauthorized("sign in to the service first, then open the application again")
    if not gate.access.may_enter(auth.user, target):
        log.info("gate.refused", user=auth.user.name, url_id=target.url_id)
        raise Forbidden("this application is not shared with you")
    confirmed = gate.access.enters_as_admin(auth.user, target)
    if confirmed:
        await gate.access.record_entry(auth.user, target)
    mode = gate.access.mode_of(auth.user, target, confirmed=confirmed)
    return _let_in(
        request,
        auth.session_id,
        auth.user.name,
        target,
        next_url,
        confirmed=confirmed,
        mode=mode,
    )


async def _confirmation_page(
    request: web.Request, target: GateTarget, next_url: str
) -> web.StreamResponse:
    gate = request.app[GATE]
    # The button's answer sends the browser on to the application's own host, if it has one.
    response = web.Response(content_type="text/html", headers=page_headers(app_sources(request)))
    xsrf = await xsrf_token_for_page(request, response)
    response.text = _CONFIRM_PAGE.format(
        owner=html.escape(target.owner),
        action=html.escape(gate.prefix + "gate/" + target.url_id),
        xsrf=html.escape(xsrf),
        next=html.escape(next_url),
        home=html.escape(gate.prefix),
    )
    return response


def _let_in(
    request: web.Request,
    session_id: str,
    user: str,
    target: GateTarget,
    next_url: str,
    *,
    confirmed: bool,
    mode: ShareMode | None = None,
) -> web.StreamResponse:
    """Send the browser to the application with what opens it: this path's cookie, or (with
    hosts of their own) a one-time ticket that the application's host turns into its cookie."""
    gate = request.app[GATE]
    gate.access.remember(session_id, target.url_id, True, mode)
    log.info("gate.entered", user=user, url_id=target.url_id, owner=target.owner)
    if gate.app_origins is not None:
        ticket_url = gate.issue_ticket(session_id, target, next_url, confirmed=confirmed, mode=mode)
        response = web.HTTPFound(ticket_url)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        raise response
    response = web.HTTPFound(next_url)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        GATE_COOKIE,
        gate.cookie_value(session_id, target.url_id, confirmed=confirmed),
        path=target.urlpath + "/",
        max_age=int(gate.store.max_age),
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    raise response
