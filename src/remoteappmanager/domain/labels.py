"""Image labels (namespace ``eu.simphony-project.docker.``) → what an image offers."""

from __future__ import annotations

import enum
from dataclasses import dataclass

LABEL_NAMESPACE = "eu.simphony-project.docker."


class AppType(enum.StrEnum):
    VNC = "vncapp"
    WEB = "webapp"


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    """What an image declares about itself through its labels."""

    name: str
    ui_name: str
    icon_128: str
    description: str
    type: AppType
    env: frozenset[str]
