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


# ---------------------------------------------------------------------------- application hosts
URL_ID_PLACEHOLDER = "{url_id}"
_URL_ID_RE = re.compile(r"^[a-z0-9]{1,63}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ORIGIN_RE = re.compile(
    r"^(?P<scheme>https?)://\{url_id\}(?P<domain>(?:\.[a-z0-9-]+)+)(?::(?P<port>[0-9]{1,5}))?$"
)


def check_app_origin_template(template: str) -> str:
    """``template`` (``<scheme>://{url_id}.<domain>[:<port>]``), else ``InvalidRequest``.

    ``{url_id}`` must be the whole first label of the host, so that every application gets a
    host of its own under one domain, and nothing else may follow the port (no path).
    """
    match = _ORIGIN_RE.match(template)
    if match is None:
        raise InvalidRequest(
            "must look like https://{url_id}.apps.example.org (a scheme, {url_id} as the first "
            "label of the host, an optional port, no path)"
        )
    labels = match["domain"].split(".")[1:]
    if not all(_LABEL_RE.match(label) for label in labels):
        raise InvalidRequest("the domain after {url_id} is not a valid host name")
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidRequest("the port must be a number from 1 to 65535")
    return template


def app_origin(template: str, url_id: str) -> str:
    """The origin (``scheme://host[:port]``) that serves application ``url_id``."""
    if not _URL_ID_RE.match(url_id):
        raise InvalidRequest(f"{url_id!r:.80} cannot be a host name label")
    return template.replace(URL_ID_PLACEHOLDER, url_id)


def is_app_host(template: str, url_id: str, host_header: str) -> bool:
    """Whether a request's ``Host`` names application ``url_id``'s own host.

    Browsers leave out a scheme's default port; the comparison does too, and ignores case.
    """
    scheme, _, expected = app_origin(template, url_id).partition("://")
    default = ":443" if scheme == "https" else ":80"
    host = host_header.strip().lower()
    return host.removesuffix(default) == expected.removesuffix(default)


def is_any_app_host(template: str, host_header: str) -> bool:
    """Whether a request's ``Host`` is one of the application hosts (any url id)."""
    scheme, _, rest = template.partition("://")
    default = ":443" if scheme == "https" else ":80"
    suffix = rest.removeprefix(URL_ID_PLACEHOLDER).removesuffix(default)
    host = host_header.strip().lower().removesuffix(default)
    label = host.removesuffix(suffix)
    return host.endswith(suffix) and bool(_URL_ID_RE.match(label))


def app_origin_pattern(template: str) -> str:
    """The application origins as a CSP source expression (``https://*.apps.example.org``)."""
    return template.replace(URL_ID_PLACEHOLDER, "*")


def app_url_scheme(template: str) -> str:
    return template.partition("://")[0]
