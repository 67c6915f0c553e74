"""The container runtime on a Docker Swarm manager: one swarm service per session.

Each session is a replicated service of at most one task, with no published port and no
virtual IP (``dnsrr``), attached to an attachable overlay network that the service (and its
gate) also joins; the gate reaches the task by its address on that network, port 8888. The
service and its container spec carry the session's labels, so that everything the rest of
the program reads (list by label, inspect) comes from the manager's view of services and
tasks, never from one node's containers.

Engine behaviours this module relies on, measured on Docker 20.10 (API 1.41):

- A service name must be a DNS label (no dots, at most 63 characters); session names have
  dots, so the service is named after a sanitised form of them, and the original is kept in
  a label.
- A node pulls a task's image before starting it unless the reference is an image id, or a
  digest it already holds. The image is therefore pinned to its repository digest when it
  has one (the same image on every node, pulled where missing: the task is ``preparing``),
  otherwise to its id (an image built on this engine, never pulled).
- With restart policy ``none`` a task that ends stays ended, and the service keeps it: a
  session that dies stays dead until it is stopped or reconciled away.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import structlog

from remoteappmanager.adapters.docker import (
    MAX_CACHED_IMAGES,
    NETWORK_LABEL,
    AiodockerRuntime,
    DockerError,
    EngineOptions,
    bind_mounts,
    check_container_ref,
    engine_error,
    environment,
    is_container_ref,
)
from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.containers import CONTAINER_PORT, ContainerInfo, ContainerSpec
from remoteappmanager.domain.errors import Exists, InvalidRequest, NotFound, Unable
from remoteappmanager.domain.sessions import StartStep

log = structlog.get_logger(__name__)

DEFAULT_SWARM_NETWORK = "remoteapp-overlay"
DEFAULT_START_TIMEOUT = 60.0
# How often a start looks at the service's task: a task runs a few hundred milliseconds after
# it is asked for, and each look is one small call to the manager.
POLL_INTERVAL = 0.02
# How often a removal looks whether the swarm has let the task go.
REMOVE_POLL_INTERVAL = 0.1

SWARM_NAMESPACE = "eu.simphony-project.docker.swarm."
NAME_LABEL = SWARM_NAMESPACE + "name"
IMAGE_LABEL = SWARM_NAMESPACE + "image"

_SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-_]*[A-Za-z0-9]+)*")
_MAX_SERVICE_NAME = 63
# Task states before the task's container runs; "preparing" is the node pulling the image.
_PENDING_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
_NO_NODE = "no suitable node"
# How many service ids one task listing filters on (keeps the query string short).
_TASK_FILTER_CHUNK = 100


def service_name(name: str) -> str:
    """The swarm service name for a container name (a DNS label, at most 63 characters).

    Deterministic, so that the name of a session's grant still clashes with the service
    left by a previous start of that grant, which is how a start finds what it replaces.
    """
    if len(name) <= _MAX_SERVICE_NAME and _SERVICE_NAME_RE.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "s"
    if len(cleaned) <= _MAX_SERVICE_NAME and name == cleaned:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{cleaned[: _MAX_SERVICE_NAME - len(digest) - 1].rstrip('-')}-{digest}"


class SwarmRuntime(AiodockerRuntime):
    """``ContainerRuntime`` on a Swarm manager; a "container id" is a swarm service id.

    ``create`` makes the service with no task (zero replicas); ``start`` asks for one and
    waits (at most ``start_timeout`` seconds) until it runs, or has ended; a task the swarm
    rejects, or cannot place (no node satisfies the placement constraints), ends the start
    at once with the swarm's reason (``Unable``). Tasks join ``network`` (an overlay,
    created attachable if missing; an existing network that is not an attachable overlay is
    refused); the container spec's bridge network is not used. Resources are limits and
    reservations both, so the scheduler places a task only where it fits.
    """

    def __init__(
        self,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        network: str = DEFAULT_SWARM_NETWORK,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        **options: Unpack[EngineOptions],
    ) -> None:
        super().__init__(url, ssl_context, **options)
        if not is_container_ref(network):
            raise InvalidRequest(f"{network!r:.70} is not a Docker network name")
        self.network = network
        self._start_timeout = start_timeout
        self._overlay_lock = asyncio.Lock()
        self._overlay_ready = False
        # image -> the reference the nodes run, kept as long as image metadata is.
        self._pins: TtlCache[str, str] = TtlCache(
            ttl=self._image_cache_ttl, maxsize=MAX_CACHED_IMAGES, clock=self._clock
        )

    # ----------------------------------------------------------------- network
    async def ensure_overlay(self) -> None:
        """Make sure the attachable overlay network exists (checked once per client)."""
        async with self._overlay_lock:
            if self._overlay_ready:
                return
            data = await self._network(self.network)
            if data is None:
                await self._create_overlay()
                data = await self._network(self.network)
                if data is None:
                    raise Unable(f"the network {self.network} disappeared as it was created")
            if data.get("Driver") != "overlay" or not data.get("Attachable"):
                raise Unable(
                    f"the network {self.network} is not an attachable overlay network; remove "
                    "it or name another in REMOTEAPP_SWARM_NETWORK"
                )
            self._overlay_ready = True

    async def _network(self, name: str) -> Mapping[str, Any] | None:
        try:
            async with self._call(f"inspect network {name}"):
                return dict(await (await self._client().networks.get(name)).show())
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise engine_error(exc, f"inspect network {name}") from None

    async def _create_overlay(self) -> None:
        config = {
            "Name": self.network,
            "Driver": "overlay",
            "Attachable": True,
            "CheckDuplicate": True,
            "Labels": {NETWORK_LABEL: "true"},
        }
        try:
            async with self._call(f"create network {self.network}"):
                await self._client().networks.create(config)
        except DockerError as exc:
            if exc.status == 503:
                raise Unable(
                    f"the engine is not a swarm manager ({_message(exc)}); run the service "
                    "against a manager, or set REMOTEAPP_ENGINE=docker"
                ) from None
            if exc.status != 409:
                raise engine_error(exc, f"create network {self.network}") from None
        else:
            log.info("swarm.network_created", network=self.network)

    # ----------------------------------------------------------------- services
    async def create(self, spec: ContainerSpec) -> str:
        await self._check_mounts(spec)
        await self.ensure_overlay()
        image = await self._pinned_image(spec.image)
        name = service_name(spec.name)
        body = _service_spec(spec, name, image, self.network)
        try:
            async with self._call(f"create service {name}"):
                created = await self._client()._query_json(
                    "services/create", method="POST", data=json.dumps(body)
                )
        except DockerError as exc:
            if exc.status == 409:
                raise Exists(f"a service named {name} already exists") from None
            if exc.status == 503:
                raise Unable(f"the engine is not a swarm manager: {_message(exc)}") from None
            raise engine_error(exc, f"create service {name}") from None
        return str(created["ID"])

    async def _pinned_image(self, image: str) -> str:
        """The image reference the nodes run: a repository digest, else the image id (kept
        as long as image metadata is)."""
        return await self._pins.get(image, lambda: self._read_pin(image))

    async def _read_pin(self, image: str) -> str:
        data = await self._inspected(image)
        digests = [str(ref) for ref in data.get("RepoDigests") or [] if "@" in str(ref)]
        return digests[0] if digests else str(data["Id"])

    async def start(
        self, container_id: str, progress: Callable[[StartStep], None] | None = None
    ) -> ContainerInfo:
        check_container_ref(container_id, NotFound)
        service = await self._service(container_id)
        if service is None:
            raise NotFound(f"service {container_id[:12]} does not exist")
        spec = dict(service["Spec"])
        spec["Mode"] = {"Replicated": {"Replicas": 1}}
        version = (service.get("Version") or {}).get("Index")
        what = f"start service {container_id[:12]}"
        try:
            async with self._call(what):
                await self._client()._query_json(
                    f"services/{service['ID']}/update",
                    method="POST",
                    params={"version": str(version)},
                    data=json.dumps(spec),
                )
        except DockerError as exc:
            if exc.status == 404:
                raise NotFound(f"service {container_id[:12]} does not exist") from None
            raise engine_error(exc, what) from None
        return await self._wait_started(service, progress)

    async def _wait_started(
        self, service: Mapping[str, Any], progress: Callable[[StartStep], None] | None
    ) -> ContainerInfo:
        service_id = str(service["ID"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        state = "new"
        pulling = False
        while True:
            try:
                task = _latest(await self._tasks([service_id]))
            except NotFound:
                raise Unable(f"service {service_id[:12]} disappeared as it started") from None
            if task is not None:
                status = task.get("Status") or {}
                state = str(status.get("State", ""))
                error = " ".join(str(status.get("Err") or "").split())[:300]
                if state == "pending" and error.startswith(_NO_NODE):
                    raise Unable(f"the swarm cannot place it: {error}")
                if state == "rejected" or (state == "failed" and not _exited(task)):
                    raise Unable(f"the swarm could not start it ({state}): {error or state}")
                if progress is not None and pulling != (state == "preparing"):
                    # Seen while it lasts (a poll apart): the node pulls and creates.
                    pulling = not pulling
                    progress(StartStep.PULLING if pulling else StartStep.STARTING)
                if state not in _PENDING_STATES:
                    return _info(service, task)
            if loop.time() >= deadline:
                doing = "pulling the image" if state == "preparing" else f"task {state}"
                raise Unable(
                    f"the swarm did not start it within {self._start_timeout:g} s ({doing})"
                )
            await asyncio.sleep(POLL_INTERVAL)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        if not is_container_ref(container_id):
            return None
        service = await self._service(container_id)
        if service is None:
            return None
        return _info(service, _latest(await self._tasks([str(service["ID"])])))

    async def _service(self, ref: str) -> Mapping[str, Any] | None:
        """A service by id or by container name (mapped to its service name)."""
        for candidate in dict.fromkeys((ref, service_name(ref))):
            try:
                async with self._call(f"inspect service {candidate[:40]}"):
                    data: Mapping[str, Any] = await self._client().services.inspect(candidate)
            except DockerError as exc:
                if exc.status == 404:
                    continue
                if exc.status == 503:
                    raise Unable(f"the engine is not a swarm manager: {_message(exc)}") from None
                raise engine_error(exc, f"inspect service {candidate[:40]}") from None
            # The engine also matches id prefixes; only a whole id or name is this service.
            spec_name = (data.get("Spec") or {}).get("Name")
            if candidate in (data.get("ID"), spec_name):
                return data
        return None

    async def _tasks(self, service_ids: Sequence[str]) -> list[Mapping[str, Any]]:
        tasks: list[Mapping[str, Any]] = []
        for offset in range(0, len(service_ids), _TASK_FILTER_CHUNK):
            chunk = list(service_ids[offset : offset + _TASK_FILTER_CHUNK])
            try:
                async with self._call("list tasks"):
                    tasks.extend(await self._client().tasks.list(filters={"service": chunk}))
            except DockerError as exc:
                raise engine_error(exc, "list tasks") from None
        return tasks

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            async with self._call("list services"):
                services = await self._client().services.list(filters=filters)
        except DockerError as exc:
            if exc.status == 503:
                raise Unable(f"the engine is not a swarm manager: {_message(exc)}") from None
            raise engine_error(exc, "list services") from None
        services = [
            service
            for service in services
            if all(
                ((service.get("Spec") or {}).get("Labels") or {}).get(key) == value
                for key, value in labels.items()
            )
        ]
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for task in await self._tasks([str(service["ID"]) for service in services]):
            by_service.setdefault(str(task.get("ServiceID")), []).append(task)
        infos: list[ContainerInfo] = []
        for service in services:
            try:
                infos.append(_info(service, _latest(by_service.get(str(service["ID"]), []))))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("swarm.service_skipped", id=str(service.get("ID", ""))[:12])
        return infos

    async def remove(self, container_id: str) -> None:
        """Remove the service, then wait (bounded) until the swarm has let its task go."""
        if not is_container_ref(container_id):
            return
        service = await self._service(container_id)
        if service is None:
            return
        service_id = str(service["ID"])
        tasks = [str(task["ID"]) for task in await self._tasks([service_id])]
        what = f"remove service {service_id[:12]}"
        try:
            async with self._call(what):
                await self._client().services.delete(service_id)
        except DockerError as exc:
            if exc.status == 404:
                return
            raise engine_error(exc, what) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout + self._request_timeout
        for task_id in tasks:
            while await self._task_exists(task_id):
                if loop.time() >= deadline:
                    log.info("swarm.task_lingers", service=service_id[:12], task=task_id[:12])
                    return
                await asyncio.sleep(REMOVE_POLL_INTERVAL)

    async def _task_exists(self, task_id: str) -> bool:
        try:
            async with self._call("inspect task"):
                await self._client().tasks.inspect(task_id)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise engine_error(exc, "inspect task") from None
        return True


def _service_spec(spec: ContainerSpec, name: str, image: str, network: str) -> dict[str, Any]:
    confinement = spec.confinement
    limits = confinement.limits
    resources: dict[str, Any] = {}
    if limits.memory_bytes is not None:
        resources["MemoryBytes"] = limits.memory_bytes
    if limits.nano_cpus is not None:
        resources["NanoCPUs"] = limits.nano_cpus
    reservations = dict(resources)
    if limits.pids is not None:
        resources["Pids"] = limits.pids
    container: dict[str, Any] = {
        "Image": image,
        "Labels": dict(spec.labels),
        "Env": environment(spec),
        "Mounts": bind_mounts(spec),
        # A PID 1 that reaps zombies and forwards signals, so stop is quick.
        "Init": True,
        "CapabilityDrop": list(confinement.cap_drop),
        "CapabilityAdd": list(confinement.cap_add),
        # Honoured by engines from API 1.44 on; older ones ignore it (see the swarm docs).
        "Privileges": {"NoNewPrivileges": confinement.no_new_privileges},
    }
    if confinement.run_as is not None:
        container["User"] = f"{confinement.run_as}:{confinement.run_as}"
    return {
        "Name": name,
        "Labels": {**spec.labels, NAME_LABEL: spec.name, IMAGE_LABEL: spec.image},
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": resources, "Reservations": reservations},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": list(spec.placement)},
            "Networks": [{"Target": network}],
        },
        "Mode": {"Replicated": {"Replicas": 0}},
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def _latest(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not tasks:
        return None
    return max(tasks, key=lambda task: (task.get("Version") or {}).get("Index", 0))


def _exited(task: Mapping[str, Any]) -> bool:
    """Whether a failed task is an application that ran and exited (not one never started)."""
    error = str((task.get("Status") or {}).get("Err") or "")
    return error.startswith("task: non-zero exit")


def _info(service: Mapping[str, Any], task: Mapping[str, Any] | None) -> ContainerInfo:
    spec = service.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    name = labels.pop(NAME_LABEL, None) or str(spec.get("Name", ""))
    image = labels.pop(IMAGE_LABEL, None) or str(
        ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
    )
    running = False
    address: str | None = None
    if task is not None:
        running = (task.get("Status") or {}).get("State") == "running" and task.get(
            "DesiredState"
        ) == "running"
        address = _address(task) if running else None
    return ContainerInfo(
        id=str(service["ID"]),
        name=name,
        image=image,
        labels=labels,
        running=running and address is not None,
        host_ip=address,
        host_port=CONTAINER_PORT if address is not None else None,
    )


def _address(task: Mapping[str, Any]) -> str | None:
    """The task's address on the first overlay network it is attached to (ingress aside)."""
    for attachment in task.get("NetworksAttachments") or []:
        network_spec = (attachment.get("Network") or {}).get("Spec") or {}
        if network_spec.get("Ingress"):
            continue
        for address in attachment.get("Addresses") or []:
            return str(address).split("/", 1)[0]
    return None


def _message(exc: DockerError) -> str:
    return " ".join(str(exc.message).split())[:200]
