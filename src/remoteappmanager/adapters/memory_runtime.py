"""In-memory fakes of the container runtime and the route table, for tests and demos."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.containers import (
    RUNINFO_NAMESPACE,
    ContainerInfo,
    ContainerSpec,
    Route,
)
from remoteappmanager.domain.errors import Exists, InvalidRequest, NotFound, Unavailable
from remoteappmanager.domain.labels import ImageMetadata, parse_image_labels
from remoteappmanager.domain.models import validate_image_name
from remoteappmanager.domain.routing import check_route_path
from remoteappmanager.domain.sessions import StartStep

DEFAULT_IMAGE_CACHE_TTL = 60.0
MAX_CACHED_IMAGES = 1024  # as the engine's adapter keeps
FIRST_HOST_PORT = 49153


@dataclass(frozen=True, slots=True)
class _StoredContainer:
    info: ContainerInfo
    spec: ContainerSpec


class InMemoryRuntime:
    """A ``ContainerRuntime`` that keeps images and containers in dictionaries.

    Test controls: ``add_image`` / ``remove_image`` register what the "engine" holds,
    ``available = False`` makes every call raise ``Unavailable`` as a stopped engine would,
    ``add_image(..., exits_on_start=True)`` gives an image whose containers die at once,
    ``kill`` makes a container exit (or vanish, or die of memory) behind the service's back,
    containers start at ``wall_clock()``, and ``spec_of``
    shows what a container was created with. Image metadata is cached for
    ``image_cache_ttl`` seconds like the real adapter, so tests see the same staleness.
    Several fakes may share one ``images`` mapping (image → labels), as several clients of
    one engine do.
    """

    def __init__(
        self,
        *,
        images: MutableMapping[str, Mapping[str, str]] | None = None,
        image_cache_ttl: float = DEFAULT_IMAGE_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.available = True
        self.wall_clock = wall_clock
        self._images: MutableMapping[str, Mapping[str, str]] = {} if images is None else images
        self._containers: dict[str, _StoredContainer] = {}
        # Indexes, as the engine has: by name, and by run-info label (key, value) -> ids in
        # creation order, so that a filtered list costs what it finds, not every container.
        self._names: dict[str, str] = {}
        self._labelled: dict[tuple[str, str], dict[str, None]] = {}
        self._crashing: set[str] = set()
        self._pulls: dict[str, asyncio.Event] = {}
        self._ports = itertools.count(FIRST_HOST_PORT)
        self._image_cache: TtlCache[str, ImageMetadata] = TtlCache(
            ttl=image_cache_ttl, maxsize=MAX_CACHED_IMAGES, clock=clock
        )
        self.closed = False

    # ----------------------------------------------------------------- test controls
    def add_image(
        self, image: str, labels: Mapping[str, str] | None = None, *, exits_on_start: bool = False
    ) -> None:
        """Register an image; with ``exits_on_start`` its containers exit as soon as started."""
        self._images[image] = dict(labels or {})
        if exits_on_start:
            self._crashing.add(image)
        else:
            self._crashing.discard(image)

    def pull_on_start(self, image: str) -> asyncio.Event:
        """Starts of ``image`` are "pulling the image", as a swarm task is while it is
        ``preparing`` on a node without the image, until the returned event is set."""
        pulled = self._pulls[image] = asyncio.Event()
        return pulled

    def remove_image(self, image: str) -> None:
        self._images.pop(image, None)
        self._crashing.discard(image)

    def kill(self, container_id: str, *, remove: bool = False, oom: bool = False) -> None:
        """The container exits on its own (``remove``: and disappears, like ``--rm``;
        ``oom``: killed by the kernel for going over its memory limit)."""
        stored = self._containers.get(container_id)
        if stored is None:
            raise KeyError(container_id)
        if remove:
            self._forget(container_id)
            return
        self._containers[container_id] = replace(
            stored,
            info=replace(stored.info, running=False, host_ip=None, host_port=None, oom_killed=oom),
        )

    def spec_of(self, container_id: str) -> ContainerSpec:
        return self._containers[container_id].spec

    @property
    def container_ids(self) -> frozenset[str]:
        return frozenset(self._containers)

    # ----------------------------------------------------------------- the port
    def _check(self) -> None:
        if not self.available:
            raise Unavailable("Docker engine unavailable: the engine does not answer")

    async def inspect_image(self, image: str) -> ImageMetadata:
        # As the engine: a reference it cannot parse is refused before anything is looked up.
        validate_image_name(image)
        self._check()
        return await self._image_cache.get(image, lambda: self._read_metadata(image))

    async def _read_metadata(self, image: str) -> ImageMetadata:
        labels = self._images.get(image)
        if labels is None:
            raise NotFound(f"image {image} is not available on the Docker engine")
        return parse_image_labels(image, labels)

    async def create(self, spec: ContainerSpec) -> str:
        self._check()
        if spec.placement:
            raise InvalidRequest(
                "the grant's placement constraints need a Docker Swarm (REMOTEAPP_ENGINE=swarm)"
            )
        if spec.image not in self._images:
            raise NotFound(f"image {spec.image} is not available on the Docker engine")
        if spec.name in self._names:
            raise Exists(f"a container named {spec.name} already exists")
        container_id = secrets.token_hex(32)
        info = ContainerInfo(
            id=container_id,
            name=spec.name,
            image=spec.image,
            labels={**self._images[spec.image], **spec.labels},
            running=False,
        )
        self._containers[container_id] = _StoredContainer(info=info, spec=spec)
        self._names[spec.name] = container_id
        for key, value in info.labels.items():
            if key.startswith(RUNINFO_NAMESPACE):
                self._labelled.setdefault((key, value), {})[container_id] = None
        return container_id

    def _forget(self, container_id: str) -> None:
        stored = self._containers.pop(container_id, None)
        if stored is None:
            return
        self._names.pop(stored.info.name, None)
        for key, value in stored.info.labels.items():
            ids = self._labelled.get((key, value))
            if ids is not None:
                ids.pop(container_id, None)
                if not ids:
                    del self._labelled[(key, value)]

    async def start(
        self, container_id: str, progress: Callable[[StartStep], None] | None = None
    ) -> ContainerInfo:
        self._check()
        stored = self._containers.get(container_id)
        if stored is None:
            raise NotFound(f"container {container_id[:12]} does not exist")
        pulled = self._pulls.get(stored.spec.image)
        if pulled is not None and not stored.info.running:
            if progress is not None:
                progress(StartStep.PULLING)
            await pulled.wait()
            if progress is not None:
                progress(StartStep.STARTING)
            stored = self._containers.get(container_id)
            if stored is None:
                raise NotFound(f"container {container_id[:12]} does not exist")
        if stored.spec.image in self._crashing:
            return stored.info
        if not stored.info.running:
            stored = replace(
                stored,
                info=replace(
                    stored.info,
                    running=True,
                    host_ip=stored.spec.publish_ip,
                    host_port=next(self._ports),
                    started_at=self.wall_clock(),
                ),
            )
            self._containers[container_id] = stored
        return stored.info

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        self._check()
        stored = self._containers.get(container_id)
        if stored is None:
            # Docker also resolves a container by its name.
            by_name = self._names.get(container_id)
            stored = self._containers.get(by_name) if by_name is not None else None
        return stored.info if stored is not None else None

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        self._check()
        candidates: Collection[str] = self._containers
        for key, value in labels.items():
            if key.startswith(RUNINFO_NAMESPACE):
                indexed = self._labelled.get((key, value), {})
                if len(indexed) < len(candidates):
                    candidates = indexed
        found = [self._containers[container_id].info for container_id in candidates]
        return [
            info
            for info in found
            if all(info.labels.get(key) == value for key, value in labels.items())
        ]

    async def remove(self, container_id: str) -> None:
        self._check()
        if container_id not in self._containers:
            container_id = self._names.get(container_id, "")
        self._forget(container_id)

    async def close(self) -> None:
        self.closed = True


class InMemoryRouteTable:
    """A ``RouteTable`` held in a dictionary.

    Test controls: ``available = False`` makes every call raise ``Unavailable`` like a
    stopped proxy, ``lose_all()`` forgets every route as a restarted proxy does,
    ``add_foreign`` puts a route that is not ours (JupyterHub's, say) in the table, and
    ``all_paths`` shows every path, ours or not.
    """

    def __init__(self) -> None:
        self.available = True
        self._routes: dict[str, Route] = {}
        self._foreign: dict[str, str] = {}
        self.closed = False

    # ----------------------------------------------------------------- test controls
    def lose_all(self) -> None:
        self._routes.clear()
        self._foreign.clear()

    def add_foreign(self, path: str, target: str) -> None:
        self._routes.pop(path, None)
        self._foreign[path] = target

    @property
    def all_paths(self) -> frozenset[str]:
        return frozenset(self._routes) | frozenset(self._foreign)

    # ----------------------------------------------------------------- the port
    def _check(self) -> None:
        if not self.available:
            raise Unavailable("proxy unavailable: the proxy does not answer")

    async def add(self, route: Route) -> None:
        path = check_route_path(route.path)
        self._check()
        self._foreign.pop(path, None)
        self._routes[path] = replace(route, path=path, extra=dict(route.extra))

    async def remove(self, path: str) -> None:
        path = check_route_path(path)
        self._check()
        self._routes.pop(path, None)

    async def list(self) -> Mapping[str, Route]:
        self._check()
        return dict(self._routes)

    async def close(self) -> None:
        self.closed = True
