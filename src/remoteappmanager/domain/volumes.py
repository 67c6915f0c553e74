"""Which host paths a grant may mount, and where in the container: the volume rules.

An allow-list: a volume's source must lie under one of the roots the operator configured
(``REMOTEAPP_VOLUME_ROOTS``); with no roots, no host path may be granted at all. Whatever the
roots, the host's system paths are never mounted (the Docker socket would hand the engine,
and with it the host, to the container; ``/proc``, ``/etc``... the host's secrets and
kernel interfaces), nor is a path that contains one of them. Targets that would hide or
replace the container's own system directories are refused as well.

The checks here are lexical. Symbolic links are the caller's business: it resolves the source
(and the roots) on the host first and checks the resolved path again, so that a link under a
root that points outside it is refused (``check_resolved``).
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from remoteappmanager.domain.errors import Forbidden, InvalidRequest
from remoteappmanager.domain.models import Volume, validate_abs_path

DOCKER_SOCKET_NAME = "docker.sock"
DEFAULT_ENGINE_DATA_DIR = "/var/lib/docker"

# Host paths never mounted, nor anything inside them, nor anything containing them (a source
# of /var would bring /var/lib/docker and /var/run/docker.sock along).
SYSTEM_SOURCES: tuple[str, ...] = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
)

# Container paths a volume may neither replace nor go inside: the kernel's interfaces (the
# engine sets them up and confines them) and the directories the application's own programs
# and libraries come from.
SYSTEM_TARGET_TREES: tuple[str, ...] = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/boot",
    "/run",
    "/var/run",
)
# Container paths a volume may not replace, though it may go below them (/usr/local/data).
SYSTEM_TARGETS: tuple[str, ...] = ("/", "/usr", "/var", "/tmp", "/home")  # noqa: S108


class HostPathKind(enum.StrEnum):
    DIRECTORY = "directory"
    FILE = "file"
    MISSING = "missing"
    OTHER = "other"
    """A socket, a device, a pipe: never mounted."""


@dataclass(frozen=True, slots=True)
class HostPath:
    """A host path with every symbolic link resolved, and what it is."""

    path: str
    kind: HostPathKind


def is_within(path: str, root: str) -> bool:
    """Whether normalised absolute ``path`` is ``root`` or lies below it."""
    if root == "/":
        return True
    return path == root or path.startswith(root + "/")


def _overlaps(path: str, system: str) -> bool:
    return is_within(path, system) or (path != "/" and is_within(system, path)) or path == "/"


@dataclass(frozen=True, slots=True)
class VolumeRules:
    """Where grants may take host paths from (``roots``) and what they may never mount.

    ``forbidden`` adds host paths of this deployment that no grant may reach (the workspace
    folder, which holds every user's workspace; the engine's data directory when it is not
    the default one). ``shared``, on a swarm, names the folders every node sees alike: a
    source must lie under one of them as well, since its task may run on any node; None
    (a single engine) asks nothing more.
    """

    roots: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    shared: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        roots: Iterable[str],
        forbidden: Iterable[str] = (),
        shared: Iterable[str] | None = None,
    ) -> VolumeRules:
        """Rules from configured paths; ``InvalidRequest`` for a root that is not acceptable."""
        checked = tuple(dict.fromkeys(check_volume_root(root) for root in roots))
        extra = tuple(dict.fromkeys(validate_abs_path(path, "path") for path in forbidden))
        common = (
            None
            if shared is None
            else tuple(dict.fromkeys(check_volume_root(root) for root in shared))
        )
        return cls(roots=checked, forbidden=extra, shared=common)

    def with_forbidden(self, *paths: str) -> VolumeRules:
        extra = tuple(validate_abs_path(path, "path") for path in paths)
        return VolumeRules(self.roots, tuple(dict.fromkeys((*self.forbidden, *extra))), self.shared)

    def check(self, volume: Volume) -> Volume:
        """The volume if its source and target are acceptable.

        ``InvalidRequest`` for a path that is no absolute, clean path; ``Forbidden`` for one
        the rules keep out (a well-formed request that this deployment does not allow).
        """
        self.check_source(volume.source)
        check_volume_target(volume.target)
        return volume

    def check_source(self, source: str, roots: Iterable[str] | None = None) -> str:
        """A source path under a root and clear of every system path.

        ``roots`` replaces the configured roots (the caller passes them resolved).
        """
        source = validate_abs_path(source, "volume source")
        if posixpath.basename(source) == DOCKER_SOCKET_NAME:
            raise Forbidden(
                f"volume source {source} is a Docker socket: it would hand the engine (and "
                "the host) to the container"
            )
        for system in (*SYSTEM_SOURCES, *self.forbidden):
            if _overlaps(source, system):
                raise Forbidden(
                    f"volume source {source} is or contains {system}, which is never mounted "
                    "into a container"
                )
        allowed = self.roots if roots is None else tuple(roots)
        if not allowed:
            raise Forbidden(
                f"volume source {source} cannot be granted: no host folder may be mounted "
                "(the operator has set no REMOTEAPP_VOLUME_ROOTS)"
            )
        if not any(is_within(source, root) for root in allowed):
            raise Forbidden(
                f"volume source {source} is outside the folders grants may mount "
                f"({', '.join(allowed)})"
            )
        if self.shared is not None and not any(is_within(source, root) for root in self.shared):
            declared = ", ".join(self.shared) or "none"
            raise Forbidden(
                f"volume source {source} is not on storage that every swarm node shares "
                f"(REMOTEAPP_SWARM_SHARED_ROOTS: {declared})"
            )
        return source

    def check_resolved(self, volume: Volume, host: HostPath, roots: Iterable[str]) -> Volume:
        """The volume to mount, given its source as found on the host (links resolved).

        ``roots`` are the configured roots with their links resolved too. Returns the volume
        with the resolved source, so that what is mounted is what was checked.
        """
        self.check(volume)
        if host.kind is HostPathKind.OTHER:
            raise Forbidden(
                f"volume source {volume.source} is not a folder or a regular file (a socket "
                "or a device is never mounted)"
            )
        resolved = validate_abs_path(host.path, "volume source")
        if resolved != volume.source:
            try:
                self.check_source(resolved, roots)
            except (InvalidRequest, Forbidden) as exc:
                raise Forbidden(
                    f"volume source {volume.source} leads to {resolved} through a symbolic "
                    f"link: {exc.message}"
                ) from None
        return Volume(resolved, volume.target, volume.mode)


NO_VOLUMES = VolumeRules()
"""No host folder may be granted."""


def check_volume_target(target: str) -> str:
    """A container path a volume may be mounted at; ``Forbidden`` for a system folder."""
    target = validate_abs_path(target, "volume target")
    if target in SYSTEM_TARGETS:
        raise Forbidden(f"volume target {target} would replace a system folder")
    for tree in SYSTEM_TARGET_TREES:
        if is_within(target, tree):
            raise Forbidden(
                f"volume target {target} is inside the container's system folder {tree}"
            )
    return target


def check_volume_root(root: str) -> str:
    """A folder the operator lets grants mount from: not a system path, nor above one."""
    root = validate_abs_path(root, "volume root")
    if posixpath.basename(root) == DOCKER_SOCKET_NAME:
        raise InvalidRequest(f"volume root {root} is a Docker socket")
    for system in SYSTEM_SOURCES:
        if _overlaps(root, system):
            raise InvalidRequest(
                f"volume root {root} is or contains the system path {system}; name the "
                "folders that hold the data to share"
            )
    return root
