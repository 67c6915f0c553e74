"""A scientist's day, end to end: hub login, the demo apps in Docker, sharing, sign-out."""

from __future__ import annotations

import re
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
    from playwright.async_api import Page

pytestmark = stack_marks(timeout=240)

# Long enough for a cold start of the desktop on a busy machine; the page shows a spinner.
START_TIMEOUT_MS = 60_000


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
        url_id = desktop_path.rstrip("/").rsplit("/", 1)[-1]
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
