"""The test browser's own network namespace: Docker's interface churn cannot abort its requests."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from tests.support.browser import namespaced_chromium
from tests.support.services import REPO, free_port, skip_or_fail

pytestmark = [pytest.mark.browser, pytest.mark.docker]

IMAGE = "remoteapp-demo/webapp:latest"
LABEL = "remoteapp-test=browser-netns"
SLOW_SECONDS = 3.0


async def _index(_request: web.Request) -> web.Response:
    return web.Response(
        text="<!DOCTYPE html><title>relay</title><p>ok</p>", content_type="text/html"
    )


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_SECONDS)
    return web.Response(text="done")


@asynccontextmanager
async def _server() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_get("/slow", _slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def _docker(*args: str) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def churn_image(docker_engine: None) -> str:
    built = subprocess.run(
        [str(REPO / "images" / "build.sh"), "webapp"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        skip_or_fail(f"cannot build {IMAGE}: {built.stderr.strip()[-300:]}")
    return IMAGE


async def _container_churn(image: str) -> None:
    """Start and remove a container: each adds and removes a host network interface."""
    container = await asyncio.to_thread(
        _docker,
        "run", "-d", "--rm", "--label", LABEL, "--entrypoint", "/bin/busybox", image, "sleep", "30",
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(_docker, "rm", "-f", container)


async def test_requests_in_flight_survive_containers_starting_and_stopping(
    churn_image: str,
) -> None:
    async with _server() as port, namespaced_chromium([port]) as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        for _ in range(2):
            pending = asyncio.ensure_future(
                page.evaluate("fetch('/slow', {cache: 'no-store'}).then(r => r.text())")
            )
            await asyncio.sleep(0.3)
            await _container_churn(churn_image)
            assert await pending == "done"
        # A page load spanning the churn as well.
        navigation = asyncio.ensure_future(page.goto(f"http://127.0.0.1:{port}/slow"))
        await asyncio.sleep(0.3)
        await _container_churn(churn_image)
        response = await navigation
        assert response is not None
        assert response.ok
        assert await page.text_content("body") == "done"


async def test_the_browser_reaches_only_the_ports_it_was_given() -> None:
    async with _server() as relayed, _server() as other, namespaced_chromium([relayed]) as browser:
        page = await browser.new_page()
        response = await page.goto(f"http://127.0.0.1:{relayed}/")
        assert response is not None
        assert response.ok
        from playwright.async_api import Error

        with pytest.raises(Error, match="ERR_CONNECTION_REFUSED"):
            await page.goto(f"http://127.0.0.1:{other}/")
