"""What the gate lets through to an application, and back: credential, cookie and header rules.

Pure functions, no I/O, shared by the gatekeeper (``handler``), the HTTP framing
(``framing``) and the service's own sign-in (``web.auth``, which reads cookies alike):

- Cookies of the service and of the hub never reach an application, whatever their name's
  ``__Host-``/``__Secure-`` prefix (JupyterHub's ``cookie_host_prefix_enabled``) or case.
- ``Authorization`` reaches an application only in an allow-listed scheme (``Basic``,
  ``Digest``): the ``token`` and ``Bearer`` schemes are what the gate authenticates with, so
  a value in them is a hub credential, whoever sent it.
- An application's ``Set-Cookie`` is confined to the application's own path: nameless
  cookies and cookies named like ours or the hub's are dropped, ``Domain`` is removed, a
  ``Path`` outside the application is replaced.
- A ``Connection`` header may not declare framing, routing or credential headers hop-by-hop.
- The gate cookie's signed payload binds one login session to one application, and says
  whether an admin confirmed entering it; its ``Set-Cookie`` is host-only, ``HttpOnly``,
  ``SameSite=Lax`` and scoped to the application's path.
- A WebSocket's ``Origin`` is compared in its serialised form (lower-case scheme and host,
  default port left out).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

# The gate's own cookie: a signed (login session, url id) scoped to the application's path.
GATE_COOKIE = "remoteapp-gate"
# Names (after any cookie prefix, compared in lower case) of the service's and the hub's
# cookies. The service's: its session, sign-in state, CSRF token and gate cookies. The
# hub's: ``jupyterhub-*`` (login, session id, user servers' OAuth cookies) and ``service-*``
# (hub-managed services' OAuth cookies), and ``_xsrf`` (hub and services alike).
SERVICE_COOKIE_NAMES = frozenset({"_xsrf"})
SERVICE_COOKIE_PREFIXES = ("remoteapp-", "jupyterhub-", "service-")
# RFC 6265bis cookie prefixes, which browsers match regardless of case.
_COOKIE_PREFIXES = ("__host-", "__secure-")
# ``Authorization`` schemes that pass to an application (its own authentication).
FORWARDED_AUTHORIZATION_SCHEMES = frozenset({"basic", "digest"})
# Schemes whose value the gate takes as a hub token.
TOKEN_SCHEMES = frozenset({"token", "bearer"})
# Headers a ``Connection`` header may not name (lower case): dropping them would change how
# a message is framed or routed, hide who sent it, or let a credential through unchecked.
PINNED_HEADERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"cookie",
        b"set-cookie",
        b"authorization",
        b"origin",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}
_ORIGIN = re.compile(r"(https?)://([^/?#@\s]+)", re.IGNORECASE)


# ---------------------------------------------------------------------------- cookies
def cookie_name_unprefixed(name: str) -> str:
    """The name in lower case without its ``__Host-``/``__Secure-`` prefixes."""
    bare = name.strip().lower()
    while bare.startswith(_COOKIE_PREFIXES):
        bare = bare.removeprefix("__host-").removeprefix("__secure-")
    return bare


def is_service_cookie(name: str) -> bool:
    """Whether a cookie of this name belongs to the service or the hub (never to an app)."""
    bare = cookie_name_unprefixed(name)
    return bare in SERVICE_COOKIE_NAMES or bare.startswith(SERVICE_COOKIE_PREFIXES)


def cookie_pairs(headers: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """(name, value, the pair as sent) of every pair in ``Cookie`` header values, in order;
    a pair without ``=`` has the empty name. The one cookie parser of the service and the
    gate: both must read a header alike, or a crafted one could mean two things."""
    for header in headers:
        for part in header.split(";"):
            crumb = part.strip()
            if not crumb:
                continue
            name, eq, value = crumb.partition("=")
            yield (name.strip() if eq else ""), value.strip(), crumb


def cookie_values(headers: Iterable[str], name: str) -> list[str]:
    """Every value of cookie ``name`` (browsers send one per path that matches), unquoted."""
    return [value.strip('"') for key, value, _ in cookie_pairs(headers) if key == name]


def sort_cookies(headers: Iterable[str]) -> tuple[list[str], str | None]:
    """(values of the gate cookie, in order; the ``Cookie`` value for the application).

    Only the unprefixed ``remoteapp-gate`` is the gate's cookie; every service or hub cookie
    is kept from the application, and so is a pair without a name.
    """
    gate_values: list[str] = []
    kept: list[str] = []
    for name, value, crumb in cookie_pairs(headers):
        if name == GATE_COOKIE:
            gate_values.append(value)
        elif name and not is_service_cookie(name):
            kept.append(crumb)
    return gate_values, "; ".join(kept) if kept else None


def confine_set_cookie(value: bytes, base: bytes) -> bytes | None:
    """An application's ``Set-Cookie`` value as passed on, or None to drop it.

    ``base`` is the application's path with its trailing slash. Dropped: a cookie without
    a name (``=x``, ``x``), one named like the service's or the hub's, and a ``__Host-``
    cookie (its rules demand ``Path=/``). Otherwise every ``Domain`` attribute goes (the
    cookie stays host-only) and the path becomes the last ``Path`` given if it lies inside
    ``base``, else ``base``.
    """
    pair, *attributes = value.split(b";")
    name, eq, _ = pair.partition(b"=")
    name = name.strip()
    if not eq or not name:
        return None
    text = name.decode("latin-1")
    if is_service_cookie(text) or text.lower().startswith("__host-"):
        return None
    path = base
    kept = [pair.strip()]
    for attribute in attributes:
        key, _, argument = attribute.partition(b"=")
        key = key.strip().lower()
        if key == b"domain":
            continue
        if key == b"path":
            argument = argument.strip()
            path = argument if _inside(argument, base) else base
            continue
        if attribute.strip():
            kept.append(attribute.strip())
    kept.append(b"Path=" + path)
    return b"; ".join(kept)


def _inside(path: bytes, base: bytes) -> bool:
    if not path.startswith(base):
        return False
    tail = path[len(base) :]
    return b"%" not in tail and b"\\" not in tail and b".." not in tail


# ---------------------------------------------------------------------------- the gate cookie
_CONFIRMED = "entered"
_EXPIRED = "expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0"


@dataclass(frozen=True, slots=True)
class GatePass:
    """What a gate cookie binds: a login session, one application (its url id), and whether
    an admin confirmed entering it (the admin flag alone opens only a confirmed entry)."""

    session_id: str
    url_id: str
    confirmed: bool = False

    def payload(self) -> str:
        """The text the cookie signs; ``ValueError`` for an empty id or one with a space."""
        for part in (self.session_id, self.url_id):
            if not part or " " in part:
                raise ValueError("a gate pass names a login session and an application")
        return f"{self.session_id} {self.url_id}" + (f" {_CONFIRMED}" if self.confirmed else "")


def read_gate_pass(payload: str | None) -> GatePass | None:
    """The pass a (verified) payload carries, or None when it names no login session."""
    session_id, _, rest = (payload or "").partition(" ")
    url_id, _, how = rest.partition(" ")
    if not session_id:
        return None
    return GatePass(session_id, url_id, how == _CONFIRMED)


def gate_set_cookie(value: str, urlpath: str, *, max_age: int, secure: bool) -> str:
    """The ``Set-Cookie`` value that gives a browser the gate cookie of one application."""
    return f"{GATE_COOKIE}={value}; Path={urlpath}/; Max-Age={max_age}; HttpOnly; SameSite=Lax" + (
        "; Secure" if secure else ""
    )


def expired_gate_cookie(urlpath: str) -> str:
    """The ``Set-Cookie`` value that takes a stale gate cookie of one application away."""
    return f'{GATE_COOKIE}=""; {_EXPIRED}; Path={urlpath}/'


# ---------------------------------------------------------------------------- Authorization
def authorization_token(authorization: str | None) -> str | None:
    """The hub token an ``Authorization`` value carries (``token``/``Bearer``), or None."""
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() in TOKEN_SCHEMES and value.strip():
        return value.strip()
    return None


def forwarded_authorization(authorization: str | None) -> str | None:
    """The ``Authorization`` value the application may see (allow-listed schemes), or None."""
    if authorization is None:
        return None
    scheme = authorization.strip().partition(" ")[0].lower()
    return authorization if scheme in FORWARDED_AUTHORIZATION_SCHEMES else None


# ---------------------------------------------------------------------------- Connection
def connection_options(value: bytes) -> set[bytes]:
    """The lower-case options a ``Connection`` header value lists."""
    return {token.strip() for token in value.lower().split(b",")} - {b""}


def pins_a_header(options: Iterable[bytes]) -> bool:
    """Whether ``Connection`` options name a header that must not be dropped as hop-by-hop."""
    return not PINNED_HEADERS.isdisjoint(options)


# ---------------------------------------------------------------------------- Origin
def serialise_origin(text: str | None) -> str | None:
    """``scheme://host[:port]`` in canonical form, or None for anything else (``null``...)."""
    if text is None:
        return None
    match = _ORIGIN.fullmatch(text.strip())
    if match is None:
        return None
    scheme = match.group(1).lower()
    try:
        parts = urlsplit(f"{scheme}://{match.group(2)}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_of_url(url: str | None) -> str | None:
    """The serialised origin of an absolute ``http(s)`` URL (a public URL), or None."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return serialise_origin(f"{parts.scheme}://{parts.netloc}")


def request_origin(host: str | None, scheme: str | None) -> str | None:
    """The origin a request was addressed to: its ``Host`` and scheme (``http`` if unsaid).

    ``scheme`` is ``X-Forwarded-Proto`` as the proxy set it: its first value, which for a
    WebSocket is ``ws``/``wss`` (configurable-http-proxy says so for upgrades).
    """
    if not host:
        return None
    scheme = (scheme or "http").split(",")[0].strip().lower()
    scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
    if scheme not in _DEFAULT_PORTS:
        return None
    return serialise_origin(f"{scheme}://{host.strip()}")
