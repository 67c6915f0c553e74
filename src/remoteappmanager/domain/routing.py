"""The proxy paths we own: ``/user/<name>/containers/<url_id>``, as they appear in URLs."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from remoteappmanager.domain.errors import InvalidRequest

_ROUTE_PATH_RE = re.compile(r"^/user/(?P<user>[^/]+)/containers/(?P<url_id>[a-z0-9]{1,128})$")
# What ``naming.escaped_user_name`` (and JupyterHub) leave unencoded in a user segment.
_SAFE = "@~"


def check_route_path(path: str) -> str:
    """Return the canonical form of one of our container paths, else raise ``InvalidRequest``.

    A path is percent-encoded as in a URL (``/user/a%20b/containers/<id>``); an encoding
    that differs only in which characters it escapes gives the same canonical path, the one
    ``naming.urlpath`` builds. Route tables refuse anything else so that a bug upstream can
    never make them add or delete a route of JupyterHub's (``/user/<name>/``, ``/hub/``...).
    A user segment of ``.`` or ``..`` is refused too: URL parsers (the proxy's included)
    resolve dot segments, even percent-encoded ones, so such a path would name another route.
    """
    if not isinstance(path, str) or not path.isprintable():
        raise InvalidRequest(f"{path!r:.80} is not a container path")
    match = _ROUTE_PATH_RE.match(path)
    try:
        user = unquote(match["user"], errors="strict") if match else ""
    except UnicodeDecodeError:
        user = ""
    if match is None or not user or "/" in user or not user.isprintable():
        raise InvalidRequest(f"{path!r:.80} is not a container path (/user/<name>/containers/<id>)")
    if user in {".", ".."}:
        raise InvalidRequest(f"{path!r:.80} has a user segment that URLs cannot carry")
    return encode_route_path(f"/user/{user}/containers/{match['url_id']}")


def encode_route_path(decoded: str) -> str:
    """The URL form of a decoded path (as configurable-http-proxy reports its routes)."""
    return quote(decoded, safe="/" + _SAFE)
