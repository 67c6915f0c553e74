"""The service as production wires it, with in-memory stand-ins for the hub, proxy and engine."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from remoteappmanager import bootstrap  # noqa: E402
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider  # noqa: E402
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe  # noqa: E402
from remoteappmanager.adapters.memory_runtime import (  # noqa: E402
    InMemoryRouteTable,
    InMemoryRuntime,
)
from remoteappmanager.adapters.memory_workspaces import (  # noqa: E402
    InMemoryHostPaths,
    InMemoryWorkspaces,
)
from remoteappmanager.settings import Settings  # noqa: E402
from remoteappmanager.web.admission import LISTEN_BACKLOG  # noqa: E402
from remoteappmanager.web.app import create_app  # noqa: E402
from remoteappmanager.web.deps import WebDeps  # noqa: E402


@asynccontextmanager
async def serving(
    settings: Settings, identity: InMemoryIdentityProvider, runtime: InMemoryRuntime, port: int
) -> AsyncIterator[WebDeps]:
    """``bootstrap.build`` over the stand-ins, served on 127.0.0.1:``port``."""
    deps = bootstrap.build(
        settings,
        identity=identity,
        runtime=runtime,
        routes=InMemoryRouteTable(),
        probe=InMemoryReadinessProbe(),
        workspaces=InMemoryWorkspaces(),
        host_paths=InMemoryHostPaths(),
    )
    runner = web.AppRunner(create_app(deps), access_log=None)
    await runner.setup()
    try:
        # As ``serve`` listens: room for every simulated user to connect at once.
        await web.TCPSite(runner, "127.0.0.1", port, backlog=LISTEN_BACKLOG).start()
        yield deps
    finally:
        await runner.cleanup()
