"""Names derived from users and grants: url ids, unix logins, container names, URL paths."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import unicodedata
from urllib.parse import quote

URL_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
# 26 base-36 characters carry log2(36) * 26 ≈ 134 bits, above the 128 the protocol asks for.
URL_ID_LENGTH = 26
MAX_URL_ID_LENGTH = 64
UNIX_NAME_MAX = 32

_URL_ID_RE = re.compile(rf"^[a-z0-9]{{{URL_ID_LENGTH},{MAX_URL_ID_LENGTH}}}$")
# A name is used verbatim only when it cannot be confused with a mangled one: mangled names
# always contain "--" before their hash, verbatim names never do.
_VERBATIM_UNIX_RE = re.compile(rf"^[a-z][a-z0-9_-]{{0,{UNIX_NAME_MAX - 1}}}$")
_UNSAFE_RUN_RE = re.compile(r"[^a-z0-9_]+")
_MAPPING_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HASH_LENGTH = 10
# Accounts every Debian-based image already has: an app told USER=root would run as root.
RESERVED_UNIX_NAMES = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "operator",
        "adm",
        "shadow",
        "staff",
        "sudo",
        "users",
        "nogroup",
        "messagebus",
        "sshd",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "postgres",
        "docker",
    }
)


def new_url_id() -> str:
    """A fresh, unguessable container id for URLs: 26 characters of ``[a-z0-9]``."""
    return "".join(secrets.choice(URL_ID_ALPHABET) for _ in range(URL_ID_LENGTH))


def is_url_id(value: str) -> bool:
    """Whether ``value`` has the shape of a url id (checked before it reaches the engine)."""
    return bool(_URL_ID_RE.match(value))


def is_mapping_id(value: str) -> bool:
    """Whether ``value`` has the shape of a grant's mapping id."""
    return bool(_MAPPING_ID_RE.match(value))


def _short_hash(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:_HASH_LENGTH]


def unix_user_name(hub_name: str) -> str:
    """A unix login for a hub user: ``[a-z][a-z0-9_-]*``, at most 32 characters.

    Names that already qualify are kept as they are. Any other name is folded to ASCII,
    lower-cased, stripped of the rest and given ``--`` plus a hash of the original name, so
    that ``Alice``, ``alice`` and ``älice`` stay three different logins. System accounts
    (``root``, ``nobody``...) are mangled too.
    """
    if (
        _VERBATIM_UNIX_RE.match(hub_name)
        and "--" not in hub_name
        and hub_name not in RESERVED_UNIX_NAMES
    ):
        return hub_name
    folded = unicodedata.normalize("NFKD", hub_name).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE_RUN_RE.sub("_", folded.lower()).strip("_")
    if not stem or not stem[0].isalpha():
        stem = "u" + stem
    suffix = "--" + _short_hash(hub_name)
    return stem[: UNIX_NAME_MAX - len(suffix)].rstrip("_") + suffix


def escaped_user_name(hub_name: str) -> str:
    """The user name as it appears in URLs, percent-encoded the way JupyterHub does it."""
    return quote(hub_name, safe="@~")


def user_base_url(hub_name: str) -> str:
    """``/user/<name>``, without a trailing slash (``JPY_BASE_USER_URL``)."""
    return f"/user/{escaped_user_name(hub_name)}"


def urlpath(hub_name: str, url_id: str) -> str:
    """Where a container is served: ``/user/<name>/containers/<url_id>`` (no trailing slash)."""
    return f"{user_base_url(hub_name)}/containers/{url_id}"


def container_name(realm: str, hub_name: str, mapping_id: str) -> str:
    """The one Docker name for (realm, user, grant): ``<realm>.<unix user>.<mapping_id>``.

    Realms may contain dots, unix user names and mapping ids may not, so the name reads back
    unambiguously from the right. Deterministic, so a second container for the same grant
    clashes with the first instead of running beside it.
    """
    if not _MAPPING_ID_RE.match(mapping_id):
        raise ValueError(f"mapping id {mapping_id!r} cannot be part of a container name")
    if not realm or not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", realm):
        raise ValueError(f"realm {realm!r} cannot be part of a container name")
    return f"{realm}.{unix_user_name(hub_name)}.{mapping_id}"
