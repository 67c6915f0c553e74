"""A session: one user's running application, as read back from its container's labels."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from remoteappmanager.domain.containers import (
    RUNINFO_MAPPING_ID,
    RUNINFO_REALM,
    RUNINFO_URL_ID,
    RUNINFO_URLPATH,
    RUNINFO_USER,
    ContainerInfo,
)
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import MAX_NAME_LENGTH, Policy
from remoteappmanager.domain.naming import is_mapping_id, is_url_id
from remoteappmanager.domain.routing import check_route_path


class SessionState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    # The container is there but its process ended; the reconciler removes it.
    EXITED = "exited"


class StartStep(enum.StrEnum):
    """The steps of a start, in order, as users see them while it runs.

    ``creating``: the image looked up, the configurables checked, the container created;
    ``starting``: the engine starts it; ``pulling the image``: on a swarm, while the node that
    runs the task prepares it (pulls the image where it is missing, creates the container),
    within ``starting``; ``waiting for the app``: until the application answers on its URL
    path; ``routing``: until the proxy routes to it.
    """

    CREATING = "creating"
    STARTING = "starting"
    PULLING = "pulling the image"
    WAITING = "waiting for the app"
    ROUTING = "routing"


class StopReason(enum.StrEnum):
    """Why a session ended, as its user is told."""

    USER = "user"
    ADMIN = "admin"
    IDLE = "idle"
    LIFETIME = "lifetime"
    OOM = "oom"
    DIED = "died"
    RECONCILE = "reconcile"


STOP_REASON_TEXT = {
    StopReason.USER: "stopped by you",
    StopReason.ADMIN: "stopped by an administrator",
    StopReason.IDLE: "stopped after a time without input",
    StopReason.LIFETIME: "stopped at the end of its maximum lifetime",
    StopReason.OOM: "out of memory",
    StopReason.DIED: "the application exited",
    StopReason.RECONCILE: "removed while repairing the service's state",
}


@dataclass(frozen=True, slots=True)
class StopRecord:
    """A session that ended, and why."""

    url_id: str
    user: str
    mapping_id: str
    reason: StopReason
    stopped_at: datetime


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a session is to be stopped (wall-clock seconds since the epoch), and why."""

    at: float
    reason: StopReason


def session_deadline(
    policy: Policy, started_at: float | None, last_input_at: float | None
) -> Deadline | None:
    """The earlier of the idle and the lifetime deadline of a session under ``policy``.

    Idle counts from the last client input, or from the start when there was none yet (or an
    input recorded before the start, from an earlier session); the lifetime from the start.
    None when the policy sets neither (0 and None mean none), or the start is unknown.
    """
    if started_at is None:
        return None
    deadlines: list[Deadline] = []
    if policy.max_lifetime_s:
        deadlines.append(Deadline(started_at + policy.max_lifetime_s, StopReason.LIFETIME))
    if policy.idle_timeout_s:
        since = started_at if last_input_at is None else max(started_at, last_input_at)
        deadlines.append(Deadline(since + policy.idle_timeout_s, StopReason.IDLE))
    if not deadlines:
        return None
    # On a tie the lifetime wins: it would have ended the session whatever its input.
    return min(deadlines, key=lambda deadline: deadline.at)


class AccessMode(enum.StrEnum):
    """Where proxy routes point: our gate (authorization on every request) or the container."""

    GATED = "gated"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Session:
    """An application started for ``user`` from grant ``mapping_id``, served at ``urlpath``.

    ``container_id`` is None only while a start has not created its container yet; ``step``
    is the step a start under way is at (None otherwise).
    """

    url_id: str
    user: str
    mapping_id: str
    image: str
    urlpath: str
    state: SessionState
    container_id: str | None = None
    host_ip: str | None = None
    host_port: int | None = None
    step: StartStep | None = None
    started_at: float | None = None
    """When the engine started the container (seconds since the epoch); None if unknown."""

    @property
    def key(self) -> tuple[str, str]:
        """At most one session exists per (user, grant)."""
        return (self.user, self.mapping_id)


def session_from_container(info: ContainerInfo, realm: str) -> Session | None:
    """The session a container of ``realm`` carries; None for anybody else's container, and
    for one whose labels do not describe a session we could have started (malformed ids,
    user or path): such a container is never shown, routed to or entered."""
    labels = info.labels
    if labels.get(RUNINFO_REALM) != realm:
        return None
    user = labels.get(RUNINFO_USER)
    mapping_id = labels.get(RUNINFO_MAPPING_ID)
    url_id = labels.get(RUNINFO_URL_ID)
    path = labels.get(RUNINFO_URLPATH)
    if not (user and mapping_id and url_id and path):
        return None
    if not (is_url_id(url_id) and is_mapping_id(mapping_id)):
        return None
    if "/" in user or not user.isprintable() or len(user) > MAX_NAME_LENGTH:
        return None
    try:
        check_route_path(path)
    except InvalidRequest:
        return None
    return Session(
        url_id=url_id,
        user=user,
        mapping_id=mapping_id,
        image=info.image,
        urlpath=path,
        state=SessionState.RUNNING if info.running else SessionState.EXITED,
        container_id=info.id,
        host_ip=info.host_ip,
        host_port=info.host_port,
        started_at=info.started_at,
    )
