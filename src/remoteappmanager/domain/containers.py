"""What runs: the spec of a container to create, the state of one that exists, its route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from remoteappmanager.domain.configurables import WORKSPACE_TARGET, Configuration
from remoteappmanager.domain.confinement import (
    DEFAULT_CONFINEMENT,
    Confinement,
    capabilities_for,
)
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.labels import (
    STARTUPDATA,
    X11_DEPTH,
    X11_HEIGHT,
    X11_WIDTH,
    ImageMetadata,
)
from remoteappmanager.domain.models import Grant, Volume, VolumeMode
from remoteappmanager.domain.naming import container_name, unix_user_name, urlpath, user_base_url
from remoteappmanager.domain.volumes import is_within

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
    confinement: Confinement = DEFAULT_CONFINEMENT
    placement: tuple[str, ...] = ()
    """Swarm placement constraints (``node.labels.gpu==true``); a single engine has none."""


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
    started_at: float | None = None
    """Seconds since the epoch: when it started (inspect), or was created (lists)."""
    oom_killed: bool = False
    """The kernel killed its process for using more memory than its limit (inspect only)."""

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


RUNINFO_USER = RUNINFO_NAMESPACE + "user"
RUNINFO_MAPPING_ID = RUNINFO_NAMESPACE + "mapping_id"
RUNINFO_URL_ID = RUNINFO_NAMESPACE + "url_id"
RUNINFO_URLPATH = RUNINFO_NAMESPACE + "urlpath"
RUNINFO_REALM = RUNINFO_NAMESPACE + "realm"

DEFAULT_X11_WIDTH = 1024
DEFAULT_X11_HEIGHT = 768
DEFAULT_X11_DEPTH = 16


def build_container_spec(
    grant: Grant,
    image: ImageMetadata,
    options: Configuration,
    url_id: str,
    realm: str,
    publish_ip: str,
    workspace: str | None,
    *,
    mount_volume: bool = True,
    volume: Volume | None = None,
    confinement: Confinement = DEFAULT_CONFINEMENT,
) -> ContainerSpec:
    """The container that runs ``grant``'s application for its user.

    ``workspace`` is the host directory mounted at ``/workspace`` when the policy allows a
    home; ``mount_volume`` is False when the policy volume's source is missing on the host
    (Docker would otherwise create it, owned by root). ``volume`` is the policy's volume as
    checked against the volume rules (its source resolved on the host); it is mounted instead
    of the policy's own. ``confinement`` carries the deployment's limits; the capabilities
    the image's type needs are added to it. Raises ``InvalidRequest`` when the policy volume
    would hide the workspace.
    """
    user = grant.user.name
    path = urlpath(user, url_id)
    labels = {
        RUNINFO_USER: user,
        RUNINFO_MAPPING_ID: grant.mapping_id,
        RUNINFO_URL_ID: url_id,
        RUNINFO_URLPATH: path,
        RUNINFO_REALM: realm,
    }
    width, height = options.resolution or (DEFAULT_X11_WIDTH, DEFAULT_X11_HEIGHT)
    environment = {
        "JPY_USER": user,
        "JPY_BASE_USER_URL": user_base_url(user),
        "USER": unix_user_name(user),
        "URL_ID": url_id,
        X11_WIDTH: str(width),
        X11_HEIGHT: str(height),
        X11_DEPTH: str(DEFAULT_X11_DEPTH),
    }
    if options.startupdata is not None:
        environment[STARTUPDATA] = options.startupdata
    policy = grant.policy
    if policy.app_license:
        environment["APP_LICENSE"] = policy.app_license

    mounts: list[Mount] = []
    if policy.allow_home and workspace is not None:
        mounts.append(Mount(source=workspace, target=WORKSPACE_TARGET, read_only=False))
    mounted = volume if volume is not None else policy.volume
    if mounted is not None and mount_volume:
        # Inside the workspace, the engine would make the mount point in the user's host
        # folder; around it, the volume would hide it.
        if any(
            is_within(mounted.target, mount.target) or is_within(mount.target, mounted.target)
            for mount in mounts
        ):
            raise InvalidRequest(
                f"the policy's volume target {mounted.target} clashes with the workspace"
            )
        mounts.append(
            Mount(
                source=mounted.source,
                target=mounted.target,
                read_only=mounted.mode is VolumeMode.RO,
            )
        )
    return ContainerSpec(
        name=container_name(realm, user, grant.mapping_id),
        image=image.name,
        labels=labels,
        environment=environment,
        mounts=tuple(mounts),
        publish_ip=publish_ip,
        port=CONTAINER_PORT,
        confinement=replace(
            confinement,
            cap_add=tuple(dict.fromkeys((*confinement.cap_add, *capabilities_for(image.type)))),
        ),
        placement=policy.placement,
    )
