"""A scientist's day, end to end: hub login, the demo apps in Docker, sharing, sign-out."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from remoteappmanager.bootstrap import build_web_deps
from remoteappmanager.settings import Settings
from remoteappmanager.web.app import create_app
from tests.support.browser import namespaced_chromium, require_browser, screenshot
from tests.support.services import (
    REPO,
    ServiceMissing,
    chp_command,
    docker_socket_problem,
    free_port,
    skip_or_fail,
    wait_for_port,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = [
    pytest.mark.docker,
    pytest.mark.proxy,
    pytest.mark.hub,
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
]

PREFIX = "/services/remoteapp/"
PASSWORD = "demo-" + secrets.token_hex(8)
WEBAPP = "remoteapp-demo/webapp:latest"
VNCAPP = "remoteapp-demo/vncapp:latest"
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"
ROUTE_TIMEOUT = 30.0
# Long enough for a cold start of the desktop on a busy machine; the page shows a spinner.
START_TIMEOUT_MS = 60_000

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

    def url(self, path: str) -> str:
        return self.public_url + path


# ------------------------------------------------------------------------------ set-up
def _require_everything() -> None:
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
        [str(REPO / "images" / "build.sh"), "webapp", "vncapp"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        skip_or_fail(f"the demo images cannot be built: {built.stderr.strip()[-400:]}")


def _remoteappdb(database: Path, *args: str) -> str:
    command = [str(Path(sys.executable).with_name("remoteappdb")), str(database), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def _fill_database(database: Path) -> None:
    _remoteappdb(database, "init")
    for user in ("alice", "bob"):
        _remoteappdb(database, "user", "create", user)
    for image in (WEBAPP, VNCAPP):
        _remoteappdb(database, "app", "create", image)
    _remoteappdb(database, "app", "grant", WEBAPP, "alice", "--allow-home")
    _remoteappdb(database, "app", "grant", VNCAPP, "alice", "--allow-view")


@contextlib.contextmanager
def _running_hub(tmp: Path, env: dict[str, str], public_port: int) -> Iterator[None]:
    log_path = tmp / "jupyterhub.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "test_config.py")],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_for_port(public_port, timeout=60, process=process)
            except ServiceMissing as exc:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"JupyterHub did not start: {exc}\n{tail}") from None
            yield
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _wait_until_routed(url: str) -> None:
    deadline = time.monotonic() + ROUTE_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} was not routed within {ROUTE_TIMEOUT} s")


def _remove_realm_containers(realm: str) -> None:
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={REALM_LABEL}={realm}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60, check=False)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    _require_everything()
    tmp = tmp_path_factory.mktemp("journey")
    database = tmp / "remoteappmanager.db"
    _fill_database(database)

    public_port, proxy_api_port, hub_port, service_port = (free_port() for _ in range(4))
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
    )
    runner = web.AppRunner(create_app(build_web_deps(settings)), access_log=None)
    try:
        with _running_hub(tmp, env, public_port):
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", service_port).start()
            public_url = f"http://127.0.0.1:{public_port}"
            await _wait_until_routed(public_url + PREFIX + "health")
            async with namespaced_chromium([public_port]) as browser:
                yield Stack(public_url=public_url, realm=realm, browser=browser)
    finally:
        await runner.cleanup()
        _remove_realm_containers(realm)


# ------------------------------------------------------------------------------ helpers
async def _signed_in(stack: Stack, name: str) -> tuple[BrowserContext, Page]:
    context = await stack.browser.new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.public_url)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(stack.url(PREFIX))
    # Not signed in: our page sends the browser through the hub's login form.
    await page.wait_for_url(re.compile(r"/hub/login"))
    await page.fill("#username_input", name)
    await page.fill("#password_input", PASSWORD)
    await page.click("#login_submit")
    await page.wait_for_url(stack.url(PREFIX))
    return context, page


async def _entry(page: Page, name: str) -> str:
    """The id of the list entry showing application ``name``."""
    entry = page.locator("#applistentries .app-entry", has_text=name)
    await entry.wait_for()
    return f"#{await entry.get_attribute('id')}"


async def _wait_until_startable(page: Page) -> None:
    """After Quit: the settings come back at once, with a live "Start" once it has stopped."""
    await page.locator("#start-button:enabled", has_text=re.compile(r"^Start$")).wait_for()


async def _status(page: Page, entry: str) -> str:
    return (await page.locator(f"{entry} .status").text_content() or "").strip()


# ------------------------------------------------------------------------------ the journey
async def test_alice_runs_her_apps_shares_the_desktop_and_signs_out(stack: Stack) -> None:
    alice_context, alice = await _signed_in(stack, "alice")
    bob_context, bob = await _signed_in(stack, "bob")
    try:
        await alice.wait_for_selector("#loading-spinner", state="hidden")
        names = await alice.locator("#applistentries .app-name").all_text_contents()
        assert names == ["Demo desktop (xclock)", "Demo web app"]
        await screenshot(alice, "e2e-01-applications")

        # ---- the web application
        web_entry = await _entry(alice, "Demo web app")
        assert await _status(alice, web_entry) == "Stopped"
        await alice.click(web_entry)
        assert await alice.text_content("#start-button") == "Start"
        await alice.click("#start-button")
        shown = alice.frame_locator("#application")
        await shown.locator("#user").wait_for(timeout=START_TIMEOUT_MS)
        assert await shown.locator("#user").text_content() == "alice"
        assert await shown.locator("h1").text_content() == "Demo web app"
        assert await _status(alice, web_entry) == "Running"
        assert await alice.locator("#share-button").count() == 0
        await screenshot(alice, "e2e-02-webapp-running")
        web_path = await alice.get_attribute("#application", "src")
        assert web_path
        assert re.fullmatch(r"/user/alice/containers/[a-z0-9]+/", web_path)

        # Bob has the link but the grant does not allow viewing: refused, nothing shown.
        refused = await bob.goto(stack.url(web_path))
        assert refused is not None
        assert refused.status == 403
        assert await bob.locator("#url-id").count() == 0
        await screenshot(bob, "e2e-03-bob-refused")

        await alice.click("#quit-button")
        await alice.locator("dialog[open]").get_by_role("button", name="Ok").click()
        await _wait_until_startable(alice)
        assert await _status(alice, web_entry) == "Stopped"

        # ---- the desktop
        desktop_entry = await _entry(alice, "Demo desktop (xclock)")
        await alice.click(desktop_entry)
        assert await alice.locator("#resolution-select").count() == 1
        await alice.select_option("#resolution-select", "1280x800")
        await alice.click("#start-button")
        desktop = alice.frame_locator("#application")
        await desktop.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        await desktop.locator("#noVNC_container canvas").wait_for()
        assert await _status(alice, desktop_entry) == "Running"
        await screenshot(alice, "e2e-04-desktop-running")

        await alice.click("#share-button")
        shared = await alice.input_value("#shared-url")
        desktop_path = await alice.get_attribute("#application", "src")
        assert shared == stack.url(desktop_path or "")
        await screenshot(alice, "e2e-05-share")
        await alice.locator("dialog[open]").get_by_role("button", name="Close").click()

        # The state holds across reloads.
        await alice.reload()
        await alice.frame_locator("#application").locator("html.noVNC_connected").wait_for()
        assert await _status(alice, desktop_entry) == "Running"

        # Bob opens the share link: the policy allows viewing.
        allowed = await bob.goto(shared)
        assert allowed is not None
        assert allowed.ok
        await bob.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        await screenshot(bob, "e2e-06-bob-views-the-desktop")

        await alice.click("#quit-button")
        await alice.locator("dialog[open]").get_by_role("button", name="Ok").click()
        await _wait_until_startable(alice)
        assert await _status(alice, desktop_entry) == "Stopped"

        # ---- sign out
        await alice.click("#user-menu")
        await alice.click("#logout")
        await alice.wait_for_url(re.compile(r"/hub/"))
        await screenshot(alice, "e2e-07-signed-out")
        signed_out = await alice.goto(stack.url(PREFIX))
        assert signed_out is not None
        assert "/hub/login" in alice.url
    finally:
        await alice_context.close()
        await bob_context.close()
