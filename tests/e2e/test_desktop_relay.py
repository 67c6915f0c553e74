"""A desktop in Chromium behind a TCP relay that cuts connections idle for N seconds.

Between the browser and the proxy sits ``CuttingRelay`` (as a corporate proxy or a NAT
would): a connection without a byte either way for ``idle_cut`` seconds is cut. The desktop
is made quiet (its clock stopped, so no picture changes), and the gate's pings (every
``REMOTEAPP_WEBSOCKET_PING_S``) must keep its one WebSocket open: the page opens exactly one
WebSocket, the relay cuts nothing, and the connection's longest quiet spell shows that it
was the pings that bridged the gaps. The long variant is the one asked of the product
(N = 30 s, pings every 25 s, 3 minutes); the quick one (N = 6 s, pings every 2 s) runs the
same test in seconds.

Then a network drop (every connection through the relay cut at once): the user page shows
"Reconnecting…" and gets the desktop back by itself, without a reload of the page.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.support.browser import namespaced_chromium, screenshot
from tests.support.cutting_relay import CuttingRelay
from tests.support.stack import (
    PREFIX,
    REALM_LABEL,
    VNCAPP,
    Stack,
    remoteappdb,
    require_everything,
    running_stack,
    signed_in,
    stack_marks,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = stack_marks(timeout=900)

START_TIMEOUT_MS = 90_000


@dataclass(frozen=True)
class Variant:
    idle_cut: float
    ping_s: float
    held_s: float


VARIANTS = {
    "quick": Variant(idle_cut=6.0, ping_s=2.0, held_s=20.0),
    "long": Variant(idle_cut=30.0, ping_s=25.0, held_s=180.0),
}


@dataclass
class World:
    stack: Stack
    relay: CuttingRelay
    browser: Browser
    variant: Variant

    def via_relay(self, path: str) -> str:
        return f"http://127.0.0.1:{self.relay.port}{path}"


def _fill_database(database: Path) -> None:
    remoteappdb(database, "init")
    remoteappdb(database, "user", "create", "alice")
    remoteappdb(database, "app", "create", VNCAPP)
    remoteappdb(database, "app", "grant", VNCAPP, "alice")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    require_everything(("vncapp",))
    variant = VARIANTS[request.param]
    async with running_stack(
        tmp_path_factory.mktemp(f"relay-{request.param}"),
        _fill_database,
        settings={"websocket_ping_s": variant.ping_s},
    ) as stack:
        public_port = int(stack.public_url.rsplit(":", 1)[1])
        relay = CuttingRelay("127.0.0.1", public_port, idle_cut=variant.idle_cut)
        await relay.start()
        try:
            async with namespaced_chromium([public_port, relay.port]) as browser:
                yield World(stack, relay, browser, variant)
        finally:
            await relay.close()


async def _user_page_via_relay(world: World) -> tuple[BrowserContext, Page]:
    """Alice signed in, her page loaded through the relay (cookies are per host, not port)."""
    context, page = await signed_in(world.stack, "alice", browser=world.browser)
    await page.goto(world.via_relay(PREFIX))
    await page.wait_for_selector("#loading-spinner", state="hidden")
    return context, page


async def _start_desktop(page: Page) -> None:
    await page.click("#applistentries .app-entry")
    start = page.locator("#start-button")
    if await start.count():
        await start.click()
    try:
        await (
            page.frame_locator("#application")
            .locator("html.noVNC_connected")
            .wait_for(timeout=START_TIMEOUT_MS)
        )
    except Exception:
        await screenshot(page, "desktop-relay-not-connected")
        states = []
        for frame in page.frames:
            classes = await frame.evaluate("document.documentElement.className")
            states.append(f"{frame.url}: {classes}")
        raise AssertionError("the desktop did not connect: " + "; ".join(states)) from None


def _stop_the_clock(realm: str, signal: str = "STOP") -> None:
    """Freeze (or thaw) the desktop's only moving thing, so that its picture stops changing."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={REALM_LABEL}={realm}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert len(ids) == 1, ids
    script = (
        "for p in /proc/[0-9]*; do "
        '[ "$(cat $p/comm 2>/dev/null)" = xclock ] && kill -' + signal + " ${p#/proc/}; "
        "done; true"
    )
    subprocess.run(["docker", "exec", ids[0], "sh", "-c", script], timeout=60, check=True)


@pytest.mark.parametrize("world", ["quick", "long"], indirect=True)
async def test_a_quiet_desktop_keeps_its_one_websocket_through_a_relay_cutting_idle_ones(
    world: World,
) -> None:
    context, page = await _user_page_via_relay(world)
    try:
        await _start_desktop(page)
        _stop_the_clock(world.stack.realm)
        accepted = world.relay.accepted
        await asyncio.sleep(world.variant.held_s)
        frame = page.frame_locator("#application")
        assert await frame.locator("html.noVNC_connected").count() == 1
        assert await page.locator("#reconnecting").is_hidden()
        # No new connection through the relay: the WebSocket is the one opened at the start
        # (idle HTTP keep-alive connections may have been cut meanwhile; it was not).
        assert world.relay.accepted == accepted
        still_open = [link for link in world.relay.links if link.open]
        assert still_open
        # The desktop was quiet: its WebSocket carried nothing for most of a ping interval
        # at a time, which only the pings ended (else the relay would have cut it).
        longest = max(link.longest_quiet for link in still_open)
        assert 0.6 * world.variant.ping_s <= longest < world.variant.idle_cut, still_open
        await screenshot(page, f"desktop-quiet-through-cutting-relay-{world.variant.held_s:g}s")
    finally:
        _stop_the_clock(world.stack.realm, "CONT")
        await context.close()


@pytest.mark.parametrize("world", ["quick"], indirect=True)
async def test_the_user_page_reconnects_a_dropped_desktop_by_itself(world: World) -> None:
    context, page = await _user_page_via_relay(world)
    try:
        await _start_desktop(page)
        await page.evaluate("window.__notReloaded = true")
        # The page has seen the desktop connected (a drop before that is the first connection
        # failing, which noVNC retries without the page's help).
        await page.locator('#application[data-desktop="connected"]').wait_for(timeout=10_000)
        frame = page.frame_locator("#application")
        assert world.relay.cut_all() >= 1
        await page.locator("#reconnecting").wait_for(state="visible", timeout=10_000)
        assert await page.get_attribute("#application", "data-drops") == "1"
        await screenshot(page, "desktop-reconnecting")
        await frame.locator("html.noVNC_connected").wait_for(timeout=60_000)
        await page.locator("#reconnecting").wait_for(state="hidden", timeout=10_000)
        # One drop, one new connection through the relay for the desktop.
        assert await page.get_attribute("#application", "data-drops") == "1"
        # The same page, the same session: only the desktop's connection is new.
        assert await page.evaluate("window.__notReloaded") is True
        assert await page.locator("#quit-button").count() == 1
    finally:
        await context.close()
