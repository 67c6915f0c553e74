"""The whole stack for end-to-end tests: JupyterHub, the proxy, our service, Docker, Chromium."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from remoteappmanager.bootstrap import build
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.browser import namespaced_chromium, require_browser
from tests.support.hub import (
    HubPorts,
    admin_password,
    hub_environment,
    require_hub,
    running_hub,
    wait_until_routed,
    write_hub_config,
)
from tests.support.services import (
    REPO,
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


@dataclass
class Stack:
    public_url: str
    realm: str
    browser: Browser
    database: Path
    hub_admins: Sequence[str] = ()

    def url(self, path: str) -> str:
        return self.public_url + path


def stack_marks(*, timeout: int) -> list[pytest.MarkDecorator]:
    """The marks of a test module on ``running_stack``: the services it needs, one event loop
    for the module (the stack is a module fixture), and the module's time limit."""
    return [
        pytest.mark.docker,
        pytest.mark.proxy,
        pytest.mark.hub,
        pytest.mark.browser,
        pytest.mark.asyncio(loop_scope="module"),
        pytest.mark.timeout(timeout),
    ]


def require_everything(images: Sequence[str] = ("webapp", "vncapp")) -> None:
    """Skip (locally) or fail (CI) unless Docker, the hub, the proxy and Chromium are there;
    build the demo ``images`` (from the repository's ``images/``, never pulled)."""
    problem = docker_socket_problem()
    if problem:
        skip_or_fail(problem)
    require_hub()
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
    tmp: Path,
    fill: Callable[[Path], None],
    *,
    hub_admins: Sequence[str] = (),
    public_host: str = "127.0.0.1",
    settings: Mapping[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """Everything running, the catalogue made by ``fill(database)``; ``hub_admins`` are hub
    admins (and so ours). Every container of the stack's realm is removed at the end.

    The browser reaches the proxy as ``public_host`` (a ``*.localhost`` name, say: Chromium
    resolves those to loopback itself); ``settings`` adds to the service's settings, with
    ``{port}`` in a string value standing for the proxy's public port.

    JupyterHub (with the repository's ``config/jupyterhub_config.py``) starts the proxy; our
    service runs in the test's event loop as an externally managed hub service; Chromium runs
    in its own network namespace. Everybody signs in with the one demo ``PASSWORD``, the hub
    admins with ``admin_password(PASSWORD)``.
    """
    database = tmp / "remoteappmanager.db"
    fill(database)
    # The only host folder grants may mount (see Stack.shared).
    (tmp / "shared").mkdir(exist_ok=True)

    ports, gate_port = HubPorts.free(), free_port()
    service_token, proxy_token = secrets.token_hex(32), secrets.token_hex(32)
    realm = "e2e-" + secrets.token_hex(4)
    write_hub_config(tmp)
    env = hub_environment(
        tmp,
        ports,
        PASSWORD,
        REMOTEAPP_HUB_ADMIN_USERS=",".join(hub_admins),
        REMOTEAPP_SERVICE_API_TOKEN=service_token,
        CONFIGPROXY_AUTH_TOKEN=proxy_token,
    )
    extra = {
        name: value.replace("{port}", str(ports.public)) if isinstance(value, str) else value
        for name, value in (settings or {}).items()
    }
    # Our service, externally managed: in this process, on the port the hub routes to.
    service_settings = Settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        realm=realm,
        configproxy_api_url=f"http://127.0.0.1:{ports.proxy_api}",
        configproxy_auth_token=proxy_token,
        workspace_root=tmp / "workspaces",
        volume_roots=(str(tmp / "shared"),),
        jupyterhub_api_url=f"http://127.0.0.1:{ports.hub}/hub/api",
        jupyterhub_api_token=service_token,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{ports.service}",
        jupyterhub_base_url="/",
        # Its default, the port after the service's, may be taken by one of the above.
        gate_url=f"http://127.0.0.1:{gate_port}",
        **extra,
    )
    runner = web.AppRunner(create_app(build(service_settings)), access_log=None)
    try:
        with running_hub(tmp, env, ports.public):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", ports.service).start()
            await wait_until_routed(ports.public_url + PREFIX + "health")
            public_url = f"http://{public_host}:{ports.public}"
            async with namespaced_chromium([ports.public]) as browser:
                yield Stack(
                    public_url=public_url,
                    realm=realm,
                    browser=browser,
                    database=database,
                    hub_admins=hub_admins,
                )
    finally:
        await runner.cleanup()
        remove_realm_containers(realm)


async def signed_in(
    stack: Stack, name: str, path: str = PREFIX, browser: Browser | None = None
) -> tuple[BrowserContext, Page]:
    """A new browser context where ``name`` signed in through the hub, showing ``path``
    (in ``browser``, else the stack's own)."""
    context = await (browser or stack.browser).new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.public_url)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(stack.url(path))
    # Not signed in: our page sends the browser through the hub's login form.
    await page.wait_for_url(re.compile(r"/hub/login"))
    await page.fill("#username_input", name)
    password = admin_password(PASSWORD) if name in stack.hub_admins else PASSWORD
    await page.fill("#password_input", password)
    await page.click("#login_submit")
    await page.wait_for_url(stack.url(path))
    return context, page
