"""An administrator's day, end to end: users, an application, a policy, and someone's container."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.support.browser import screenshot, watch_for_errors
from tests.support.stack import (
    PREFIX,
    WEBAPP,
    Stack,
    remoteappdb,
    require_everything,
    running_stack,
    signed_in,
    stack_marks,
)

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

pytestmark = stack_marks(timeout=300)

ADMIN = "admin"
USER = "carol"
ADMIN_PAGE = PREFIX + "admin/"
START_TIMEOUT_MS = 60_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    require_everything(["webapp"])

    def empty_catalogue(database: Path) -> None:
        remoteappdb(database, "init")

    async with running_stack(
        tmp_path_factory.mktemp("admin-journey"), empty_catalogue, hub_admins=[ADMIN]
    ) as stack:
        yield stack


# ------------------------------------------------------------------------------ helpers
def _row(page: Page, cell: str) -> Locator:
    """The table row with a cell reading exactly ``cell`` (the original's automation's way)."""
    return page.locator(f"xpath=//table[@id='datatable']//tr[td[text()='{cell}']]")


def _row_button(page: Page, cell: str, label: str) -> Locator:
    return page.locator(
        f"xpath=//table[@id='datatable']//tr[td[text()='{cell}']]/td/button[text()='{label}']"
    )


def _dialog(page: Page) -> Locator:
    return page.locator("dialog[open]")


async def _footer_button(page: Page, label: str) -> None:
    await _dialog(page).locator(".dialog-footer").get_by_role("button", name=label).click()


async def _open(page: Page, menu_entry: str, title: str) -> None:
    await page.locator("#adminoptions").get_by_role("link", name=menu_entry, exact=True).click()
    await page.locator(".box-title", has_text=title).wait_for()
    await page.locator(".loading-line").wait_for(state="detached")


# ------------------------------------------------------------------------------ the journey
async def test_an_admin_gives_carol_an_application_and_stops_it(stack: Stack) -> None:
    admin_context, admin = await signed_in(stack, ADMIN, ADMIN_PAGE)
    problems: list[str] = []
    watch_for_errors(admin, problems)
    user_context = None
    try:
        # ---- statistics, with the admin's name in the header
        await admin.locator("#stats").wait_for()
        assert (await admin.text_content(".user-name") or "").strip() == ADMIN
        realm = admin.locator("#stats tr", has_text="Realm").locator("td")
        assert await realm.text_content() == stack.realm
        users_count = admin.locator("#stats tr", has_text="Total users").locator("td")
        assert await users_count.text_content() == "0"
        await screenshot(admin, "admin-01-stats")

        # ---- a new user
        await _open(admin, "Users", "Users")
        await admin.get_by_role("button", name="Create New Entry").click()
        await _dialog(admin).locator("#user-name").fill(USER)
        await screenshot(admin, "admin-02-new-user")
        await _footer_button(admin, "Submit")
        await _row(admin, USER).wait_for()
        await _dialog(admin).wait_for(state="detached")
        await screenshot(admin, "admin-03-users")

        # ---- an application; the same one again is refused in the dialog
        await _open(admin, "Applications", "Applications")
        await admin.get_by_role("button", name="Create New Entry").click()
        await admin.fill("#image-name", WEBAPP)
        await _footer_button(admin, "Submit")
        row = _row(admin, WEBAPP)
        await row.wait_for()
        assert await row.locator(".badge").text_content() == "Available"
        assert await row.locator(".app-cell-name").text_content() == "Demo web app"
        await screenshot(admin, "admin-04-applications")

        await admin.get_by_role("button", name="Create New Entry").click()
        await admin.fill("#image-name", WEBAPP)
        await _footer_button(admin, "Submit")
        refusal = _dialog(admin).locator(".alert-danger")
        await refusal.wait_for()
        assert "already exists" in (await refusal.text_content() or "")
        await screenshot(admin, "admin-05-duplicate-application")
        await _footer_button(admin, "Cancel")
        await _dialog(admin).wait_for(state="detached")
        assert await _row(admin, WEBAPP).count() == 1

        # ---- a policy for carol
        await _open(admin, "Users", "Users")
        await _row_button(admin, USER, "Policies").click()
        await admin.wait_for_url(re.compile(r"#/users/\d+/accounting$"))
        await admin.locator(".box-title", has_text=f"Policies of {USER}").wait_for()
        await admin.get_by_role("button", name="Create New Entry").click()
        dialog = _dialog(admin)
        await dialog.locator("#image_name").select_option(WEBAPP)
        await dialog.locator("#allow_home").check()
        # A volume needs both paths: one alone is refused before anything is sent.
        shared = str(stack.database.parent / "shared")
        await dialog.locator("#volume_source").fill("/var/run/docker.sock")
        await _footer_button(admin, "Submit")
        await dialog.locator(".alert-danger", has_text="Volume target").wait_for()
        await dialog.locator("#volume_target").fill("/mnt/shared")
        # The engine's socket (or anything outside the volume roots) is refused by the service.
        await _footer_button(admin, "Submit")
        await dialog.locator(".alert-danger", has_text="Docker socket").wait_for()
        await dialog.locator("#volume_source").fill(shared)
        await dialog.locator("#allow_view").check()
        await screenshot(admin, "admin-06-new-policy")
        await _footer_button(admin, "Submit")
        policy = _row(admin, WEBAPP)
        await policy.wait_for()
        cells = await policy.locator("td").all_text_contents()
        assert cells[3:7] == ["Yes", f"{shared} → /mnt/shared (read-only)", "Yes", "No"]
        await screenshot(admin, "admin-07-policies")

        # ---- carol starts it
        user_context, user = await signed_in(stack, USER)
        entry = user.locator("#applistentries .app-entry", has_text="Demo web app")
        await entry.click()
        await user.click("#start-button")
        shown = user.frame_locator("#application")
        await shown.locator("#user").wait_for(timeout=START_TIMEOUT_MS)
        assert await shown.locator("#user").text_content() == USER
        # Not an admin: no way to the admin page on her page.
        assert await user.locator("[data-admin-only]").count() == 0

        # ---- the admin sees it among the containers and stops it
        await _open(admin, "Containers", "Containers")
        container = _row(admin, USER)
        await container.wait_for()
        assert await container.locator("td").nth(2).text_content() == WEBAPP
        assert await container.locator("td").nth(5).text_content() == "Running"
        # Holding the address lets nobody in without a share: the admin enters someone
        # else's session only once they confirm it (and the entry is in the audit trail).
        link = await container.get_by_role("link", name="Open").get_attribute("href")
        assert link is not None
        assert re.fullmatch(rf"/user/{USER}/containers/[a-z0-9]+/", link)
        peek = await admin_context.new_page()
        opened = await peek.goto(stack.url(link))
        assert opened is not None
        assert opened.ok
        assert USER in (await peek.locator("#enter-title").text_content() or "")
        await peek.click("#enter-confirm")
        await peek.locator("#user").wait_for(timeout=START_TIMEOUT_MS)
        assert await peek.locator("#user").text_content() == USER
        await peek.close()
        await _open(admin, "Home", "Statistics")
        running = admin.locator("#stats tr", has_text="Running containers").locator("td")
        assert await running.text_content() == "1"
        await _open(admin, "Containers", "Containers")
        await screenshot(admin, "admin-08-containers")
        await _row_button(admin, USER, "Stop").click()
        assert "Do you want to stop container" in (await _dialog(admin).text_content() or "")
        await screenshot(admin, "admin-09-stop-confirmation")
        await _footer_button(admin, "Ok")
        await _row(admin, USER).wait_for(state="detached", timeout=START_TIMEOUT_MS)
        await admin.locator("#datatable .empty-row").wait_for()
        await screenshot(admin, "admin-10-container-stopped")

        # ---- carol's page shows it stopped
        await user.reload()
        entry = user.locator("#applistentries .app-entry", has_text="Demo web app")
        await entry.locator(".status", has_text="Stopped").wait_for()
        await entry.click()
        await user.locator("#start-button:enabled", has_text=re.compile(r"^Start$")).wait_for()
        await screenshot(user, "admin-11-user-sees-it-stopped")

        # ---- carol may not open the admin page
        refused = await user.goto(stack.url(ADMIN_PAGE))
        assert refused is not None
        assert refused.status == 403
        assert await user.locator("#adminoptions").count() == 0
        assert "403 Forbidden" in (await user.text_content("h1") or "")
        await screenshot(user, "admin-12-refused")

        # ---- an unknown user's policies are an error, not an empty list
        await admin.goto(stack.url(ADMIN_PAGE + "#/users/999/accounting"))
        alert = admin.locator(".alert-danger")
        await alert.wait_for()
        assert "999" in (await alert.text_content() or "")
        assert await admin.locator("#datatable").count() == 0
        await screenshot(admin, "admin-13-unknown-user")

        # ---- between the two pages
        await admin.goto(stack.url(ADMIN_PAGE))
        await admin.click("#user-page-link")
        await admin.wait_for_url(stack.url(PREFIX))
        await admin.click("#user-menu")
        await screenshot(admin, "admin-14-user-page-menu")
        await admin.get_by_role("link", name="Administration").click()
        await admin.wait_for_url(stack.url(ADMIN_PAGE))
        await admin.locator("#stats").wait_for()

        # ---- and everything removed again, each after confirmation
        await _open(admin, "Applications", "Applications")
        await _row_button(admin, WEBAPP, "Remove").click()
        await _footer_button(admin, "Cancel")
        assert await _row(admin, WEBAPP).count() == 1
        await _row_button(admin, WEBAPP, "Remove").click()
        await _footer_button(admin, "Ok")
        await _row(admin, WEBAPP).wait_for(state="detached")
        await _open(admin, "Users", "Users")
        await _row_button(admin, USER, "Remove").click()
        await _footer_button(admin, "Ok")
        await _row(admin, USER).wait_for(state="detached")
        await _open(admin, "Home", "Statistics")
        total = admin.locator("#stats tr", has_text="Total users").locator("td")
        assert await total.text_content() == "0"

        assert problems == []
    finally:
        await admin_context.close()
        if user_context is not None:
            await user_context.close()
