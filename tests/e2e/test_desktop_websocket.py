"""The desktop's WebSocket in Chromium: refused from a foreign origin, and closed by the gate
within seconds when the user who opened it signs out.

A page of another origin on the same site (127.0.0.1 on another port: the browser sends the
gate cookie there too, so only the gate's Origin check stands between the page and the
desktop) tries to open the desktop's WebSocket; the desktop's own page opens the same one.
Then the desktop stays open in one tab while the user signs out in another: the gate, not the
page, must end the connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from aiohttp import web

from tests.support.browser import namespaced_chromium, screenshot
from tests.support.services import free_port
from tests.support.stack import (
    VNCAPP,
    Stack,
    remoteappdb,
    require_everything,
    running_stack,
    signed_in,
    stack_marks,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = stack_marks(timeout=300)

START_TIMEOUT_MS = 60_000
# How long the gate may take to end an open connection after sign-out.
CLOSED_WITHIN_S = 10.0

# Opens a WebSocket and reports what became of it: "open", or "refused" when the handshake
# failed (the browser tells a page no more than that).
_TRY_WEBSOCKET = """
url => new Promise(resolve => {
  const socket = new WebSocket(url, ["binary"]);
  const timer = setTimeout(() => resolve("timeout"), 15000);
  socket.onopen = () => { clearTimeout(timer); socket.close(); resolve("open"); };
  socket.onerror = () => { clearTimeout(timer); resolve("refused"); };
})
"""


def _fill_database(database: Path) -> None:
    remoteappdb(database, "init")
    remoteappdb(database, "user", "create", "alice")
    remoteappdb(database, "app", "create", VNCAPP)
    remoteappdb(database, "app", "grant", VNCAPP, "alice")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    require_everything(("vncapp",))
    async with running_stack(tmp_path_factory.mktemp("websocket"), _fill_database) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def foreign_site(stack: Stack) -> AsyncIterator[tuple[Browser, str]]:
    """A browser that also reaches a page of another origin on the same site."""

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text="<!DOCTYPE html><title>elsewhere</title>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    public_port = int(stack.public_url.rsplit(":", 1)[1])
    try:
        async with namespaced_chromium([public_port, port]) as browser:
            yield browser, f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def _start_desktop(page: Page) -> str:
    """Start alice's desktop from her page; the path it is served under."""
    await page.wait_for_selector("#loading-spinner", state="hidden")
    await page.click("#applistentries .app-entry")
    await page.click("#start-button")
    await (
        page.frame_locator("#application")
        .locator("html.noVNC_connected")
        .wait_for(timeout=START_TIMEOUT_MS)
    )
    path = await page.get_attribute("#application", "src")
    assert path
    # The desktop is shown by the service's viewer, under the desktop's own path.
    assert re.fullmatch(r"/user/alice/containers/[a-z0-9]+/\.remoteapp-desktop/", path)
    return path.removesuffix(".remoteapp-desktop/")


def _websocket_url(stack: Stack, path: str) -> str:
    return stack.public_url.replace("http://", "ws://") + path + "websockify"


async def test_a_foreign_origin_cannot_open_the_desktop_websocket_and_sign_out_closes_it(
    stack: Stack, foreign_site: tuple[Browser, str]
) -> None:
    browser, elsewhere = foreign_site
    context, page = await signed_in(stack, "alice", browser=browser)
    try:
        path = await _start_desktop(page)
        desktop = await context.new_page()
        await desktop.goto(stack.url(path))
        await desktop.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        socket_url = _websocket_url(stack, path)

        # From the desktop's own page the WebSocket opens: the control of the next check.
        assert await desktop.evaluate(_TRY_WEBSOCKET, socket_url) == "open"

        # The same browser, its cookies included, on a page of another origin: refused.
        foreign = await context.new_page()
        await foreign.goto(elsewhere)
        assert await foreign.evaluate(_TRY_WEBSOCKET, socket_url) == "refused"
        await foreign.close()

        # Alice signs out in her first tab; the desktop tab keeps its connection open until
        # the gate ends it.
        assert await desktop.locator("html.noVNC_connected").count() == 1
        signed_out_at = time.monotonic()
        await page.click("#user-menu")
        await page.click("#logout")
        await page.wait_for_url(re.compile(r"/hub/"))
        await desktop.locator("html.noVNC_connected").wait_for(
            state="detached", timeout=CLOSED_WITHIN_S * 1000
        )
        closed_after = time.monotonic() - signed_out_at
        await screenshot(desktop, "websocket-closed-after-sign-out")
        assert closed_after <= CLOSED_WITHIN_S
        # And it cannot come back: a new connection from the desktop's page is refused.
        assert await desktop.evaluate(_TRY_WEBSOCKET, socket_url) == "refused"
    finally:
        await context.close()
