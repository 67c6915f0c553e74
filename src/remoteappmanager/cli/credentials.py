"""Where `remoteapprest` finds the service and keeps its token: a file only the user can read."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from remoteappmanager.domain.errors import InvalidRequest

CONFIG_ENV = "REMOTEAPPREST_CONFIG"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
DEFAULT_SERVICE = "remoteapp"
_FORMAT = 1
_SERVICES = "services/"


class CredentialsError(Exception):
    """The credentials file is missing, unreadable or damaged (the message says which)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a deployment answers: the hub's base URL and the service's URL (both end in /)."""

    hub_url: str
    service_url: str

    @property
    def service_name(self) -> str:
        return self.service_url.rstrip("/").rpartition("/")[2]

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: container paths (``/user/...``) start from here."""
        parts = urlsplit(self.service_url)
        return f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def locate(cls, url: str, service: str = DEFAULT_SERVICE) -> Endpoint:
        """The endpoint of a URL a user gives: the hub's (``http://host:8000/``, any page under
        ``hub/``) or the service's (``.../services/<name>/``, any page under it).

        Raises ``InvalidRequest`` for anything that is not an http(s) URL.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"{url!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise InvalidRequest("the URL must not hold a user name or password")
        if not service or "/" in service:
            raise InvalidRequest(f"{service!r} is not a service name")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        if not path.startswith("/"):
            path = "/" + path
        base, found, rest = path.partition("/" + _SERVICES)
        if found:
            name = rest.split("/", 1)[0]
            if not name:
                raise InvalidRequest(f"{url!r} names no service after /services/")
            service = name
        else:
            base = path.partition("/hub/")[0]
        base = base.rstrip("/") + "/"
        hub_url = f"{parts.scheme}://{parts.netloc}{base}"
        return cls(hub_url=hub_url, service_url=f"{hub_url}{_SERVICES}{service}/")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What `login` stored: where the service is, who logged in, and the token."""

    endpoint: Endpoint
    user: str
    token: str = field(repr=False)
    expires_at: datetime | None = None
    """When the hub said the token expires (None: never, or not known)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "service_url": self.endpoint.service_url,
            "hub_url": self.endpoint.hub_url,
            "user": self.user,
            "token": self.token,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> Credentials:
        """Raises ``ValueError`` for anything but what ``to_json`` writes."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a credentials file of this version")
        texts: dict[str, str] = {}
        for key in ("service_url", "hub_url", "user", "token"):
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} is missing")
            texts[key] = value
        expires = data.get("expires_at")
        if expires is not None and not isinstance(expires, str):
            raise ValueError("expires_at is not a date")
        return cls(
            endpoint=Endpoint(hub_url=texts["hub_url"], service_url=texts["service_url"]),
            user=texts["user"],
            token=texts["token"],
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


def default_path() -> Path:
    """``$REMOTEAPPREST_CONFIG``, else ``$XDG_CONFIG_HOME`` (``~/.config``) / remoteapprest."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "remoteapprest" / "credentials.json"


def load(path: Path) -> Credentials:
    """The credentials stored at ``path``; ``CredentialsError`` if there are none usable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"no credentials at {path}", missing=True) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {path}: {_reason(exc)}") from None
    try:
        return Credentials.from_json(json.loads(text))
    except ValueError:
        raise CredentialsError(f"the credentials file {path} is damaged") from None


def exposed(path: Path) -> bool:
    """Whether others than the owner may read or change the file at ``path``."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def save(path: Path, credentials: Credentials) -> None:
    """Write ``credentials`` to ``path`` atomically, readable by the owner only (0600).

    A missing directory is created 0700. The file is written beside its final name and
    renamed over it, so a reader never sees half a file and a failed write leaves the
    previous credentials as they were. Raises ``CredentialsError`` if it cannot be written.
    """
    directory = path.parent
    try:
        if not directory.is_dir():
            directory.mkdir(mode=DIRECTORY_MODE, parents=True)
            # mkdir's mode passes through the umask, which may not allow what we asked.
            directory.chmod(DIRECTORY_MODE)
        # mkstemp creates the file 0600 from the start: the token is never readable by others.
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".credentials-", suffix=".tmp")
    except OSError as exc:
        raise CredentialsError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), FILE_MODE)
            json.dump(credentials.to_json(), stream, indent=2)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CredentialsError(f"cannot write {path}: {_reason(exc)}") from None
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    # The rename is durable only once the directory is; not every file system allows it.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
