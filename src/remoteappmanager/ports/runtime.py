"""The container runtime port: what the services need from a Docker engine.

Contract (checked against ``InMemoryRuntime`` and ``AiodockerRuntime`` by one contract test):
- ``inspect_image`` returns the image's metadata (from its labels), cached; a missing image
  raises ``NotFound``.
- ``create`` creates (does not start) a container from a ``ContainerSpec`` and returns its id;
  a missing image raises ``NotFound``, a name clash ``Exists``.
- ``start`` starts it and returns its state, including the published host port; a container
  that exits at once is reported with ``running=False`` and no port, not as an error. While
  it waits for the engine it may tell ``progress`` which step it is at: ``PULLING`` while the
  image is being made ready where the container runs, then ``STARTING`` again (an engine that
  never pulls on start reports nothing).
- ``list`` returns the containers carrying all the given labels (any state).
- ``inspect`` returns one container or ``None`` when it is gone.
- ``remove`` stops and removes a container; removing one that is gone is not an error.
- Every method raises ``Unavailable`` when the engine cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from remoteappmanager.domain.containers import ContainerInfo, ContainerSpec
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.sessions import StartStep

StartProgress = Callable[[StartStep], None]


class ContainerRuntime(Protocol):
    async def inspect_image(self, image: str) -> ImageMetadata: ...

    async def create(self, spec: ContainerSpec) -> str: ...

    async def start(
        self, container_id: str, progress: StartProgress | None = None
    ) -> ContainerInfo: ...

    async def inspect(self, container_id: str) -> ContainerInfo | None: ...

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]: ...

    async def remove(self, container_id: str) -> None: ...

    async def close(self) -> None: ...
