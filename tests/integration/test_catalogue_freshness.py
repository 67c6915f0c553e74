"""Catalogue changes made by another process show in the running service within 2 s.

The service is the production wiring (``bootstrap.build``, its real caches and TTLs)
on a real SQLite file and a real PostgreSQL database; the engine, proxy and hub are the
in-memory stand-ins, which play no part in what is read from the catalogue. The writer is
``remoteappdb`` in a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.database import cli_url

PREFIX = "/services/remoteapp/"
APPLICATIONS = PREFIX + "api/v1/applications/"
IMAGE = "remoteapp-test/fresh:1"
OTHER_IMAGE = "remoteapp-test/other:1"
# The promise of docs/administration.md.
BOUND_S = 2.0


async def _remoteappdb(database: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from remoteappmanager.cli.remoteappdb import main; main()",
        database,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


async def _listed(client: Any, token: str) -> set[str]:
    async with client.get(APPLICATIONS, headers={"Authorization": f"token {token}"}) as answer:
        assert answer.status == 200, await answer.text()
        return set((await answer.json())["identifiers"])


async def _busy(client: Any, token: str) -> None:
    # Users keep listing while the change is made: the service's caches are warm and its
    # last look at the catalogue's version is recent, the case where a change shows latest.
    while True:
        await _listed(client, token)
        await asyncio.sleep(0.05)


async def _write(client: Any, token: str, database: str, *args: str) -> str:
    busy = asyncio.ensure_future(_busy(client, token))
    try:
        return await _remoteappdb(database, *args)
    finally:
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy


async def _seen_after(client: Any, token: str, wanted: set[str]) -> float:
    """Seconds until the listing is ``wanted`` (polled every 50 ms), failing past the bound."""
    started = time.monotonic()
    while (listed := await _listed(client, token)) != wanted:
        waited = time.monotonic() - started
        assert waited < BOUND_S, f"still {listed} after {waited:.2f} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_remoteappdb_changes_show_in_the_running_service_within_two_seconds(
    empty_database_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    await bootstrap.upgrade_database(empty_database_url)
    async with bootstrap.build_database(empty_database_url) as database:
        uow = database.unit_of_work
        await catalogue.create_user(uow, "alice")
        await catalogue.create_application(uow, IMAGE)
        first = (await catalogue.grant_access(uow, IMAGE, "alice", Policy())).mapping_id

    runtime = InMemoryRuntime()
    runtime.add_image(IMAGE)
    runtime.add_image(OTHER_IMAGE)
    hub = InMemoryIdentityProvider()
    hub.add_user("alice")
    settings = Settings(
        database_url=empty_database_url,
        configproxy_auth_token="proxy-token-" + "0" * 32,
        jupyterhub_api_token="service-token-" + "0" * 32,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_base_url="/",
        gate_url="http://127.0.0.1:0",
        workspace_root=tmp_path / "workspaces",
    )
    deps = bootstrap.build(
        settings,
        identity=hub,
        runtime=runtime,
        routes=InMemoryRouteTable(),
        probe=InMemoryReadinessProbe(),
        workspaces=InMemoryWorkspaces(),
        host_paths=InMemoryHostPaths(),
    )
    client = await aiohttp_client(create_app(deps))
    token = hub.issue_token("alice")
    cli_database = cli_url(empty_database_url)

    # The service has read (and cached) alice's grants.
    assert await _listed(client, token) == {first}

    second = await _write(
        client, token, cli_database, "app", "grant", IMAGE, "alice", "--allow-home"
    )
    granted_in = await _seen_after(client, token, {first, second})

    await _write(client, token, cli_database, "app", "create", OTHER_IMAGE, "--no-verify")
    third = await _write(client, token, cli_database, "app", "grant", OTHER_IMAGE, "alice")
    await _seen_after(client, token, {first, second, third})

    await _write(client, token, cli_database, "app", "revoke", IMAGE, "alice", "--revoke-all")
    revoked_in = await _seen_after(client, token, {third})

    await _write(client, token, cli_database, "user", "remove", "alice")
    await _seen_after(client, token, set())
    print(f"grant seen after {granted_in:.2f} s, revocation after {revoked_in:.2f} s")
