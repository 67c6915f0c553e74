"""What runs: the spec of a container to create, the state of one that exists, its route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CONTAINER_PORT = 8888
RUNINFO_NAMESPACE = "eu.simphony-project.docker.runinfo."


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything the engine needs to create one application container."""

    name: str
    image: str
    labels: Mapping[str, str]
    environment: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    publish_ip: str = "127.0.0.1"
    port: int = CONTAINER_PORT


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as the engine reports it."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    running: bool
    host_ip: str | None = None
    host_port: int | None = None

    def runinfo(self, key: str) -> str | None:
        return self.labels.get(RUNINFO_NAMESPACE + key)


@dataclass(frozen=True, slots=True)
class Route:
    """A proxy route of ours: ``path`` (``/user/<name>/containers/<url_id>``) → ``target``."""

    path: str
    target: str
    user: str
    url_id: str
    extra: Mapping[str, str] = field(default_factory=dict)
