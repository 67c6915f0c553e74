"""A bounded schemathesis run against the service's own OpenAPI document, in every role.

The service is the production wiring (``bootstrap.build``) on a real SQLite file,
served on 127.0.0.1; the engine, proxy and hub are the in-memory stand-ins (nothing the
document describes depends on them). schemathesis runs with every check (``--checks all``:
no server error, answers and headers as documented, no undocumented status, schema-valid
requests accepted and invalid ones refused...) as a user, as an admin and anonymously. It is
derandomised and bounded so that the three runs take well under three minutes on two cores.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app

PREFIX = "/services/remoteapp/"
NS = "eu.simphony-project.docker."
DESKTOP = "remoteapp-test/desktop:latest"
WEBAPP = "remoteapp-test/web:latest"
DESKTOP_LABELS = {
    NS + "ui_name": "Desktop",
    NS + "type": "vncapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}
# Per operation and phase: ~750 requests per role.
MAX_EXAMPLES = 20
SEED = 20261204
BUDGET_S = 120.0
REPO = Path(__file__).resolve().parents[2]
# The coverage phase derives boundary cases from each pattern; for the bodies whose patterns
# list every printable character or bound image names with look-aheads that costs minutes,
# so those operations get the examples and fuzzing phases (with fast generators of valid
# values, tests/support/schemathesis_hooks.py) and their own tests of the boundaries.
CONFIG = """
[[operations]]
include-operation-id = [
    "admin_create_application",
    "admin_create_grant",
    "admin_create_user",
    "create_share",
    "change_control",
    "search_directory",
]
phases.coverage.enabled = false
"""


async def _serve(tmp_path: Path, aiohttp_server: Any) -> tuple[str, dict[str, str]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        for name in ("alice", "root"):
            await catalogue.create_user(uow, name)
        for image in (DESKTOP, WEBAPP):
            await catalogue.create_application(uow, image)
        await catalogue.grant_access(uow, DESKTOP, "alice", Policy(allow_startup_data=True))
        await catalogue.grant_access(uow, WEBAPP, "alice", Policy())
    runtime = InMemoryRuntime()
    runtime.add_image(DESKTOP, DESKTOP_LABELS)
    runtime.add_image(WEBAPP, {NS + "ui_name": "Web", NS + "type": "webapp"})
    hub = InMemoryIdentityProvider()
    hub.add_user("alice")
    hub.add_user("root", admin=True)
    settings = Settings(
        database_url=database_url,
        configproxy_auth_token="proxy-token-" + "0" * 32,
        jupyterhub_api_token="service-token-" + "0" * 32,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_base_url="/",
        gate_url="http://127.0.0.1:0",
        workspace_root=tmp_path / "workspaces",
        network_timeout=2,
    )
    deps = bootstrap.build(
        settings,
        identity=hub,
        runtime=runtime,
        routes=InMemoryRouteTable(),
        probe=InMemoryReadinessProbe(),
        workspaces=InMemoryWorkspaces(),
        host_paths=InMemoryHostPaths({"/data"}),
    )
    server = await aiohttp_server(create_app(deps), host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    tokens = {"user": hub.issue_token("alice"), "admin": hub.issue_token("root")}
    return base, tokens


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed (the test extra provides it)")
    return [found]


@pytest.mark.parametrize("role", ["user", "admin", "anonymous"])
async def test_the_api_keeps_every_promise_of_its_openapi_document(
    role: str, tmp_path: Path, aiohttp_server: Any
) -> None:
    base, tokens = await _serve(tmp_path, aiohttp_server)
    headers = [] if role == "anonymous" else ["-H", f"Authorization: token {tokens[role]}"]
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *_schemathesis(),
        "run",
        f"{base}{PREFIX}api/openapi.json",
        "--url",
        base,
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "10",
        *headers,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
            "COLUMNS": "200",
        },
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=BUDGET_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the {role} run took longer than {BUDGET_S:.0f} s")
    text = output.decode(errors="replace")
    elapsed = time.monotonic() - started
    assert process.returncode == 0, f"{role} run ({elapsed:.0f} s):\n{text[-20000:]}"
    print(f"{role}: {elapsed:.1f} s\n{text[-1500:]}")
