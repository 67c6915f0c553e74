"""The route table port: the proxy routes that make containers reachable.

Contract (checked against ``InMemoryRouteTable`` and ``ChpRouteTable`` by one contract test):
- Paths are container paths percent-encoded as in URLs (``naming.urlpath``:
  ``/user/<escaped name>/containers/<url_id>``); any other path raises ``InvalidRequest``
  without touching the proxy. ``list`` keys are the same canonical encoded paths.
- Only routes tagged as ours are listed or removed; routes of JupyterHub or anyone else are
  invisible and never touched (removing such a path is a no-op).
- ``add`` is idempotent (the same path again replaces the target).
- ``remove`` of a route that is gone is not an error.
- Every method raises ``Unavailable`` when the proxy cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from remoteappmanager.domain.containers import Route


class RouteTable(Protocol):
    async def add(self, route: Route) -> None: ...

    async def remove(self, path: str) -> None: ...

    async def list(self) -> Mapping[str, Route]: ...

    async def close(self) -> None: ...
