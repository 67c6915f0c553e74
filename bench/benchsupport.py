"""What the benchmarks share: a real proxy, the test image, a Sessions stack, clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The benchmarks reuse the test suite's helpers (proxy start-up, image build).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import logging  # noqa: E402

import aiohttp  # noqa: E402
import structlog  # noqa: E402
from tests.support.services import Proxy, running_proxy  # noqa: E402
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm  # noqa: E402

from remoteappmanager.adapters.chp import ChpRouteTable  # noqa: E402
from remoteappmanager.adapters.docker import AiodockerRuntime  # noqa: E402
from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe  # noqa: E402
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths  # noqa: E402
from remoteappmanager.domain.models import Application, Grant, Policy, User  # noqa: E402
from remoteappmanager.domain.sessions import AccessMode  # noqa: E402
from remoteappmanager.services.reconcile import Reconciler  # noqa: E402
from remoteappmanager.services.sessions import Sessions  # noqa: E402

__all__ = [
    "WEB_IMAGE",
    "Proxy",
    "Stack",
    "ensure_session_images",
    "grant",
    "machine",
    "median",
    "proxy",
    "remove_realm",
    "stack",
    "wait_until_served",
]


# Per-session log lines would be timed too; benchmarks only want warnings.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@dataclass
class Stack:
    realm: str
    runtime: AiodockerRuntime
    routes: ChpRouteTable
    probe: AiohttpReadinessProbe
    sessions: Sessions
    reconciler: Reconciler
    http: aiohttp.ClientSession


@contextlib.contextmanager
def proxy() -> Iterator[Proxy]:
    with running_proxy() as running:
        yield running


@contextlib.asynccontextmanager
async def stack(
    chp: Proxy, *, network_timeout: float = 30, realm: str | None = None
) -> AsyncIterator[Stack]:
    """A Sessions service in direct mode on a realm of its own, removed afterwards."""
    realm = realm or f"bench-{secrets.token_hex(4)}"
    runtime = AiodockerRuntime()
    routes = ChpRouteTable(chp.api_url, chp.token)
    probe = AiohttpReadinessProbe()
    workspace_root = Path(f"/tmp/remoteapp-bench-{realm}")
    sessions = Sessions(
        runtime,
        routes,
        DirectoryWorkspaces(workspace_root, uid=os.getuid(), gid=os.getgid()),
        LocalHostPaths(),
        probe,
        realm=realm,
        access=AccessMode.DIRECT,
        network_timeout=network_timeout,
    )
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        yield Stack(
            realm, runtime, routes, probe, sessions, Reconciler(runtime, routes, sessions), http
        )
    finally:
        removed = await remove_realm(realm)
        if removed:
            print(f"  (clean-up removed {removed} container(s) of realm {realm})")
        await http.close()
        await probe.close()
        await routes.close()
        await runtime.close()


def grant(user: str, image: str = WEB_IMAGE) -> Grant:
    return Grant(secrets.token_hex(16), User(1, user), Application(1, image), Policy())


async def wait_until_served(http: aiohttp.ClientSession, url: str, within: float = 30) -> None:
    """Poll ``url`` every 5 ms until it answers 200 (the end of a measured launch)."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url, allow_redirects=False) as response:
                await response.read()
                if response.status == 200:
                    return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{url} did not answer 200 within {within} s")


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cores = os.cpu_count()
    return f"{platform.node()}: {cores} cores, Python {platform.python_version()}"
