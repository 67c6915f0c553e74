"""A scientist's day, end to end: hub login, the demo apps in Docker, sharing, sign-out."""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.support.browser import screenshot
from tests.support.stack import (
    PREFIX,
    VNCAPP,
    WEBAPP,
    Stack,
    remoteappdb,
    require_everything,
    running_stack,
    signed_in,
    stack_marks,
)

if TYPE_CHECKING:
    from playwright.async_api import Frame, Page

pytestmark = stack_marks(timeout=240)

# Long enough for a cold start of the desktop on a busy machine; the page shows a spinner.
START_TIMEOUT_MS = 60_000
# The demo desktop's terminal, and where its X window id is (images/vncapp/start-vncapp).
TERMINAL = "Terminal"
TERMINAL_WINDOW = "/tmp/terminal-window"


# ------------------------------------------------------------------------------ set-up
def _fill_database(database: Path) -> None:
    remoteappdb(database, "init")
    for user in ("alice", "bob"):
        remoteappdb(database, "user", "create", user)
    for image in (WEBAPP, VNCAPP):
        remoteappdb(database, "app", "create", image)
    remoteappdb(database, "app", "grant", WEBAPP, "alice", "--allow-home")
    remoteappdb(database, "app", "grant", VNCAPP, "alice", "--allow-view")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    require_everything()
    async with running_stack(tmp_path_factory.mktemp("journey"), _fill_database) as stack:
        yield stack


# ------------------------------------------------------------------------------ helpers
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
    alice_context, alice = await signed_in(stack, "alice")
    bob_context, bob = await signed_in(stack, "bob")
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

        desktop_path = await alice.get_attribute("#application", "src") or ""
        # The desktop is shown by the service's viewer, under the application's path.
        found = re.search(r"/containers/([a-z0-9]+)/", desktop_path)
        assert found is not None, desktop_path
        url_id = found.group(1)
        # Bob holds the desktop's address, but nothing shares it with him yet.
        unshared = await bob.goto(stack.url(desktop_path))
        assert unshared is not None
        assert unshared.status == 403

        # Opening the share dialog shares the link to view, so that it works at once.
        await alice.click("#share-button")
        shared = await alice.input_value("#shared-url")
        assert shared == stack.url(f"{PREFIX}?view={url_id}")
        await alice.locator("#share-list .share-entry", has_text="Anyone signed in").wait_for()
        await screenshot(alice, "e2e-05-share")
        await alice.locator("dialog[open]").get_by_role("button", name="Close").click()

        # The state holds across reloads.
        await alice.reload()
        await alice.frame_locator("#application").locator("html.noVNC_connected").wait_for()
        assert await _status(alice, desktop_entry) == "Running"

        # Bob opens the share link: alice's desktop, under a banner saying he only views it.
        allowed = await bob.goto(shared)
        assert allowed is not None
        assert allowed.ok
        viewed = bob.frame_locator("#application")
        await viewed.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        banner = await bob.locator("#view-only-banner").text_content()
        assert banner == "View only — alice's session"
        assert await bob.locator("#request-control").is_visible()
        await screenshot(bob, "e2e-06-bob-views-the-desktop")

        # Alice revokes the link: Bob's connection to her desktop ends within seconds.
        await alice.click("#share-button")
        link_share = alice.locator("#share-list .share-entry", has_text="Anyone signed in")
        await link_share.locator(".share-revoke").click()
        await link_share.wait_for(state="detached")
        await alice.locator("dialog[open]").get_by_role("button", name="Close").click()
        await viewed.locator("html.noVNC_connected").wait_for(state="detached", timeout=10_000)
        revoked = await bob.goto(stack.url(desktop_path))
        assert revoked is not None
        assert revoked.status == 403

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


# ------------------------------------------------------------------------------ viewing
# Run in bob's desktop frame (the application's page, not ours): a WebSocket of his own to
# the desktop, an RFB handshake, then pointer moves and key presses written by hand, the last
# pointer move onto ``at`` (the terminal) so that the keys would go there. The gate must drop
# them as it drops noVNC's while bob only views.
_CRAFTED_INPUT = """async ({path, at}) => {
  const ws = new WebSocket(`${location.origin}${path}/websockify`, ["binary"]);
  ws.binaryType = "arraybuffer";
  const chunks = [];
  let wake = null;
  ws.onmessage = (event) => { chunks.push(new Uint8Array(event.data)); if (wake) wake(); };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const take = async (count) => {
    for (;;) {
      const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      if (total >= count) break;
      await new Promise((resolve) => { wake = resolve; });
    }
    const all = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
    let at = 0;
    for (const chunk of chunks) { all.set(chunk, at); at += chunk.length; }
    chunks.length = 0;
    if (all.length > count) chunks.push(all.slice(count));
    return all.slice(0, count);
  };
  await take(12);
  ws.send(new TextEncoder().encode("RFB 003.008\\n"));
  const types = (await take(1))[0];
  await take(types);
  ws.send(new Uint8Array([1]));
  await take(4);
  ws.send(new Uint8Array([1]));
  const head = await take(24);
  const nameLength = new DataView(head.buffer).getUint32(20);
  await take(nameLength);
  for (const [x, y] of [[5, 5], [900, 700], [40, 600], at]) {
    ws.send(new Uint8Array([5, 0, x >> 8, x & 255, y >> 8, y & 255]));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (const key of [0x78, 0x79, 0x7a]) {  // "xyz": KeyEvent down, then up
    ws.send(new Uint8Array([4, 1, 0, 0, 0, 0, 0, key]));
    ws.send(new Uint8Array([4, 0, 0, 0, 0, 0, 0, key]));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  ws.close();
  return true;
}"""


def _docker(*args: str) -> bytes:
    return subprocess.run(
        ["docker", *args],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def _window(container: str, name: str) -> bytes:
    """An X window of alice's desktop as xwd dumps it (read in her container); the terminal
    by the window id it leaves in ``TERMINAL_WINDOW``."""
    chosen = f'-id "$(cat {TERMINAL_WINDOW})"' if name == TERMINAL else f"-name {name}"
    return _docker("exec", container, "sh", "-c", f"DISPLAY=:1 xwd -silent {chosen}")


def _shown(container: str, name: str) -> str:
    """What alice's desktop shows in window ``name``, as a digest."""
    return hashlib.sha256(_window(container, name)).hexdigest()


def _terminal_centre(container: str) -> tuple[int, int]:
    """The centre of the desktop's terminal, in desktop pixels (from the xwd header: the
    window's width, height, x and y are its 21st to 24th 32-bit fields)."""
    x, y, width, height = _terminal_box(container)
    return x + width // 2, y + height // 2


def _terminal_box(container: str) -> tuple[int, int, int, int]:
    """The desktop's terminal as (x, y, width, height) in desktop pixels."""
    header = _window(container, TERMINAL)[:100]
    width, height, x, y = struct.unpack(">4i", header[80:96])
    return x, y, width, height


async def _terminal_seen(page: Page, box: tuple[int, int, int, int]) -> str:
    """What ``page``'s desktop canvas shows in the terminal's area, as a digest (noVNC draws
    the pointer on an element of its own, so only the desktop's pixels count)."""
    canvas = page.frame_locator("#application").locator("#noVNC_container canvas")
    pixels: str = await canvas.evaluate(
        """(canvas, [x, y, w, h]) =>
          Array.from(canvas.getContext("2d").getImageData(x, y, w, h).data).join(",")""",
        list(box),
    )
    return hashlib.sha256(pixels.encode()).hexdigest()


async def _settled_view(page: Page, box: tuple[int, int, int, int]) -> str:
    """``page``'s view of the terminal once it stopped changing."""
    last = await _terminal_seen(page, box)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await _terminal_seen(page, box)
        if now == last:
            return now
        last = now
    raise AssertionError("the terminal kept changing on the canvas")


async def _point_at(page: Page, container: str) -> None:
    """The mouse of ``page`` onto the desktop's terminal (keys go to the window under it)."""
    canvas = page.frame_locator("#application").locator("#noVNC_container canvas")
    box = await canvas.bounding_box()
    assert box is not None
    pixels = await canvas.evaluate("(canvas) => canvas.width")
    scale = box["width"] / pixels
    x, y = _terminal_centre(container)
    await page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
    await asyncio.sleep(0.3)


async def _type(page: Page, container: str, text: str) -> None:
    """``page`` types ``text`` into the desktop's terminal, as a person would."""
    await _point_at(page, container)
    await page.keyboard.type(text, delay=50)


async def _wiggle(page: Page) -> None:
    """Bob moves his mouse over the desktop and clicks, as a person would."""
    box = await page.locator("#application").bounding_box()
    assert box is not None
    for fx, fy in ((0.1, 0.1), (0.9, 0.85), (0.2, 0.8), (0.8, 0.15), (0.5, 0.5)):
        await page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        await asyncio.sleep(0.15)
    await page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)


async def _settled(container: str, name: str = "xeyes") -> str:
    """Window ``name`` once it stopped changing (xeyes' pupils follow the pointer; the
    terminal shows what was typed)."""
    last = _shown(container, name)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = _shown(container, name)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the desktop's {name} kept changing by itself")


async def _crafted(frame: Frame, path: str, container: str) -> None:
    """Bob's hand-written RFB input, its keys aimed at the terminal."""
    assert await frame.evaluate(
        _CRAFTED_INPUT, {"path": path, "at": list(_terminal_centre(container))}
    )


async def test_a_viewer_sees_but_acts_only_once_given_control(stack: Stack) -> None:
    alice_context, alice = await signed_in(stack, "alice")
    bob_context, bob = await signed_in(stack, "bob")
    try:
        await alice.wait_for_selector("#loading-spinner", state="hidden")
        await alice.click(await _entry(alice, "Demo desktop (xclock)"))
        await alice.click("#start-button")
        await (
            alice.frame_locator("#application")
            .locator("html.noVNC_connected")
            .wait_for(timeout=START_TIMEOUT_MS)
        )
        frame_src = await alice.get_attribute("#application", "src") or ""
        found = re.search(r"^(/user/alice/containers/([a-z0-9]+))/", frame_src)
        assert found is not None, frame_src
        path, url_id = found.group(1), found.group(2)
        container = (
            _docker(
                "ps", "-q", "--filter", f"label=eu.simphony-project.docker.runinfo.url_id={url_id}"
            )
            .decode()
            .strip()
        )
        assert container
        # Something on alice's desktop that shows where the pointer is; the terminal beside
        # the clock shows what is typed.
        _docker("exec", "-d", container, "sh", "-c", "DISPLAY=:1 xeyes -geometry 400x400+0+0")
        for _ in range(40):
            try:
                _shown(container, "xeyes")
                _shown(container, TERMINAL)
                break
            except subprocess.CalledProcessError:
                await asyncio.sleep(0.25)

        # The owner's keys reach the terminal, on the desktop and on her canvas: the checks
        # below can tell typing from none.
        box = _terminal_box(container)
        blank, blank_seen = await _settled(container, TERMINAL), await _settled_view(alice, box)
        await _type(alice, container, "echo alice")
        typed = await _settled(container, TERMINAL)
        assert typed != blank
        assert await _settled_view(alice, box) != blank_seen

        # Alice shares with bob by name, to view.
        await alice.click("#share-button")
        await alice.fill("#share-who", "bob")
        await alice.select_option("#share-mode", "view")
        await alice.click("#share-add")
        await alice.locator("#share-list .share-entry", has_text="bob").wait_for()
        await alice.locator("dialog[open]").get_by_role("button", name="Close").click()

        await bob.goto(stack.url(f"{PREFIX}?view={url_id}"))
        viewed = bob.frame_locator("#application")
        await viewed.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        await viewed.locator("#noVNC_container canvas").wait_for()
        assert await bob.locator("#view-only-banner").text_content() == (
            "View only — alice's session"
        )

        # Bob's mouse, keys and hand-written RFB input change nothing on alice's desktop:
        # neither the pointer (xeyes) nor the terminal (the pointer is still on it).
        before, seen = await _settled(container), await _settled_view(bob, box)
        await _wiggle(bob)
        await _type(bob, container, "bob was here")
        desktop_frame = next(f for f in bob.frames if f.url.startswith(stack.url(path)))
        await _crafted(desktop_frame, path, container)
        assert await _settled(container) == before
        assert await _settled(container, TERMINAL) == typed
        assert await _settled_view(bob, box) == seen
        await screenshot(bob, "e2e-08-bob-views-only")

        # He asks for control; alice gives it: now his pointer moves her xeyes, and his keys,
        # typed and hand-written, reach her terminal.
        await bob.click("#request-control")
        await alice.locator(".control-give").click(timeout=15_000)
        await bob.locator("#view-only-banner", has_text="You control").wait_for(timeout=10_000)
        given = await _settled(container)
        await _wiggle(bob)
        assert await _settled(container) != given
        await _type(bob, container, " bob")
        by_bob = await _settled(container, TERMINAL)
        assert by_bob != typed
        seen_by_bob = await _settled_view(bob, box)
        assert seen_by_bob != seen
        await _crafted(desktop_frame, path, container)
        crafted = await _settled(container, TERMINAL)
        assert crafted != by_bob
        seen = await _settled_view(bob, box)
        assert seen != seen_by_bob
        await screenshot(alice, "e2e-09-bob-in-control")

        # Alice takes control back: bob's input stops counting again.
        await alice.click("#control-take")
        await bob.locator("#view-only-banner", has_text="View only").wait_for(timeout=10_000)
        taken = await _settled(container)
        await _wiggle(bob)
        await _type(bob, container, " again")
        await _crafted(desktop_frame, path, container)
        assert await _settled(container) == taken
        assert await _settled(container, TERMINAL) == crafted
        assert await _settled_view(bob, box) == seen

        await alice.click("#quit-button")
        await alice.locator("dialog[open]").get_by_role("button", name="Ok").click()
        await _wait_until_startable(alice)
    finally:
        await alice_context.close()
        await bob_context.close()
