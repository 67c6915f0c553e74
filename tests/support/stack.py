"""The whole stack for end-to-end tests: JupyterHub, the proxy, our service, Docker, Chromium."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from remoteappmanager.bootstrap import build_web_deps
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.browser import namespaced_chromium, require_browser
from tests.support.hub import running_hub, wait_until_routed
from tests.support.services import (
    REPO,
    ServiceMissing,
    chp_command,
    docker_socket_problem,
    free_port,
    skip_or_fail,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

PREFIX = "/services/remoteapp/"
PASSWORD = "demo-" + secrets.token_hex(8)
WEBAPP = "remoteapp-demo/webapp:latest"
VNCAPP = "remoteapp-demo/vncapp:latest"
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"

_HUB_CONFIG = """
c = get_config()  # noqa
load_subconfig({repo_config!r})  # noqa
c.JupyterHub.log_level = "WARN"
"""


@dataclass
class Stack:
    public_url: str
    realm: str
    browser: Browser
    database: Path

    def url(self, path: str) -> str:
        return self.public_url + path


def require_everything(images: Sequence[str] = ("webapp", "vncapp")) -> None:
    """Skip (locally) or fail (CI) unless Docker, the hub, the proxy and Chromium are there;
    build the demo ``images`` (from the repository's ``images/``, never pulled)."""
    problem = docker_socket_problem()
    if problem:
        skip_or_fail(problem)
    if importlib.util.find_spec("jupyterhub") is None:
        skip_or_fail("JupyterHub is not installed (pip install jupyterhub)")
    try:
        chp_command()
    except ServiceMissing as exc:
        skip_or_fail(f"configurable-http-proxy: {exc}")
    require_browser()
    built = subprocess.run(
        [str(REPO / "images" / "build.sh"), *images],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        skip_or_fail(f"the demo images cannot be built: {built.stderr.strip()[-400:]}")


def remoteappdb(database: Path, *args: str) -> str:
    """Run the ``remoteappdb`` command on ``database``; its output."""
    command = [str(Path(sys.executable).with_name("remoteappdb")), str(database), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def remove_realm_containers(realm: str) -> None:
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={REALM_LABEL}={realm}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60, check=False)


@contextlib.asynccontextmanager
async def running_stack(
    tmp: Path, fill: Callable[[Path], None], *, hub_admins: Sequence[str] = ()
) -> AsyncIterator[Stack]:
    """Everything running, the catalogue made by ``fill(database)``; ``hub_admins`` are hub
    admins (and so ours). Every container of the stack's realm is removed at the end.

    JupyterHub (with the repository's ``config/jupyterhub_config.py``) starts the proxy; our
    service runs in the test's event loop as an externally managed hub service; Chromium runs
    in its own network namespace. Everybody signs in with the one demo ``PASSWORD``.
    """
    database = tmp / "remoteappmanager.db"
    fill(database)

    public_port, proxy_api_port, hub_port, service_port, gate_port = (free_port() for _ in range(5))
    service_token, proxy_token = secrets.token_hex(32), secrets.token_hex(32)
    realm = "e2e-" + secrets.token_hex(4)
    (tmp / "test_config.py").write_text(
        _HUB_CONFIG.format(repo_config=str(REPO / "config" / "jupyterhub_config.py"))
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_"))
    }
    env.update(
        REMOTEAPP_DEMO_PASSWORD=PASSWORD,
        REMOTEAPP_HUB_PORT=str(public_port),
        REMOTEAPP_HUB_INTERNAL_PORT=str(hub_port),
        REMOTEAPP_HUB_DATA_DIR=str(tmp),
        REMOTEAPP_HUB_ADMIN_USERS=",".join(hub_admins),
        REMOTEAPP_SERVICE_PORT=str(service_port),
        REMOTEAPP_SERVICE_API_TOKEN=service_token,
        CONFIGPROXY_API_URL=f"http://127.0.0.1:{proxy_api_port}",
        CONFIGPROXY_AUTH_TOKEN=proxy_token,
    )
    # Our service, externally managed: in this process, on the port the hub routes to.
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        realm=realm,
        configproxy_api_url=f"http://127.0.0.1:{proxy_api_port}",
        configproxy_auth_token=proxy_token,
        workspace_root=tmp / "workspaces",
        jupyterhub_api_url=f"http://127.0.0.1:{hub_port}/hub/api",
        jupyterhub_api_token=service_token,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{service_port}",
        jupyterhub_base_url="/",
        # Its default, the port after the service's, may be taken by one of the above.
        gate_url=f"http://127.0.0.1:{gate_port}",
    )
    runner = web.AppRunner(create_app(build_web_deps(settings)), access_log=None)
    try:
        with running_hub(tmp, env, public_port):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", service_port).start()
            public_url = f"http://127.0.0.1:{public_port}"
            await wait_until_routed(public_url + PREFIX + "health")
            async with namespaced_chromium([public_port]) as browser:
                yield Stack(public_url=public_url, realm=realm, browser=browser, database=database)
    finally:
        await runner.cleanup()
        remove_realm_containers(realm)


async def signed_in(stack: Stack, name: str, path: str = PREFIX) -> tuple[BrowserContext, Page]:
    """A new browser context where ``name`` signed in through the hub, showing ``path``."""
    context = await stack.browser.new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.public_url)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(stack.url(path))
    # Not signed in: our page sends the browser through the hub's login form.
    await page.wait_for_url(re.compile(r"/hub/login"))
    await page.fill("#username_input", name)
    await page.fill("#password_input", PASSWORD)
    await page.click("#login_submit")
    await page.wait_for_url(stack.url(path))
    return context, page
