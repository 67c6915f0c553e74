"""Chromium for the browser tests, driven by Playwright from inside its own network namespace.

Playwright starts "the browser" through a wrapper that runs ``tests/support/netns.py``: a new
network namespace (so Docker's interface changes cannot abort its requests), ``lo`` up, the
given 127.0.0.1 ports relayed to the host's, then ``/usr/bin/chromium``. Playwright talks to
it over inherited pipes, so nothing else changes. Never run ``playwright install``: the
system's Chromium is used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.netns import HostRelay
from tests.support.services import REPO, skip_or_fail

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NETNS_PROGRAM = Path(__file__).with_name("netns.py")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def browser_problem() -> str | None:
    """None when a namespaced Chromium can run here, else why not."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright; never `playwright install`)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (apt-get install util-linux iproute2)"
    probe = ["unshare", "--net", "true"]
    if os.geteuid() != 0:
        probe = ["unshare", "--user", "--map-root-user", "--net", "true"]
    result = subprocess.run(probe, capture_output=True, check=False, timeout=10)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip()
        return f"cannot create a network namespace for the browser: {reason}"
    return None


def require_browser() -> None:
    problem = browser_problem()
    if problem:
        skip_or_fail(problem)


def _wrapper(directory: Path, ports: Sequence[int]) -> Path:
    command = [
        sys.executable,
        str(NETNS_PROGRAM),
        "--socket-dir",
        str(directory),
        "--ports",
        ",".join(str(port) for port in ports),
        "--",
        str(CHROMIUM),
    ]
    wrapper = directory / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@contextlib.asynccontextmanager
async def namespaced_chromium(ports: Sequence[int]) -> AsyncIterator[Browser]:
    """A headless Chromium that reaches exactly ``ports`` on 127.0.0.1 (skips if it cannot)."""
    require_browser()
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="remoteapp-browser-") as tmp:
        directory = Path(tmp)
        relay = HostRelay(directory, ports)
        relay.start()
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(_wrapper(directory, ports)),
                    args=CHROMIUM_ARGS,
                    timeout=30_000,
                )
                try:
                    yield browser
                finally:
                    await browser.close()
        finally:
            relay.stop()


async def screenshot(page: Page, name: str) -> Path:
    """Save what the page looks like now as ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


@pytest.fixture
def browser_available() -> None:
    """Require what ``namespaced_chromium`` needs (skipped locally if absent, failed in CI)."""
    require_browser()


def watch_for_errors(page: Page, problems: list[str]) -> None:
    """Collect the page's script errors and CSP refusals in ``problems``, for the test to fail
    on; failed HTTP requests are left out (tests ask for 4xx answers on purpose)."""
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
