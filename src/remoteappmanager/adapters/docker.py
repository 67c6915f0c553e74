"""The container runtime on a Docker engine (local socket, TCP+TLS, Swarm manager) via aiodocker."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, Unpack

import aiodocker
import aiohttp
import structlog

from remoteappmanager.adapters.observed import Observe, operation_of, timing
from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.containers import CONTAINER_PORT, ContainerInfo, ContainerSpec
from remoteappmanager.domain.errors import (
    Exists,
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
    Unavailable,
)
from remoteappmanager.domain.labels import ImageMetadata, parse_image_labels
from remoteappmanager.domain.models import validate_image_name
from remoteappmanager.domain.sessions import StartStep
from remoteappmanager.domain.volumes import DEFAULT_ENGINE_DATA_DIR, is_within

log = structlog.get_logger(__name__)

DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 5
DEFAULT_IMAGE_CACHE_TTL = 60.0
# How many images' metadata is kept; past it the least recently used is read again.
MAX_CACHED_IMAGES = 1024

# aiodocker reports "could not connect" as a DockerError with this pseudo status.
_CONNECTION_FAILED = 900
# Container ids and names as Docker issues and accepts them; anything else cannot exist,
# and must not be spliced into an API path.
_CONTAINER_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ENGINE_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")
_TCP_SCHEME_RE = re.compile(r"^(tcp|http)://")
_SUMMARY_KEYS = ("Id", "Names", "Image", "Labels", "State", "Ports", "Created")
ICC_OPTION = "com.docker.network.bridge.enable_icc"
# Marks the networks this service created.
NETWORK_LABEL = "eu.simphony-project.docker.network"
# The engine's HTTP errors, for the other adapter of the same engine (swarm.py).
DockerError = aiodocker.DockerError


def tls_context(cert_path: Path, verify: bool) -> ssl.SSLContext:
    """TLS for a ``tcp://`` engine from ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``cert_path``.

    Like the docker CLI: the client certificate is always presented; the engine's own
    certificate is checked against ``ca.pem`` only when ``verify`` (``DOCKER_TLS_VERIFY``).
    """
    try:
        if verify:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(cert_path / "ca.pem")
            )
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(str(cert_path / "cert.pem"), str(cert_path / "key.pem"))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise Unavailable(
            f"Docker engine unavailable: cannot load the TLS certificates in {cert_path} "
            f"(ca.pem, cert.pem, key.pem): {reason}"
        ) from None
    return context


def bind_mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    """The spec's mounts as the engine API has them (containers and swarm tasks alike)."""
    return [
        {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
        for m in spec.mounts
    ]


def environment(spec: ContainerSpec) -> list[str]:
    """The spec's environment as the engine API has it (``KEY=value`` each)."""
    return [f"{key}={value}" for key, value in spec.environment.items()]


class EngineOptions(TypedDict, total=False):
    """How a runtime talks to its engine; see ``AiodockerRuntime`` (each has a default)."""

    request_timeout: float
    stop_timeout: int
    image_cache_ttl: float
    clock: Callable[[], float]
    observe: Observe | None


class AiodockerRuntime:
    """``ContainerRuntime`` on a Docker engine.

    ``url`` is the engine's address (``unix:///var/run/docker.sock``, ``tcp://host:2376``);
    ``None`` lets aiodocker decide (``DOCKER_HOST``, the Docker context, the local socket).
    The aiodocker client is created on first use (or by ``open``) because it needs a running
    event loop, and closed by ``close``. Every call is bounded by ``request_timeout``;
    ``remove`` additionally allows the container ``stop_timeout`` seconds to exit cleanly.
    Image metadata is cached for ``image_cache_ttl`` seconds; a missing image is not cached,
    so an image an admin has just built is seen at once.
    """

    def __init__(
        self,
        url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **options: Unpack[EngineOptions],
    ) -> None:
        if url is not None and ssl_context is not None:
            url = _TCP_SCHEME_RE.sub("https://", url)
        elif url is not None:
            url = _TCP_SCHEME_RE.sub("http://", url)
        self._url = url
        self._ssl_context = ssl_context
        self._request_timeout = options.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        self._observe = options.get("observe")
        self._stop_timeout = options.get("stop_timeout", DEFAULT_STOP_TIMEOUT)
        self._image_cache_ttl = options.get("image_cache_ttl", DEFAULT_IMAGE_CACHE_TTL)
        self._clock = options.get("clock", time.monotonic)
        self._images: TtlCache[str, ImageMetadata] = TtlCache(
            ttl=self._image_cache_ttl, maxsize=MAX_CACHED_IMAGES, clock=self._clock
        )
        self._docker: aiodocker.Docker | None = None
        self._network_lock = asyncio.Lock()
        self._data_root: str | None = None

    async def open(self) -> None:
        """Create the client now (optional: the first call does it anyway)."""
        self._client()

    async def close(self) -> None:
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(
                    url=self._url,
                    ssl_context=self._ssl_context,
                    timeout=aiohttp.ClientTimeout(total=self._request_timeout),
                )
            # aiodocker asserts (rather than raises) when it finds no engine address at all.
            except (ValueError, AssertionError, OSError, aiodocker.DockerError) as exc:
                reason = exc.__class__.__name__
                raise Unavailable(
                    f"Docker engine unavailable: no usable engine address ({reason})"
                ) from None
        return self._docker

    @asynccontextmanager
    async def _call(self, action: str, extra_seconds: float = 0) -> AsyncIterator[None]:
        """Bound one engine call in time and turn transport failures into ``Unavailable``.

        HTTP errors of the engine (``DockerError`` with a real status) are left to the
        caller, which knows what a 404 or 409 means for its operation.
        """
        try:
            with timing(self._observe, "docker", operation_of(action)):
                async with asyncio.timeout(self._request_timeout + extra_seconds):
                    yield
        except TimeoutError:
            raise Unavailable(
                f"Docker engine unavailable: no answer within {self._request_timeout:g} s "
                f"(while trying to {action})"
            ) from None
        except aiodocker.DockerError as exc:
            if exc.status == _CONNECTION_FAILED:
                raise Unavailable(f"Docker engine unavailable: {_connection_reason(exc)}") from None
            raise
        except aiohttp.ClientError as exc:
            raise Unavailable(
                f"Docker engine unavailable: {exc.__class__.__name__} while trying to {action}"
            ) from None

    # ----------------------------------------------------------------- images
    async def inspect_image(self, image: str) -> ImageMetadata:
        validate_image_name(image)
        return await self._images.get(image, lambda: self._read_metadata(image))

    async def _read_metadata(self, image: str) -> ImageMetadata:
        data = await self._inspected(image)
        labels = (data.get("Config") or {}).get("Labels") or {}
        return parse_image_labels(image, labels)

    async def _inspected(self, image: str) -> dict[str, Any]:
        """The engine's inspection of ``image``; ``NotFound`` when it has no such image."""
        try:
            async with self._call(f"inspect image {image}"):
                data: dict[str, Any] = await self._client().images.inspect(image)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise image_missing(image) from None
            raise engine_error(exc, f"inspect image {image}") from None
        return data

    # ----------------------------------------------------------------- network and engine
    async def ensure_network(self, name: str) -> None:
        """Make sure the application network exists and keeps its containers apart.

        Created if missing as a bridge with inter-container traffic off
        (``com.docker.network.bridge.enable_icc=false``): containers on it reach the outside
        (through the host's NAT) and their ports published on the host, but not each other,
        by address or by name. An existing network that lets them is refused (``Unable``)
        rather than used. Looked at before every container is created, since the engine
        accepts a container on a network that has gone and fails only when starting it.
        """
        if not _CONTAINER_REF_RE.fullmatch(name):
            raise InvalidRequest(f"{name!r:.70} is not a Docker network name")
        async with self._network_lock:
            data = await self._inspect_network(name)
            if data is None:
                data = await self._create_network(name)
            _check_network(name, data)

    async def _inspect_network(self, name: str) -> Mapping[str, Any] | None:
        try:
            async with self._call(f"inspect network {name}"):
                network = await self._client().networks.get(name)
                return dict(await network.show())
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise engine_error(exc, f"inspect network {name}") from None

    async def _create_network(self, name: str) -> Mapping[str, Any]:
        config = {
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Options": {ICC_OPTION: "false"},
            "Labels": {NETWORK_LABEL: "true"},
        }
        try:
            async with self._call(f"create network {name}"):
                await self._client().networks.create(config)
        except aiodocker.DockerError as exc:
            # 409: another replica created it meanwhile; it is checked like any other.
            if exc.status != 409:
                raise engine_error(exc, f"create network {name}") from None
        else:
            log.info("docker.network_created", network=name)
        data = await self._inspect_network(name)
        if data is None:
            raise Unable(f"the network {name} disappeared as it was created")
        return data

    async def data_root(self) -> str:
        """The engine's data directory (``DockerRootDir``), never to be mounted; cached."""
        if self._data_root is None:
            try:
                async with self._call("read engine information"):
                    info = await self._client().system.info()
            except aiodocker.DockerError as exc:
                raise engine_error(exc, "read the engine's information") from None
            self._data_root = str(info.get("DockerRootDir") or DEFAULT_ENGINE_DATA_DIR)
        return self._data_root

    async def _check_mounts(self, spec: ContainerSpec) -> None:
        # The volume rules keep the engine's default data directory out; an engine keeping
        # its data elsewhere is only known here.
        if not spec.mounts:
            return
        data_root = await self.data_root()
        for mount in spec.mounts:
            if is_within(mount.source, data_root) or is_within(data_root, mount.source):
                raise InvalidRequest(
                    f"volume source {mount.source} is or contains the engine's data "
                    f"directory ({data_root}), which is never mounted into a container"
                )

    # ----------------------------------------------------------------- containers
    async def create(self, spec: ContainerSpec) -> str:
        if spec.placement:
            # A single engine has nowhere else to put it: running it here would ignore
            # what the grant asks for (a GPU node, a zone).
            raise InvalidRequest(
                "the grant's placement constraints ("
                + ", ".join(spec.placement)
                + ") need a Docker Swarm (REMOTEAPP_ENGINE=swarm); an administrator must "
                "change the grant"
            )
        await self._check_mounts(spec)
        if spec.confinement.network is not None:
            await self.ensure_network(spec.confinement.network)
        return await self._create(spec)

    async def _create(self, spec: ContainerSpec) -> str:
        exposed = f"{spec.port}/tcp"
        confinement = spec.confinement
        limits = confinement.limits
        host_config: dict[str, Any] = {
            "Mounts": bind_mounts(spec),
            # An empty HostPort lets the engine choose a free one.
            "PortBindings": {exposed: [{"HostIp": spec.publish_ip, "HostPort": ""}]},
            # A PID 1 that reaps zombies and forwards signals, so stop is quick.
            "Init": True,
            "Privileged": False,
            "PublishAllPorts": False,
            "CapDrop": list(confinement.cap_drop),
            "CapAdd": list(confinement.cap_add),
            "SecurityOpt": ["no-new-privileges"] if confinement.no_new_privileges else [],
        }
        if limits.memory_bytes is not None:
            # Swap included: MemorySwap is memory + swap, so equal values mean no swap.
            host_config["Memory"] = limits.memory_bytes
            host_config["MemorySwap"] = limits.memory_bytes
        if limits.nano_cpus is not None:
            host_config["NanoCpus"] = limits.nano_cpus
        if limits.pids is not None:
            host_config["PidsLimit"] = limits.pids
        if confinement.network is not None:
            host_config["NetworkMode"] = confinement.network
        config: dict[str, Any] = {
            "Image": spec.image,
            "Labels": dict(spec.labels),
            "Env": environment(spec),
            "ExposedPorts": {exposed: {}},
            "HostConfig": host_config,
        }
        if confinement.run_as is not None:
            config["User"] = f"{confinement.run_as}:{confinement.run_as}"
        try:
            async with self._call(f"create container {spec.name}"):
                container = await self._client().containers.create(config, name=spec.name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise image_missing(spec.image) from None
            if exc.status == 409:
                raise Exists(f"a container named {spec.name} already exists") from None
            raise engine_error(exc, f"create container {spec.name}") from None
        return str(container.id)

    async def start(
        self, container_id: str, progress: Callable[[StartStep], None] | None = None
    ) -> ContainerInfo:
        # An engine runs only images it has (``create`` said so): nothing to pull, no step.
        check_container_ref(container_id, NotFound)
        try:
            async with self._call(f"start container {container_id[:12]}"):
                await self._client().containers.container(container_id).start()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise NotFound(f"container {container_id[:12]} does not exist") from None
            raise engine_error(exc, f"start container {container_id[:12]}") from None
        info = await self.inspect(container_id)
        if info is None:
            raise Unable(f"container {container_id[:12]} disappeared as it started")
        return info

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        if not _CONTAINER_REF_RE.fullmatch(container_id):
            return None
        try:
            async with self._call(f"inspect container {container_id[:12]}"):
                data = await self._client().containers.container(container_id).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise engine_error(exc, f"inspect container {container_id[:12]}") from None
        return _info_from_inspect(data)

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            async with self._call("list containers"):
                summaries = await self._client().containers.list(all=True, filters=filters)
        except aiodocker.DockerError as exc:
            raise engine_error(exc, "list containers") from None
        infos: list[ContainerInfo] = []
        for container in summaries:
            summary = {key: container[key] for key in _SUMMARY_KEYS if key in container}
            try:
                infos.append(_info_from_summary(summary))
            except (KeyError, TypeError, ValueError, AttributeError):
                # One container the engine describes oddly must not hide all the others.
                log.warning("docker.container_skipped", id=str(summary.get("Id", ""))[:12])
        # The engine already filtered; this guards against a label value containing '='
        # being split differently by an older engine.
        return [
            info
            for info in infos
            if all(info.labels.get(key) == value for key, value in labels.items())
        ]

    async def remove(self, container_id: str) -> None:
        if not _CONTAINER_REF_RE.fullmatch(container_id):
            return
        container = self._client().containers.container(container_id)
        what = f"remove container {container_id[:12]}"
        stop_budget = aiohttp.ClientTimeout(total=self._stop_timeout + self._request_timeout)
        try:
            async with self._call(what, extra_seconds=self._stop_timeout):
                await container.stop(t=self._stop_timeout, timeout=stop_budget)
        except aiodocker.DockerError as exc:
            # 304: already stopped; 404: already gone. Anything else: delete with force
            # kills it anyway.
            if exc.status == 404:
                return
            if exc.status != 304:
                log.info("docker.stop_failed", container=container_id[:12], status=exc.status)
        try:
            async with self._call(what):
                await container.delete(
                    force=True, v=True, timeout=aiohttp.ClientTimeout(total=self._request_timeout)
                )
        except aiodocker.DockerError as exc:
            # 409: a removal is already in progress, which is what we want.
            if exc.status in (404, 409):
                return
            raise engine_error(exc, what) from None


def _check_network(name: str, data: Mapping[str, Any]) -> None:
    options = data.get("Options") or {}
    if data.get("Driver") != "bridge" or str(options.get(ICC_OPTION, "true")).lower() != "false":
        raise Unable(
            f"the network {name} lets containers reach each other; remove it (the service "
            f"creates it with {ICC_OPTION}=false) or name another in REMOTEAPP_CONTAINER_NETWORK"
        )


def check_container_ref(container_id: str, error: type[RemoteAppError]) -> None:
    if not isinstance(container_id, str) or not _CONTAINER_REF_RE.fullmatch(container_id):
        raise error(f"container {container_id!r:.40} does not exist")


def image_missing(image: str) -> NotFound:
    return NotFound(f"image {image} is not available on the Docker engine")


def engine_error(exc: aiodocker.DockerError, action: str) -> RemoteAppError:
    """An HTTP error of the engine that the operation has no special meaning for."""
    log.warning("docker.error", action=action, status=exc.status, message=exc.message)
    message = " ".join(str(exc.message).split())[:200]
    if exc.status == 400:
        return InvalidRequest(f"Docker engine refused to {action}: {message}")
    if exc.status == 404:
        return NotFound(f"Docker engine could not {action}: {message}")
    return Unable(f"Docker engine could not {action}: {message}")


def _connection_reason(exc: aiodocker.DockerError) -> str:
    # aiodocker raises inside its ``except`` without ``from``: the transport error is the
    # context. Its OS error says "connection refused" or "no such file" without the address.
    cause = exc.__context__
    os_error = getattr(cause, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"cannot connect ({os_error.strerror.lower()})"
    if cause is not None:
        return f"cannot connect ({cause.__class__.__name__})"
    return "cannot connect"


def _info_from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
    config = data.get("Config") or {}
    state = data.get("State") or {}
    ports = (data.get("NetworkSettings") or {}).get("Ports") or {}
    host_ip: str | None = None
    host_port: int | None = None
    bindings = ports.get(f"{CONTAINER_PORT}/tcp") or next(
        (value for value in ports.values() if value), None
    )
    if bindings:
        host_ip = bindings[0].get("HostIp") or None
        port_text = bindings[0].get("HostPort")
        host_port = int(port_text) if port_text else None
    return ContainerInfo(
        id=str(data["Id"]),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        running=bool(state.get("Running", False)),
        host_ip=host_ip,
        host_port=host_port,
        started_at=_engine_time(state.get("StartedAt")),
        oom_killed=bool(state.get("OOMKilled", False)),
    )


def _engine_time(text: object) -> float | None:
    """Seconds since the epoch from the engine's RFC 3339 time (nanoseconds, ``Z``); None
    for the zero time the engine gives a container that never started, or anything odd."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    # Python reads at most microseconds: the fraction is cut to six digits.
    match = _ENGINE_TIME_RE.fullmatch(text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{whole}{(fraction or '')[:7]}{zone}")
    except ValueError:
        return None
    return moment.timestamp()


def _info_from_summary(data: Mapping[str, Any]) -> ContainerInfo:
    names = data.get("Names") or []
    published = [
        port
        for port in data.get("Ports") or []
        if port.get("PublicPort") and port.get("Type", "tcp") == "tcp"
    ]
    preferred = [port for port in published if port.get("PrivatePort") == CONTAINER_PORT]
    binding = (preferred or published or [None])[0]
    return ContainerInfo(
        id=str(data["Id"]),
        name=str(names[0]).lstrip("/") if names else "",
        image=str(data.get("Image", "")),
        labels=dict(data.get("Labels") or {}),
        running=data.get("State") == "running",
        host_ip=(binding.get("IP") or None) if binding else None,
        host_port=int(binding["PublicPort"]) if binding else None,
        # A list has no start time: the creation is a start's first step, moments before.
        started_at=float(created) if isinstance(created := data.get("Created"), int) else None,
    )


def is_container_ref(ref: str) -> bool:
    """Whether ``ref`` could be an id or name the engine issues (safe in an API path)."""
    return isinstance(ref, str) and _CONTAINER_REF_RE.fullmatch(ref) is not None
