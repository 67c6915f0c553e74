"""Image labels (namespace ``eu.simphony-project.docker.``) → what an image offers."""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

LABEL_NAMESPACE = "eu.simphony-project.docker."
ENV_LABEL_PREFIX = LABEL_NAMESPACE + "env."

# Names (as written in labels) that the service itself knows how to fill in.
X11_WIDTH = "X11_WIDTH"
X11_HEIGHT = "X11_HEIGHT"
X11_DEPTH = "X11_DEPTH"
STARTUPDATA = "STARTUPDATA"
RESERVED_ENV_LABELS = frozenset({"x11-width", "x11-height", "x11-depth", "startupdata"})

# An icon is shown inline in every page that lists the application; a megabyte is far more
# than a 128x128 PNG needs and keeps a careless image from bloating every response.
MAX_ICON_LENGTH = 1024 * 1024

_ENV_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")


class AppType(enum.StrEnum):
    VNC = "vncapp"
    WEB = "webapp"


DEFAULT_APP_TYPE = AppType.VNC


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    """What an image declares about itself through its labels."""

    name: str
    ui_name: str
    icon_128: str
    description: str
    type: AppType
    env: frozenset[str]


def env_variable_name(label_name: str) -> str | None:
    """``x11-width`` → ``X11_WIDTH``; None when the name cannot be an environment variable."""
    if not _ENV_LABEL_NAME_RE.match(label_name):
        return None
    return label_name.upper().replace("-", "_")


def parse_image_labels(image_name: str, labels: Mapping[str, str] | None) -> ImageMetadata:
    """Read an image's labels into its metadata.

    Labels are written by whoever built the image, so nothing here trusts them: a missing or
    empty ``ui_name`` falls back to the image name, an icon that is not valid base64 is
    dropped, and a ``type`` other than ``vncapp``/``webapp`` (or none) means ``vncapp`` — the
    original product's assumption, since the type only chooses how the UI presents the app.
    ``env.<name>`` labels whose name cannot become an environment variable are ignored.
    """
    labels = labels or {}

    def label(key: str) -> str:
        value = labels.get(LABEL_NAMESPACE + key)
        return value.strip() if isinstance(value, str) else ""

    env: set[str] = set()
    for key in labels:
        if key.startswith(ENV_LABEL_PREFIX):
            variable = env_variable_name(key.removeprefix(ENV_LABEL_PREFIX))
            if variable is not None:
                env.add(variable)

    return ImageMetadata(
        name=image_name,
        ui_name=label("ui_name") or image_name,
        icon_128=_valid_base64(label("icon_128")),
        description=label("description"),
        type=_app_type(label("type")),
        env=frozenset(env),
    )


def _app_type(value: str) -> AppType:
    try:
        return AppType(value.lower())
    except ValueError:
        return DEFAULT_APP_TYPE


def _valid_base64(value: str) -> str:
    # Dockerfiles often wrap long label values; the whitespace is not part of the data.
    compact = "".join(value.split())
    if not compact or len(compact) > MAX_ICON_LENGTH:
        return ""
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return compact
