"""Value objects of the catalogue: users, applications, access policies and grants."""

from __future__ import annotations

import enum
import posixpath
import re
from dataclasses import dataclass

from remoteappmanager.domain.errors import InvalidRequest

MAX_NAME_LENGTH = 255
MAX_IMAGE_LENGTH = 255
MAX_PATH_LENGTH = 1024

# Docker's reference grammar, simplified: [registry[:port]/]path[:tag][@digest].
_IMAGE_RE = re.compile(
    r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


class VolumeMode(enum.StrEnum):
    RO = "ro"
    RW = "rw"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Application:
    id: int
    image: str


@dataclass(frozen=True, slots=True)
class Volume:
    """A host directory the policy mounts into the container."""

    source: str
    target: str
    mode: VolumeMode

    @classmethod
    def parse(cls, spec: str) -> Volume:
        """Parse ``SOURCE:TARGET:MODE`` (both paths absolute, mode ``ro`` or ``rw``)."""
        parts = spec.split(":")
        if len(parts) != 3:
            raise InvalidRequest(f"volume {spec!r} is not SOURCE:TARGET:MODE (e.g. /data:/data:ro)")
        source, target, mode = parts
        return cls.of(source, target, mode)

    @classmethod
    def of(cls, source: str, target: str, mode: str) -> Volume:
        if mode not in {m.value for m in VolumeMode}:
            raise InvalidRequest(f"volume mode {mode!r} must be 'ro' or 'rw'")
        return cls(
            validate_abs_path(source, "volume source"),
            validate_abs_path(target, "volume target"),
            VolumeMode(mode),
        )

    def __str__(self) -> str:
        return f"{self.source}:{self.target}:{self.mode.value}"


@dataclass(frozen=True, slots=True)
class Policy:
    """What a grant allows. Policies are compared (and stored de-duplicated) by content."""

    app_license: str | None = None
    allow_home: bool = False
    allow_view: bool = False
    allow_common: bool = False
    volume: Volume | None = None
    allow_startup_data: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of the accounting table: a user may run an application under a policy."""

    mapping_id: str
    user: User
    application: Application
    policy: Policy


def validate_user_name(name: str) -> str:
    """A user name as JupyterHub allows it: non-empty, printable, no slash, bounded."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise InvalidRequest("user name must be non-empty and without surrounding spaces")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"user name is longer than {MAX_NAME_LENGTH} characters")
    if "/" in name or not name.isprintable():
        raise InvalidRequest(f"user name {name!r} contains '/' or unprintable characters")
    return name


def validate_image_name(image: str) -> str:
    """A Docker image reference (``repo/name:tag``), without surprises."""
    if not isinstance(image, str) or not image:
        raise InvalidRequest("image name must be non-empty")
    if len(image) > MAX_IMAGE_LENGTH or not _IMAGE_RE.match(image):
        raise InvalidRequest(f"{image!r} is not a valid Docker image name")
    return image


def validate_abs_path(path: str, what: str = "path") -> str:
    """An absolute, normalised POSIX path with no NUL, no '..' and no trailing noise."""
    if not isinstance(path, str) or not path:
        raise InvalidRequest(f"{what} must be a non-empty absolute path")
    if len(path) > MAX_PATH_LENGTH or "\x00" in path or not path.isprintable():
        raise InvalidRequest(f"{what} {path!r} is not an acceptable path")
    if not path.startswith("/"):
        raise InvalidRequest(f"{what} {path!r} must be an absolute path")
    if ".." in path.split("/"):
        raise InvalidRequest(f"{what} {path!r} must not contain '..'")
    normalised = posixpath.normpath(path)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    return normalised
