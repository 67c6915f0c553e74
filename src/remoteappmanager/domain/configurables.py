"""Configurables: the start-up choices an image offers a user, and their validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.labels import STARTUPDATA, X11_HEIGHT, X11_WIDTH, ImageMetadata
from remoteappmanager.domain.models import Policy, validate_abs_path

RESOLUTION = "resolution"
STARTUP_DATA = "startupdata"

WORKSPACE_TARGET = "/workspace"

MIN_WIDTH, MAX_WIDTH = 320, 7680
MIN_HEIGHT, MAX_HEIGHT = 200, 4320
# What the original web page sends for "no particular size".
DEFAULT_RESOLUTION_WORDS = frozenset({"Window"})

# [0-9] rather than \d: \d also matches non-ASCII digits, which int() would accept.
_RESOLUTION_RE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class Configuration:
    """Validated configurable values; ``None`` means "not chosen, use the default"."""

    resolution: tuple[int, int] | None = None
    startupdata: str | None = None

    def environment(self) -> dict[str, str]:
        """The environment variables these choices set (defaults are not included)."""
        env: dict[str, str] = {}
        if self.resolution is not None:
            env[X11_WIDTH], env[X11_HEIGHT] = (str(n) for n in self.resolution)
        if self.startupdata is not None:
            env[STARTUPDATA] = self.startupdata
        return env


def offered_configurables(metadata: ImageMetadata, policy: Policy) -> tuple[str, ...]:
    """The configurables a user of this image under this policy may set, in display order."""
    offered: list[str] = []
    if X11_WIDTH in metadata.env and X11_HEIGHT in metadata.env:
        offered.append(RESOLUTION)
    if STARTUPDATA in metadata.env and policy.allow_startup_data:
        offered.append(STARTUP_DATA)
    return tuple(offered)


def mounted_roots(policy: Policy) -> tuple[str, ...]:
    """The container paths under which this policy mounts host data."""
    roots: list[str] = []
    if policy.allow_home:
        roots.append(WORKSPACE_TARGET)
    if policy.volume is not None:
        roots.append(policy.volume.target)
    return tuple(roots)


def validate_configurables(raw: object, metadata: ImageMetadata, policy: Policy) -> Configuration:
    """Check a user's configurables (hostile input) against what is offered.

    ``raw`` is the REST API's ``{"resolution": {"resolution": "1920x1080"}, "startupdata":
    {"startupdata": "/workspace/run.in"}}``; each value may also be the bare string.
    ``None`` or ``{}`` means no choice. Raises ``InvalidRequest`` for anything unknown,
    not offered, or not acceptable.
    """
    if raw is None:
        return Configuration()
    if not isinstance(raw, Mapping):
        raise InvalidRequest("configurables must be an object")
    offered = offered_configurables(metadata, policy)
    resolution: tuple[int, int] | None = None
    startupdata: str | None = None
    for key, wrapped in raw.items():
        if key not in (RESOLUTION, STARTUP_DATA):
            raise InvalidRequest(f"unknown configurable {_shown(key)}")
        value = _unwrap(key, wrapped)
        if key == RESOLUTION:
            resolution = parse_resolution(value)
            if resolution is not None and RESOLUTION not in offered:
                raise InvalidRequest(f"{metadata.name} does not offer a choice of resolution")
        else:
            if value is None or value == "":
                continue
            if STARTUP_DATA not in offered:
                raise InvalidRequest(f"startup data is not offered for {metadata.name}")
            startupdata = validate_startupdata(value, policy)
    return Configuration(resolution=resolution, startupdata=startupdata)


def parse_resolution(value: object) -> tuple[int, int] | None:
    """``"1920x1080"`` → ``(1920, 1080)``; ``None``/``""``/``"Window"`` → ``None`` (default)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("resolution must be a string like 1920x1080")
    if value == "" or value in DEFAULT_RESOLUTION_WORDS:
        return None
    match = _RESOLUTION_RE.fullmatch(value)
    if match is None:
        raise InvalidRequest(f"resolution {_shown(value)} is not WIDTHxHEIGHT (e.g. 1920x1080)")
    width, height = int(match[1]), int(match[2])
    if not (MIN_WIDTH <= width <= MAX_WIDTH and MIN_HEIGHT <= height <= MAX_HEIGHT):
        raise InvalidRequest(
            f"resolution {value} is out of bounds "
            f"({MIN_WIDTH}..{MAX_WIDTH} x {MIN_HEIGHT}..{MAX_HEIGHT})"
        )
    return width, height


def validate_startupdata(value: object, policy: Policy) -> str:
    """An absolute, normalised path inside one of the policy's mounts."""
    if not isinstance(value, str):
        raise InvalidRequest("startupdata must be a path")
    path = validate_abs_path(value, "startupdata")
    roots = mounted_roots(policy)
    if not any(_is_within(path, root) for root in roots):
        where = " or ".join(roots) if roots else "nothing (the policy mounts no data)"
        raise InvalidRequest(f"startupdata {_shown(path)} must lie inside {where}")
    return path


def _is_within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _unwrap(key: str, wrapped: object) -> object:
    if isinstance(wrapped, Mapping):
        extra = set(wrapped) - {key}
        if extra:
            raise InvalidRequest(f"configurable {key} has unknown fields")
        return wrapped.get(key)
    return wrapped


def _shown(value: object, limit: int = 60) -> str:
    # Hostile input goes back into error messages; keep it short.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
