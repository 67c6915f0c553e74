"""Docker Swarm end to end: the engine made a single-node swarm, the hub, the proxy and the
service in one container on an attachable overlay network (the only place from which the
applications' tasks can be reached), a user signed in in Chromium who starts the demo
desktop and sees its noVNC canvas through the proxy and the gate, then stops it, and the
swarm service is gone. A grant whose placement no node meets fails at once with the swarm's
reason.

The service container runs this checkout's code (mounted, on ``PYTHONPATH``) in the service
image that ``tests/e2e/test_compose.py`` builds (built here if missing). Its proxy is
published on 127.0.0.1 only; nothing else leaves the overlay. The swarm, the overlay and
every container and service are removed whatever happens (``docker_gwbridge`` too).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.support.browser import namespaced_chromium, require_browser, screenshot
from tests.support.services import REPO, free_port, skip_or_fail

pytestmark = [
    pytest.mark.docker,
    pytest.mark.swarm,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

SERVICE_IMAGE = "remoteapp-e2e/service:latest"
BASE_IMAGE = "remoteapp-base/debian:bookworm"
VNCAPP = "remoteapp-demo/vncapp:latest"
WEBAPP = "remoteapp-demo/webapp:latest"
PREFIX = "/services/remoteapp/"
USER = "grace"
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"
CHECKOUT = "/opt/remoteapp-checkout"
START_TIMEOUT_MS = 90_000


@dataclass
class SwarmStack:
    container: str
    network: str
    realm: str
    port: int
    password: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def services(self) -> list[str]:
        listed = docker("service", "ls", "-q", "--filter", f"label={REALM_LABEL}={self.realm}")
        return listed.stdout.split()

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", "--user", "remoteapp", self.container, *args)


def docker(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _service_image() -> None:
    if docker("image", "inspect", SERVICE_IMAGE).returncode == 0:
        return
    if docker("image", "inspect", BASE_IMAGE).returncode != 0:
        skip_or_fail(f"{BASE_IMAGE} is missing (scripts/build-base-image)")
    built = docker(
        "build",
        "-f",
        str(REPO / "Dockerfile-ubuntu"),
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "-t",
        SERVICE_IMAGE,
        str(REPO),
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-4000:]


def _wait_healthy(container: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout
        if status.strip() == "healthy":
            return
        if docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip() != "true":
            break
        time.sleep(1)
    logs = docker("logs", "--tail", "80", container)
    raise AssertionError(
        f"the service is not healthy ({status.strip()}):\n{logs.stdout}{logs.stderr}"
    )


@pytest.fixture(scope="module")
def swarm_stack(swarm_engine: str) -> Iterator[SwarmStack]:
    for image in (VNCAPP, WEBAPP):
        if docker("image", "inspect", image).returncode != 0:
            skip_or_fail(f"{image} is missing (images/build.sh)")
    _service_image()
    suffix = secrets.token_hex(4)
    network = f"remoteapp-e2e-overlay-{suffix}"
    realm = f"swarm-{suffix}"
    port = free_port()
    password = secrets.token_hex(8)
    created = docker("network", "create", "--driver", "overlay", "--attachable", network)
    assert created.returncode == 0, created.stderr
    name = f"remoteapp-e2e-swarm-{suffix}"
    environment = {
        "PYTHONPATH": f"{CHECKOUT}/src",
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        "REMOTEAPP_COOKIE_SECRET": secrets.token_hex(32),
        "JPY_COOKIE_SECRET": secrets.token_hex(32),
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        # Inside its container; the host publishes it on 127.0.0.1 only.
        "REMOTEAPP_HUB_IP": "0.0.0.0",
        "REMOTEAPP_HUB_PORT": "8000",
        "REMOTEAPP_DEMO_PASSWORD": password,
        "REMOTEAPP_AUTO_USER_CREATION": "true",
        "REMOTEAPP_DEMO_APPLICATIONS": json.dumps({VNCAPP: {}}),
        "REMOTEAPP_REALM": realm,
        "REMOTEAPP_ENGINE": "swarm",
        "REMOTEAPP_SWARM_NETWORK": network,
        "REMOTEAPP_SWARM_SHARED_ROOTS": "/var/lib/remoteapp",
        "REMOTEAPP_WORKSPACE_ROOT": "/var/lib/remoteapp/workspaces",
        "REMOTEAPP_NETWORK_TIMEOUT": "60",
        "REMOTEAPP_LOG_FORMAT": "json",
    }
    run = [
        "run",
        "-d",
        "--name",
        name,
        "--init",
        "--network",
        network,
        "--publish",
        f"127.0.0.1:{port}:8000",
        "--volume",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--volume",
        f"{REPO}:{CHECKOUT}:ro",
        *(part for key, value in environment.items() for part in ("--env", f"{key}={value}")),
        SERVICE_IMAGE,
        "jupyterhub",
        "-f",
        f"{CHECKOUT}/config/jupyterhub_config.py",
    ]
    started = docker(*run)
    stack = SwarmStack(name, network, realm, port, password)
    try:
        assert started.returncode == 0, started.stderr
        _wait_healthy(name)
        yield stack
    finally:
        logs = docker("logs", "--timestamps", name)
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        (REPO / "test-artifacts" / "swarm-e2e.log").write_text(logs.stdout + logs.stderr)
        docker("rm", "-f", name)
        services = stack.services()
        if services:
            docker("service", "rm", *services)
        deadline = time.monotonic() + 60
        while docker("network", "rm", network).returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def page_of(swarm_stack: SwarmStack) -> AsyncIterator[object]:
    require_browser()
    async with namespaced_chromium([swarm_stack.port]) as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(30_000)
        await page.goto(swarm_stack.url(PREFIX))
        await page.wait_for_url(re.compile(r"/hub/login"))
        await page.fill("#username_input", USER)
        await page.fill("#password_input", swarm_stack.password)
        await page.click("#login_submit")
        await page.wait_for_url(swarm_stack.url(PREFIX))
        try:
            yield page
        finally:
            await context.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_desktop_runs_as_a_swarm_service_reached_through_the_gate(
    swarm_stack: SwarmStack, page_of: object
) -> None:
    from playwright.async_api import Page

    page = page_of
    assert isinstance(page, Page)
    await page.wait_for_selector("#loading-spinner", state="hidden")
    entry = page.locator("#applistentries .app-entry", has_text="Demo desktop")
    await entry.click()
    await page.click("#start-button")
    desktop = page.frame_locator("#application")
    await desktop.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
    await desktop.locator("#noVNC_container canvas").wait_for()
    await screenshot(page, "swarm-01-desktop-running")

    # One swarm service, publishing nothing, its task on the overlay network.
    (service,) = swarm_stack.services()
    described = json.loads(docker("service", "inspect", service).stdout)[0]
    assert described["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    assert not described["Spec"]["EndpointSpec"].get("Ports")
    assert described["Spec"]["Labels"]["eu.simphony-project.docker.runinfo.user"] == USER
    tasks = docker("service", "ps", "--format", "{{.CurrentState}}", service).stdout
    assert tasks.startswith("Running"), tasks

    await page.click("#quit-button")
    await page.locator("dialog[open]").get_by_role("button", name="Ok").click()
    await page.locator("#start-button:enabled", has_text=re.compile(r"^Start$")).wait_for()
    assert swarm_stack.services() == []


@pytest.mark.asyncio(loop_scope="module")
async def test_a_placement_no_node_meets_fails_at_once_with_the_swarms_reason(
    swarm_stack: SwarmStack, page_of: object
) -> None:
    from playwright.async_api import Page

    page = page_of
    assert isinstance(page, Page)
    registered = swarm_stack.exec("remoteappdb", "app", "create", WEBAPP)
    assert registered.returncode == 0, registered.stderr
    granted = swarm_stack.exec(
        "remoteappdb", "app", "grant", WEBAPP, USER, "--placement", "node.labels.gpu==true"
    )
    assert granted.returncode == 0, granted.stderr
    mapping_id = granted.stdout.strip()

    started = time.monotonic()
    answer = await page.evaluate(
        """async (mappingId) => {
            const token = document.querySelector('meta[name="xsrf-token"]').content;
            const response = await fetch("api/v1/containers/", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-XSRFToken": token},
                body: JSON.stringify({mapping_id: mappingId}),
            });
            return {status: response.status, body: await response.json()};
        }""",
        mapping_id,
    )
    elapsed = time.monotonic() - started
    assert answer["status"] >= 500, answer
    assert "no suitable node" in answer["body"]["message"], answer
    # The swarm's answer, not the 60-second start timeout.
    assert elapsed < 30, elapsed
    assert swarm_stack.services() == []
