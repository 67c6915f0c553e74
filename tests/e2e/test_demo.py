"""The README's demo command: the stack comes up, a user signs in and starts an application in
a browser, Ctrl-C stops everything and leaves no container behind, a second run reuses it all."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.browser import namespaced_chromium, screenshot
from tests.support.hub import clean_environment, wait_until_routed
from tests.support.services import REPO, free_port
from tests.support.stack import PREFIX, REALM_LABEL, remove_realm_containers, require_everything

pytestmark = [
    pytest.mark.docker,
    pytest.mark.proxy,
    pytest.mark.hub,
    pytest.mark.browser,
    pytest.mark.timeout(420),
]

# The first run on a fresh machine provisions and builds images before the hub starts.
STARTUP_SECONDS = 300.0


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    public_url: str
    directory: Path
    realm: str
    log: Path

    def stop(self) -> int:
        """Ctrl-C, as a person at the terminal would: SIGINT to the whole process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError("the demo did not stop within 90 s of Ctrl-C") from None


def _realm_containers(realm: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={REALM_LABEL}={realm}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return listed.stdout.split()


@pytest.fixture
def ports() -> dict[str, str]:
    public, internal, service, api, gate = (free_port() for _ in range(5))
    return {
        "REMOTEAPP_HUB_PORT": str(public),
        "REMOTEAPP_HUB_INTERNAL_PORT": str(internal),
        "REMOTEAPP_SERVICE_PORT": str(service),
        "CONFIGPROXY_API_URL": f"http://127.0.0.1:{api}",
        "REMOTEAPP_GATE_URL": f"http://127.0.0.1:{gate}",
    }


@pytest.fixture
def demo_factory(tmp_path: Path, ports: dict[str, str]) -> Iterator[Callable[[int], Demo]]:
    require_everything()
    realm = "demo-" + secrets.token_hex(4)
    env = clean_environment()
    env.update(ports, REMOTEAPP_DEMO_DIR=str(tmp_path / "demo"), REMOTEAPP_REALM=realm)
    started: list[Demo] = []

    def start(run: int) -> Demo:
        log = tmp_path / f"demo-{run}.log"
        process = subprocess.Popen(
            [str(REPO / "scripts" / "demo")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        demo = Demo(
            process=process,
            public_url=f"http://127.0.0.1:{ports['REMOTEAPP_HUB_PORT']}",
            directory=tmp_path / "demo",
            realm=realm,
            log=log,
        )
        started.append(demo)
        return demo

    yield start
    for demo in started:
        if demo.process.poll() is None:
            os.killpg(demo.process.pid, signal.SIGKILL)
            demo.process.wait()
    remove_realm_containers(realm)


async def _wait_up(demo: Demo) -> None:
    try:
        await wait_until_routed(demo.public_url + PREFIX + "health", within=STARTUP_SECONDS)
    except AssertionError:
        tail = demo.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"the demo never came up; its output ends with:\n{tail}") from None


async def test_the_demo_runs_an_app_for_a_user_and_stops_cleanly(
    demo_factory: Callable[[int], Demo],
) -> None:
    demo = demo_factory(1)
    await _wait_up(demo)
    output = demo.log.read_text()
    password = (demo.directory / "demo-password").read_text().strip()
    assert password in output, "the demo prints the password to sign in with"
    assert f"{demo.public_url}/" in output, "the demo prints where to open it"

    port = int(demo.public_url.rsplit(":", 1)[1])
    async with namespaced_chromium([port]) as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(30_000)
        await page.goto(demo.public_url + "/")
        await page.wait_for_url(re.compile(r"/hub/login"))
        await page.fill("#username_input", "alice")
        await page.fill("#password_input", password)
        await page.click("#login_submit")
        # The hub's default URL is our page.
        await page.wait_for_url(demo.public_url + PREFIX)
        entry = page.locator("#applistentries .app-entry", has_text="Demo web app")
        await entry.click()
        await page.locator("#start-button", has_text=re.compile(r"^Start$")).click()
        frame = page.frame_locator("#application")
        await frame.locator("#user").wait_for(timeout=90_000)
        assert (await frame.locator("#user").text_content() or "").strip() == "alice"
        await screenshot(page, "demo-01-webapp-running")
        await context.close()

        # The administrator signs in with the admin password the demo printed.
        admin_password = (demo.directory / "demo-admin-password").read_text().strip()
        assert admin_password in output, "the demo prints the admin's password"
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(30_000)
        await page.goto(demo.public_url + PREFIX + "admin/")
        await page.wait_for_url(re.compile(r"/hub/login"))
        await page.fill("#username_input", "admin")
        await page.fill("#password_input", admin_password)
        await page.click("#login_submit")
        await page.wait_for_url(demo.public_url + PREFIX + "admin/")
        assert (await page.title()).startswith("Administration")
        await context.close()
    # The demo speaks the hub's current API: nothing deprecated is used.
    assert "deprecated" not in demo.log.read_text().lower()

    assert len(_realm_containers(demo.realm)) == 1
    assert demo.stop() in (0, 130)
    assert _realm_containers(demo.realm) == [], "Ctrl-C leaves no application container behind"

    # A second run reuses the database, the images and the secrets.
    again = demo_factory(2)
    await _wait_up(again)
    second = again.log.read_text()
    assert "created the SQLite database" not in second
    assert password in second
    assert again.stop() in (0, 130)
