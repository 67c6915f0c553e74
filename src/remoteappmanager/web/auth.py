"""Who is calling: hub OAuth sign-in for browsers, hub tokens for API clients, and the guards.

Browsers: an unauthenticated page visit is redirected to the hub's OAuth authorize endpoint
(PKCE S256); ``{svc}oauth_callback`` exchanges the code, keeps the hub token server-side and
gives the browser only a signed, opaque session id. API clients send
``Authorization: token <hub token>``. Either way the hub's user model (cached briefly by the
identity provider) decides who it is, and the access service decides admin, on every request.
"""

from __future__ import annotations

import enum
import functools
import html
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TypeVar, cast

import structlog
from aiohttp import web

from remoteappmanager.domain.errors import Forbidden, InvalidRequest, Unauthorized
from remoteappmanager.domain.oauth import new_pkce_verifier, pkce_challenge
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.web.gate import credentials
from remoteappmanager.web.gate.credentials import authorization_token
from remoteappmanager.web.keys import (
    ACCESS,
    AUTH,
    IDENTITY,
    LOGIN_SESSIONS,
    SIGNER,
    STALE_SESSION,
    URLS,
)

log = structlog.get_logger(__name__)

SESSION_COOKIE = "remoteapp-session"
# One cookie per sign-in under way (the name carries the state), so that several tabs can
# sign in at once without overwriting each other's verifier.
STATE_COOKIE_PREFIX = "remoteapp-oauth-"
STATE_MAX_AGE = 600
XSRF_COOKIE = "_xsrf"
XSRF_HEADER = "X-XSRFToken"
XSRF_FIELD = "_xsrf"

_SESSION_PURPOSE = "session"
_STATE_PURPOSE = "oauth-state"
_XSRF_PURPOSE = "xsrf"
_STATE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PAGE_METHODS = frozenset({"GET", "HEAD"})

_Handler = TypeVar("_Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


class AuthMethod(enum.StrEnum):
    SESSION = "session"
    TOKEN = "token"  # noqa: S105 - the name of the Authorization scheme


@dataclass(frozen=True, slots=True)
class RequestAuth:
    """How a request was authenticated; ``session_id`` is set for browser sessions only."""

    user: AuthenticatedUser
    method: AuthMethod
    session_id: str | None = None


# ---------------------------------------------------------------------------- who is calling
def is_https(request: web.Request) -> bool:
    """Did the browser use https (directly, or to the proxy in front of us)?"""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _token_from_header(request: web.Request) -> str | None:
    return authorization_token(request.headers.get("Authorization"))


async def resolve_auth(request: web.Request) -> RequestAuth | None:
    """The request's authentication (None: anonymous), worked out once per request.

    Raises ``Unauthorized`` for an ``Authorization`` token the hub does not accept, and
    ``Unavailable`` when the hub cannot be asked.
    """
    if AUTH in request:
        return request[AUTH]
    auth = await _authenticate(request)
    request[AUTH] = auth
    return auth


def _auth_of(request: web.Request) -> RequestAuth | None:
    """What ``resolve_auth`` found, without working it out (None if it has not run)."""
    auth: RequestAuth | None = request.get(AUTH, None)
    return auth


async def current_user(request: web.Request) -> AuthenticatedUser | None:
    auth = await resolve_auth(request)
    return auth.user if auth is not None else None


async def _authenticate(request: web.Request) -> RequestAuth | None:
    app = request.app
    identity, access = app[IDENTITY], app[ACCESS]
    token = _token_from_header(request)
    if token is not None:
        hub_user = await identity.user_for_token(token)
        return RequestAuth(user=access.identify(hub_user), method=AuthMethod.TOKEN)

    signed = request.cookies.get(SESSION_COOKIE)
    if signed is None:
        return None
    store = app[LOGIN_SESSIONS]
    session_id = app[SIGNER].unsign(_SESSION_PURPOSE, signed, max_age=store.max_age)
    session = await store.load(session_id) if session_id else None
    if session is None:
        request[STALE_SESSION] = True
        return None
    try:
        hub_user = await identity.user_for_token(session.hub_token)
    except Unauthorized:
        # The hub revoked the token (hub logout, token expiry): our session ends with it.
        await store.end(session.id)
        request[STALE_SESSION] = True
        log.info("session_ended_by_hub", user=session.user)
        return None
    if hub_user.name != session.user:
        await store.end(session.id)
        request[STALE_SESSION] = True
        return None
    return RequestAuth(
        user=access.identify(hub_user), method=AuthMethod.SESSION, session_id=session.id
    )


# ---------------------------------------------------------------------------- guards
def login_redirect(request: web.Request) -> web.HTTPFound:
    """Send the browser to the hub to sign in, and back to this page afterwards."""
    app = request.app
    urls = app[URLS]
    state = secrets.token_urlsafe(24)
    verifier = new_pkce_verifier()
    target = request.path_qs
    if request.method not in _PAGE_METHODS or not urls.is_local_page(target):
        target = urls.home
    pending = json.dumps({"state": state, "verifier": verifier, "next": target})
    redirect = web.HTTPFound(app[IDENTITY].authorize_url(state, pkce_challenge(verifier)))
    redirect.set_cookie(
        STATE_COOKIE_PREFIX + state,
        app[SIGNER].sign(_STATE_PURPOSE, pending),
        path=urls.callback,
        max_age=STATE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    redirect.headers["Cache-Control"] = "no-store"
    return redirect


async def authenticated(request: web.Request) -> AuthenticatedUser:
    """The signed-in user; otherwise a page visit goes to the hub and anything else gets 401."""
    auth = await resolve_auth(request)
    if auth is not None:
        return auth.user
    if request.method in _PAGE_METHODS and not request.app[URLS].is_api(request.path):
        raise login_redirect(request)
    raise Unauthorized("sign in first, or send 'Authorization: token <JupyterHub API token>'")


async def authenticated_admin(request: web.Request) -> AuthenticatedUser:
    user = await authenticated(request)
    if not user.admin:
        raise Forbidden("this needs administrator rights")
    return user


def signed_in_user(request: web.Request) -> AuthenticatedUser:
    """The user a ``require_user``/``require_admin`` handler runs for."""
    auth = _auth_of(request)
    if auth is None:
        raise Unauthorized("sign in first")
    return auth.user


def require_user(handler: _Handler) -> _Handler:
    """Run the handler for signed-in users only (see ``authenticated``)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        await authenticated(request)
        return await handler(request)

    return cast(_Handler, guarded)


def require_admin(handler: _Handler) -> _Handler:
    """Run the handler for admins only: 401 (or sign-in) when anonymous, 403 otherwise."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        await authenticated_admin(request)
        return await handler(request)

    return cast(_Handler, guarded)


# ---------------------------------------------------------------------------- cookies
def new_xsrf_token(request: web.Request, session_id: str) -> str:
    """A double-submit token bound to the session: a nonce and its keyed digest."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{request.app[SIGNER].mac(_XSRF_PURPOSE, session_id, nonce)}"


def xsrf_token_valid(request: web.Request, session_id: str, token: str) -> bool:
    nonce, dot, mac = token.partition(".")
    if not dot or not nonce:
        return False
    expected = request.app[SIGNER].mac(_XSRF_PURPOSE, session_id, nonce)
    return secrets.compare_digest(mac.encode(), expected.encode())


def cookie_values(request: web.Request, name: str) -> list[str]:
    """Every value of cookie ``name``: browsers send one per path that matches."""
    return credentials.cookie_values(request.headers.getall("Cookie", []), name)


def current_xsrf_token(request: web.Request) -> str | None:
    """The valid ``_xsrf`` cookie the browser holds for its session, if any (for pages)."""
    auth = _auth_of(request)
    if auth is None or auth.session_id is None:
        return None
    for value in cookie_values(request, XSRF_COOKIE):
        if xsrf_token_valid(request, auth.session_id, value):
            return value
    return None


def _set_session_cookies(
    request: web.Request, response: web.StreamResponse, session_id: str
) -> None:
    urls, store = request.app[URLS], request.app[LOGIN_SESSIONS]
    secure = is_https(request)
    response.set_cookie(
        SESSION_COOKIE,
        request.app[SIGNER].sign(_SESSION_PURPOSE, session_id),
        path=urls.prefix,
        max_age=int(store.max_age),
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    _set_xsrf_cookie(request, response, new_xsrf_token(request, session_id))


def _set_xsrf_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    # HttpOnly: the pages carry the token themselves; no script reads the cookie (an
    # application sharing the origin could, from a document under the service's path).
    response.set_cookie(
        XSRF_COOKIE,
        token,
        path=request.app[URLS].prefix,
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )


def _clear_session_cookies(request: web.Request, response: web.StreamResponse) -> None:
    prefix = request.app[URLS].prefix
    response.del_cookie(SESSION_COOKIE, path=prefix)
    response.del_cookie(XSRF_COOKIE, path=prefix)


def _add_set_cookie(
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    path: str,
    secure: bool,
    max_age: int | None = None,
) -> None:
    # ``on_response_prepare`` runs after aiohttp has turned ``set_cookie`` calls into headers,
    # so cookies decided there are written as headers directly.
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value
    morsel = jar[name]
    morsel["path"] = path
    morsel["samesite"] = "Lax"
    morsel["secure"] = secure
    morsel["httponly"] = True
    if max_age is not None:
        morsel["max-age"] = str(max_age)
        if max_age == 0:
            morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    response.headers.add("Set-Cookie", morsel.OutputString())


async def maintain_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: drop dead session cookies, and give a live session its token."""
    prefix, secure = request.app[URLS].prefix, is_https(request)
    if request.get(STALE_SESSION):
        if SESSION_COOKIE not in response.cookies:
            _add_set_cookie(response, SESSION_COOKIE, "", path=prefix, secure=secure, max_age=0)
        if XSRF_COOKIE not in response.cookies:
            _add_set_cookie(response, XSRF_COOKIE, "", path=prefix, secure=secure, max_age=0)
        return
    auth = _auth_of(request)
    if (
        auth is not None
        and auth.session_id is not None
        and XSRF_COOKIE not in response.cookies
        and current_xsrf_token(request) is None
    ):
        token = new_xsrf_token(request, auth.session_id)
        _add_set_cookie(response, XSRF_COOKIE, token, path=prefix, secure=secure)


# ---------------------------------------------------------------------------- handlers
@dataclass(frozen=True, slots=True)
class _PendingSignIn:
    verifier: str
    next: str


def _pending_sign_in(request: web.Request, state: str) -> _PendingSignIn | None:
    raw = request.app[SIGNER].unsign(
        _STATE_PURPOSE, request.cookies.get(STATE_COOKIE_PREFIX + state), max_age=STATE_MAX_AGE
    )
    if raw is None:
        return None
    try:
        pending = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(pending, dict) or pending.get("state") != state:
        return None
    verifier, target = pending.get("verifier"), pending.get("next")
    if not isinstance(verifier, str) or not isinstance(target, str):
        return None
    return _PendingSignIn(verifier=verifier, next=target)


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    """End of the hub's OAuth flow: check state, exchange the code, open a session."""
    app = request.app
    urls, store, signer = app[URLS], app[LOGIN_SESSIONS], app[SIGNER]
    error = request.query.get("error")
    if error:
        raise Forbidden(f"JupyterHub did not sign you in ({error[:80]})")
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if not _STATE_RE.match(state) or not code:
        raise InvalidRequest("the answer from JupyterHub is incomplete; sign in again")
    pending = _pending_sign_in(request, state)
    if pending is None:
        # No cookie for this state: expired, forged, or started in another browser.
        raise InvalidRequest("this sign-in could not be verified; sign in again")

    hub_token = await app[IDENTITY].exchange_code(code, pending.verifier)
    hub_user = await app[IDENTITY].user_for_token(hub_token)
    user = await app[ACCESS].sign_in(hub_user)

    previous = signer.unsign(
        _SESSION_PURPOSE, request.cookies.get(SESSION_COOKIE), max_age=store.max_age
    )
    if previous:
        # A new id at every sign-in: a session id planted before sign-in is worth nothing.
        await store.end(previous)
    session = await store.open(user.name, hub_token)
    log.info("signed_in", user=user.name, admin=user.admin)

    target = pending.next if urls.is_local_page(pending.next) else urls.home
    response = web.HTTPFound(target)
    response.headers["Cache-Control"] = "no-store"
    response.del_cookie(STATE_COOKIE_PREFIX + state, path=urls.callback)
    _set_session_cookies(request, response, session.id)
    raise response


_LOGOUT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign out</title></head>
<body>
<h1>Sign out</h1>
<p>{question}</p>
<form method="post" action="{action}">
<input type="hidden" name="{field}" value="{token}">
<button type="submit" id="logout">Sign out</button>
</form>
<p><a href="{home}">Back to the applications</a></p>
</body>
</html>
"""


async def logout_page(request: web.Request) -> web.StreamResponse:
    """``GET {svc}logout``: a page asking to confirm, whose button POSTs the sign-out.

    Signing out changes state, so a link or an image elsewhere must not do it: only the
    CSRF-checked POST does.
    """
    urls = request.app[URLS]
    auth = await resolve_auth(request)
    response = web.Response(content_type="text/html", headers={"Cache-Control": "no-store"})
    token = ""
    if auth is not None and auth.session_id is not None:
        token = current_xsrf_token(request) or new_xsrf_token(request, auth.session_id)
        if token not in cookie_values(request, XSRF_COOKIE):
            _set_xsrf_cookie(request, response, token)
        question = f"Sign out {auth.user.name} from this service and from JupyterHub?"
    else:
        question = "Sign out from JupyterHub?"
    response.text = _LOGOUT_PAGE.format(
        question=html.escape(question),
        action=html.escape(urls.logout),
        field=XSRF_FIELD,
        token=html.escape(token),
        home=html.escape(urls.home),
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST {svc}logout`` (CSRF-checked): end our session, then the hub's (which also
    revokes the token we held)."""
    app = request.app
    auth = await resolve_auth(request)
    if auth is not None and auth.session_id is not None:
        await app[LOGIN_SESSIONS].end(auth.session_id)
        log.info("signed_out", user=auth.user.name)
    request[AUTH] = None
    response = web.HTTPFound(app[URLS].hub_logout)
    response.headers["Cache-Control"] = "no-store"
    _clear_session_cookies(request, response)
    raise response
