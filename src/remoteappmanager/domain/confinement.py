"""How an application container is confined: capabilities, privileges, resources, network.

Every application container starts without any Linux capability and with
``no-new-privileges`` (a setuid program inside it cannot gain what its user lacks), bounded in
memory (swap included), CPU and processes, on the service's application network, where
containers cannot reach each other.

Capabilities: the demo ``vncapp`` (Xvnc, an X program and websockify, as uid 1000) and
``webapp`` (busybox httpd, as uid 1000) images run and serve with none at all: they bind
port 8888 (not a privileged port), write only to ``/tmp`` and their workspace (owned by their
user), and never change user. So no application type gets any back. An image that must start
as root and switch users would need ``SETUID``/``SETGID``/``CHOWN``...; such images are not
supported: build them to run as an unprivileged user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from remoteappmanager.domain.labels import AppType
from remoteappmanager.domain.models import Policy

CAPABILITIES_BY_APP_TYPE: Mapping[AppType, tuple[str, ...]] = {
    AppType.VNC: (),
    AppType.WEB: (),
}
DROPPED_CAPABILITIES = ("ALL",)

DEFAULT_MEMORY_LIMIT_MB = 4096
DEFAULT_CPU_LIMIT = 2.0
DEFAULT_PIDS_LIMIT = 1024
DEFAULT_NETWORK = "remoteapp-apps"


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """What one container may use; None means no limit.

    Carried by every container spec, so that a policy can set its own values over the
    deployment's defaults.
    """

    memory_mb: int | None = DEFAULT_MEMORY_LIMIT_MB
    cpus: float | None = DEFAULT_CPU_LIMIT
    pids: int | None = DEFAULT_PIDS_LIMIT

    @classmethod
    def of(cls, memory_mb: int, cpus: float, pids: int) -> ResourceLimits:
        """From settings, where 0 means no limit."""
        return cls(memory_mb or None, cpus or None, pids or None)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024

    @property
    def nano_cpus(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * 1_000_000_000)


def limits_for(policy: Policy, defaults: ResourceLimits) -> ResourceLimits:
    """The limits of a container started under ``policy``: the policy's own values where it
    has them, the deployment's ``defaults`` (from the settings) where it has none."""
    return ResourceLimits(
        memory_mb=policy.memory_limit_mb
        if policy.memory_limit_mb is not None
        else defaults.memory_mb,
        cpus=policy.cpu_limit if policy.cpu_limit is not None else defaults.cpus,
        pids=policy.pids_limit if policy.pids_limit is not None else defaults.pids,
    )


@dataclass(frozen=True, slots=True)
class Confinement:
    """The confinement of one container (see the module docstring)."""

    limits: ResourceLimits = ResourceLimits()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = DROPPED_CAPABILITIES
    no_new_privileges: bool = True
    network: str | None = DEFAULT_NETWORK
    run_as: int | None = None
    """The uid and gid the container runs as; None: the image's own user."""


DEFAULT_CONFINEMENT = Confinement()
# Highest uid the kernel hands out, less a margin for the users themselves.
MAX_UID_BASE = 2**31 - 2**24


def user_uid(base: int | None, user_id: int) -> int | None:
    """The uid (and gid) a user's containers run as and their workspace belongs to.

    None when the deployment keeps the images' own user (``base`` unset); otherwise one uid
    per user, so that no two users' files or processes share an owner on the host.
    """
    if base is None:
        return None
    return base + user_id


def capabilities_for(app_type: AppType) -> tuple[str, ...]:
    """The capabilities an application type gets back after all are dropped."""
    return CAPABILITIES_BY_APP_TYPE.get(app_type, ())
