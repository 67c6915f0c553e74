"""Value objects of the catalogue: users, applications, access policies and grants."""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from remoteappmanager.domain.errors import InvalidRequest

MAX_NAME_LENGTH = 255
MAX_IMAGE_LENGTH = 255
MAX_PATH_LENGTH = 1024

# Docker's image reference grammar (github.com/distribution/reference), as the engine parses
# it: [domain/]path[:tag][@digest]. Hand-written: no maintained Python library implements it,
# and the Docker SDK's own split is deliberately loose. Only what every engine version accepts
# passes: a first component is a registry only when it holds '.' or ':' or is "localhost".
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# go-digest's registered algorithms and the exact length of their lower-case hex.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_IMAGE_ID_RE = re.compile(r"[a-f0-9]{64}")
_ALLOWED_RE = re.compile(r"[A-Za-z0-9._/:@-]+")
# What the engine prefixes to a name without a registry before it checks the length.
DEFAULT_REGISTRY = "docker.io"
_OFFICIAL_NAMESPACE = "library/"
_DEFAULT_REGISTRY_ALIASES = frozenset({"docker.io", "index.docker.io"})
MAX_TAG_LENGTH = 128


def _reference_pattern() -> str:
    # The same rule as ``parse_image_reference`` as one regular expression (for the REST API's
    # schema): the engine's length limit on the name (after ``docker.io/library/`` is added)
    # is a look-ahead bound on the repository in each case.
    path_chars, end = r"[a-z0-9._/-]", r"(?:[:@]|$)"
    single = rf"(?={path_chars}{{1,{MAX_IMAGE_LENGTH - 18}}}{end}){_PATH_COMPONENT}"
    nested = (
        rf"(?={path_chars}{{1,{MAX_IMAGE_LENGTH - 10}}}{end})"
        rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})+"
    )
    no_dot = r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*"
    plain_nested = (
        rf"(?={path_chars}{{1,{MAX_IMAGE_LENGTH - 10}}}{end})"
        rf"(?!localhost/){no_dot}(?:/{_PATH_COMPONENT})+"
    )
    host = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
    registry = (
        rf"(?!(?:index\.)?docker\.io/)"
        rf"(?:{host}\.{_DOMAIN_COMPONENT}(?::[0-9]+)?|{host}:[0-9]+|localhost)"
        rf"/{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    )
    # A first component with a dot that is no host name: the engine reads it as repository.
    dotted = (
        rf"(?!(?:index\.)?docker\.io/)(?=[a-z0-9_-]*\.)"
        rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})+"
    )
    digest = "|".join(f"{name}:[a-f0-9]{{{length}}}" for name, length in _DIGEST_LENGTHS.items())
    name = (
        rf"(?:(?:index\.)?docker\.io/(?:{single}|{nested})"
        rf"|(?![a-f0-9]{{64}}$){single}|{plain_nested}|{registry}|{dotted})"
    )
    tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
    # "$(?!\n)": the end of the text in ECMA-262 and Python alike (Python's "$" also matches
    # before a final newline).
    return rf"^(?=.{{1,{MAX_IMAGE_LENGTH}}}$(?!\n)){name}(?::{tag})?(?:@(?:{digest}))?$(?!\n)"


IMAGE_REFERENCE_PATTERN = _reference_pattern()
"""``parse_image_reference``'s rule as a regular expression (ECMA-262 and Python alike)."""


@dataclass(frozen=True, slots=True)
class ImageReference:
    """An image reference split as the engine splits it."""

    domain: str | None
    path: str
    tag: str | None
    digest: str | None

    @property
    def normalised_name(self) -> str:
        """The name the engine checks (``docker.io/library/`` added as it does)."""
        domain = self.domain
        if domain is None or domain in _DEFAULT_REGISTRY_ALIASES:
            path = self.path if "/" in self.path else _OFFICIAL_NAMESPACE + self.path
            return f"{DEFAULT_REGISTRY}/{path}"
        return f"{domain}/{self.path}"


def parse_image_reference(image: str) -> ImageReference:
    """Split ``image`` as the Docker engine does; ``InvalidRequest`` saying what is wrong with
    anything the engine would refuse (and so could never inspect or run)."""
    if not isinstance(image, str) or not image:
        raise InvalidRequest("image name must be non-empty")
    shown = f"{image[:60]!r}{'...' if len(image) > 60 else ''}"
    bad = f"{shown} is not a valid Docker image name"
    if len(image) > MAX_IMAGE_LENGTH:
        raise InvalidRequest(f"{bad}: longer than {MAX_IMAGE_LENGTH} characters")
    if not _ALLOWED_RE.fullmatch(image):
        raise InvalidRequest(f"{bad}: only letters, digits and . _ - / : @ are allowed")
    rest, _, digest = image.partition("@")
    if digest:
        algorithm, _, encoded = digest.partition(":")
        length = _DIGEST_LENGTHS.get(algorithm)
        if length is None or len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
            raise InvalidRequest(
                f"{bad}: a digest is sha256, sha384 or sha512 with the full lower-case hex value"
            )
    elif "@" in image:
        raise InvalidRequest(f"{bad}: '@' must be followed by a digest")
    name, tag = rest, None
    last = rest.rfind(":")
    if last > rest.rfind("/"):
        name, tag = rest[:last], rest[last + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidRequest(
                f"{bad}: a tag is 1 to {MAX_TAG_LENGTH} letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-'"
            )
    domain: str | None = None
    path = name
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        # The engine's pattern lets a first component that is no host name pass as part of
        # the repository (``a.b_c/d``) while it still counts it as the registry.
        if not _DOMAIN_RE.fullmatch(first) and not _PATH_RE.fullmatch(name):
            raise InvalidRequest(f"{bad}: {first[:60]!r} is not a registry host[:port]")
        domain, path = first, remainder
    if not _PATH_RE.fullmatch(path):
        raise InvalidRequest(
            f"{bad}: a repository is lower-case letters and digits in components "
            "separated by '/', joined within a component by '.', '_', '__' or dashes"
        )
    if domain is None and tag is None and digest == "" and _IMAGE_ID_RE.fullmatch(path):
        raise InvalidRequest(f"{bad}: a 64-digit hexadecimal string is an image id, not a name")
    reference = ImageReference(domain, path, tag, digest or None)
    if len(reference.normalised_name) > MAX_IMAGE_LENGTH:
        raise InvalidRequest(
            f"{bad}: the engine's name {reference.normalised_name[:40]!r}... "
            f"is longer than {MAX_IMAGE_LENGTH} characters"
        )
    return reference


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
    memory_limit_mb: int | None = None
    """MiB of memory, swap included; None: the deployment's default."""
    cpu_limit: float | None = None
    """Cores, fractional; None: the deployment's default."""
    pids_limit: int | None = None
    """Processes (threads included); None: the deployment's default."""
    idle_timeout_s: int | None = None
    """Seconds without client input before the session is stopped; None or 0: never."""
    max_lifetime_s: int | None = None
    """Seconds after its start at which the session is stopped; None or 0: never."""

    placement: tuple[str, ...] = ()
    """Swarm placement constraints, all to be met (``validate_placement`` keeps them sorted
    and unique, so that two policies asking the same are the same policy)."""

    def __post_init__(self) -> None:
        check_policy_limits(
            self.memory_limit_mb,
            self.cpu_limit,
            self.pids_limit,
            self.idle_timeout_s,
            self.max_lifetime_s,
        )

    def flat(self) -> dict[str, Any]:
        """The policy's scalar fields, the volume as ``volume_source/target/mode``: the
        database's columns and the APIs' field names alike (``placement``, a list, is left
        to each to write its way)."""
        volume = self.volume
        return {
            "app_license": self.app_license,
            "allow_home": self.allow_home,
            "allow_view": self.allow_view,
            "allow_common": self.allow_common,
            "volume_source": volume.source if volume else None,
            "volume_target": volume.target if volume else None,
            "volume_mode": volume.mode.value if volume else None,
            "allow_startup_data": self.allow_startup_data,
            "memory_limit_mb": self.memory_limit_mb,
            "cpu_limit": self.cpu_limit,
            "pids_limit": self.pids_limit,
            "idle_timeout_s": self.idle_timeout_s,
            "max_lifetime_s": self.max_lifetime_s,
        }


# A placement constraint as Docker Swarm reads it: <key>==<value> or <key>!=<value>, where
# the key is a node attribute or a node or engine label. The value is kept to characters a
# label value commonly has (swarm itself also takes spaces and regular-expression signs).
PLACEMENT_KEY_PATTERN = (
    r"(?:node\.(?:id|hostname|role|platform\.os|platform\.arch)"
    r"|(?:node|engine)\.labels\.[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
)
# Unanchored: callers anchor it (fullmatch here, the API document's pattern there).
PLACEMENT_PATTERN = rf"{PLACEMENT_KEY_PATTERN}(?:==|!=)[A-Za-z0-9_.:/*-]{{1,128}}"
MAX_PLACEMENT_LENGTH = 300
_PLACEMENT_RE = re.compile(PLACEMENT_PATTERN)
MAX_PLACEMENT_CONSTRAINTS = 16


def validate_placement(constraints: Iterable[str]) -> tuple[str, ...]:
    """Placement constraints, sorted and unique; ``InvalidRequest`` for one that is not
    ``<key>==<value>`` or ``<key>!=<value>`` with a swarm node key (``node.labels.gpu``,
    ``node.hostname``, ``node.role``, ``node.platform.arch``...)."""
    if isinstance(constraints, str):
        raise InvalidRequest("placement must be a list of constraints")
    found: set[str] = set()
    for constraint in constraints:
        if not isinstance(constraint, str) or not _PLACEMENT_RE.fullmatch(constraint):
            raise InvalidRequest(
                f"placement constraint {constraint!r:.80} is not <key>==<value> or "
                "<key>!=<value> with a node key (node.labels.<name>, engine.labels.<name>, "
                "node.id, node.hostname, node.role, node.platform.os, node.platform.arch)"
            )
        found.add(constraint)
    if len(found) > MAX_PLACEMENT_CONSTRAINTS:
        raise InvalidRequest(f"placement has more than {MAX_PLACEMENT_CONSTRAINTS} constraints")
    return tuple(sorted(found))


# Bounds of the policy's limits: what the engine accepts, and no more than a year of time.
MIN_MEMORY_LIMIT_MB = 6
MAX_MEMORY_LIMIT_MB = 16 * 1024 * 1024
MAX_CPU_LIMIT = 1024.0
MIN_CPU_LIMIT = 0.01
MAX_PIDS_LIMIT = 4_194_304
MAX_TIMEOUT_S = 366 * 24 * 3600


def check_policy_limits(
    memory_limit_mb: int | None,
    cpu_limit: float | None,
    pids_limit: int | None,
    idle_timeout_s: int | None,
    max_lifetime_s: int | None,
) -> None:
    """``InvalidRequest`` naming the first limit out of its bounds (None is always fine)."""

    def whole(name: str, value: int | None, low: int, high: int) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidRequest(f"{name} must be a whole number from {low} to {high}")

    whole("memory_limit_mb", memory_limit_mb, MIN_MEMORY_LIMIT_MB, MAX_MEMORY_LIMIT_MB)
    whole("pids_limit", pids_limit, 1, MAX_PIDS_LIMIT)
    whole("idle_timeout_s", idle_timeout_s, 0, MAX_TIMEOUT_S)
    whole("max_lifetime_s", max_lifetime_s, 0, MAX_TIMEOUT_S)
    if cpu_limit is not None and (
        isinstance(cpu_limit, bool)
        or not isinstance(cpu_limit, int | float)
        or not MIN_CPU_LIMIT <= cpu_limit <= MAX_CPU_LIMIT
    ):
        raise InvalidRequest(f"cpu_limit must be a number of cores from {MIN_CPU_LIMIT} to 1024")


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of the accounting table: a user may run an application under a policy."""

    mapping_id: str
    user: User
    application: Application
    policy: Policy
    source_group: str | None = None
    """The hub group whose grant this is (the user's only while they are in it); None for
    a grant to the user by name."""


@dataclass(frozen=True, slots=True)
class GroupGrant:
    """A grant to everyone in a hub group: each member may run the application under the
    policy for as long as the hub lists them in the group."""

    mapping_id: str
    group: str
    application: Application
    policy: Policy

    def for_user(self, user: User) -> Grant:
        """The grant as one of ``user``'s applications (the caller knows they are a member)."""
        return Grant(self.mapping_id, user, self.application, self.policy, self.group)


def validate_group_name(name: str) -> str:
    """A hub group name: non-empty, printable, no slash, bounded (as a user name)."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise InvalidRequest("group name must be non-empty and without surrounding spaces")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"group name is longer than {MAX_NAME_LENGTH} characters")
    if "/" in name or not name.isprintable():
        raise InvalidRequest(f"group name {name!r:.80} contains '/' or unprintable characters")
    return name


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
    """A Docker image reference (``[registry/]repo/name[:tag][@digest]``) that the engine
    accepts (see ``parse_image_reference``)."""
    parse_image_reference(image)
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
