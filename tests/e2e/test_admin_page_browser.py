"""The admin page in a real browser over in-memory fakes: hostile values stay text, errors show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.adapters.memory_identity import AUTHORIZE_PATH
from remoteappmanager.domain.audit import COUNT_AHEAD, AuditAction, NewEvent
from remoteappmanager.domain.models import Policy
from remoteappmanager.services import catalogue
from tests.support.browser import namespaced_chromium, screenshot
from tests.support.services import free_port
from tests.support.webapp import CALLBACK, PREFIX, World, make_app

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ADMIN_PAGE = PREFIX + "admin/"
NS = "eu.simphony-project.docker."
IMAGE = "remoteapp-test/hostile:latest"
HOSTILE_USER = '<img src=x onerror="window.pwned=1">'
HOSTILE_LABEL = "<script>window.pwned=2</script>"
HOSTILE_DESCRIPTION = '<img src=y onerror="window.pwned=3"> & "quotes"'
HOSTILE_LICENSE = "<b onmouseover=window.pwned=4>licence</b>"
HOSTILE_GROUP = '<img src=x onerror="window.pwned=5">'


@dataclass
class Site:
    url: str
    world: World
    user_id: int
    page: Page


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site() -> AsyncIterator[Site]:
    world = World()
    world.hub.add_user("root", admin=True)
    world.hub.add_user(HOSTILE_USER)
    world.runtime.add_image(
        IMAGE,
        {
            NS + "ui_name": HOSTILE_LABEL,
            NS + "description": HOSTILE_DESCRIPTION,
            NS + "icon_128": "javascript:alert(1)",
            NS + "type": "webapp",
        },
    )
    uow = world.database.unit_of_work
    user = await catalogue.create_user(uow, HOSTILE_USER)
    await catalogue.create_application(uow, IMAGE)
    grant = await catalogue.grant_access(uow, IMAGE, user.id, Policy(app_license=HOSTILE_LICENSE))

    @web.middleware
    async def hub(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The hub's authorize endpoint, for whoever signs in: always root.
        if request.path == AUTHORIZE_PATH:
            code = world.hub.approve("root", request.query["code_challenge"])
            raise web.HTTPFound(f"{CALLBACK}?code={code}&state={request.query['state']}")
        return await handler(request)

    app = make_app(world)
    app.middlewares.append(hub)
    assert world.sessions is not None
    await world.sessions.start(grant)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with namespaced_chromium([port]) as browser:
            # One page for the module: signed in once, through the fake hub.
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            yield Site(f"http://127.0.0.1:{port}", world, user.id, page)
            await context.close()
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def page(site: Site) -> AsyncIterator[Page]:
    page = site.page
    page.set_default_timeout(10_000)
    problems: list[str] = []

    def console(message: object) -> None:
        text = getattr(message, "text", "")
        if getattr(message, "type", "") == "error" and not text.startswith("Failed to load"):
            problems.append(text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    page.remove_listener("console", console)
    assert not problems, problems


async def _show(page: Page, site: Site, fragment: str) -> None:
    await page.goto(site.url + ADMIN_PAGE + fragment)
    await page.locator(".box").wait_for()
    await page.locator(".loading-line").wait_for(state="detached")


async def _not_pwned(page: Page) -> None:
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("script:not([src])").count() == 0
    assert await page.locator("img[src='x'], img[src='y'], b").count() == 0


# ------------------------------------------------------------------------------ escaping
async def test_hostile_names_and_labels_are_shown_as_text(page: Page, site: Site) -> None:
    await _show(page, site, "#/users")
    assert await page.locator("#datatable td", has_text="onerror").text_content() == HOSTILE_USER
    await _not_pwned(page)

    await _show(page, site, "#/applications")
    assert await page.locator(".app-cell-name").text_content() == HOSTILE_LABEL
    assert await page.locator(".app-cell-description").text_content() == HOSTILE_DESCRIPTION
    # An icon that is not a base64 PNG is replaced by the default one.
    icon = await page.locator(".app-cell img").get_attribute("src")
    assert icon is not None
    assert icon.startswith(PREFIX + "static/app-icon.svg")
    await screenshot(page, "admin-15-hostile-values")
    await _not_pwned(page)

    await _show(page, site, f"#/users/{site.user_id}/accounting")
    assert await page.locator(".box-title").text_content() == f"Policies of {HOSTILE_USER}"
    assert await page.locator("#datatable td", has_text="licence").text_content() == (
        HOSTILE_LICENSE
    )
    await _not_pwned(page)

    await _show(page, site, "#/containers")
    assert await page.locator("#datatable td", has_text="onerror").text_content() == HOSTILE_USER
    await page.locator("#datatable button", has_text="Stop").click()
    message = await page.locator("dialog[open] .confirm-message").text_content()
    assert message is not None
    assert HOSTILE_USER in message
    await page.locator("dialog[open]").get_by_role("button", name="Cancel").click()
    await _not_pwned(page)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("fragment", "says"),
    [
        ("#/users/abc/accounting", "a user id is a number"),
        ("#/users/4242/accounting", "no user with id 4242"),
        ("#/nowhere", "There is no such page here"),
    ],
)
async def test_bad_addresses_show_an_error(
    page: Page, site: Site, fragment: str, says: str
) -> None:
    await _show(page, site, fragment)
    alert = page.locator(".alert-danger")
    assert says in (await alert.text_content() or "")
    assert await page.locator("#datatable").count() == 0


async def test_a_refused_policy_keeps_the_dialog_open_with_the_reason(
    page: Page, site: Site
) -> None:
    await _show(page, site, f"#/users/{site.user_id}/accounting")
    await page.get_by_role("button", name="Create New Entry").click()
    dialog = page.locator("dialog[open]")
    await dialog.locator("#volume_source").fill("relative/path")
    await dialog.locator("#volume_target").fill("/data")
    await dialog.get_by_role("button", name="Submit").click()
    await dialog.locator(".alert-danger", has_text="absolute path").wait_for()
    # Editing the form clears the complaint; Cancel sends nothing.
    await dialog.locator("#volume_source").fill("/srv/data")
    assert await dialog.locator(".alert-danger").is_hidden()
    await dialog.get_by_role("button", name="Cancel").click()
    await dialog.wait_for(state="detached")
    assert len(await catalogue.list_grants(site.world.database.unit_of_work)) == 1


@pytest.mark.parametrize(
    ("source", "target", "says"),
    [
        ("/var/run/docker.sock", "/var/run/docker.sock", "Docker socket"),
        ("/etc", "/data", "never mounted"),
        ("/home/someone", "/data", "outside the folders grants may mount"),
        ("/data/project", "/proc/sys", "volume target"),
    ],
)
async def test_a_dangerous_volume_is_refused_with_the_reason_and_nothing_is_written(
    page: Page, site: Site, source: str, target: str, says: str
) -> None:
    await _show(page, site, f"#/users/{site.user_id}/accounting")
    await page.get_by_role("button", name="Create New Entry").click()
    dialog = page.locator("dialog[open]")
    await dialog.locator("#volume_source").fill(source)
    await dialog.locator("#volume_target").fill(target)
    await dialog.get_by_role("button", name="Submit").click()

    await dialog.locator(".alert-danger", has_text=says).wait_for()
    await dialog.get_by_role("button", name="Cancel").click()
    await dialog.wait_for(state="detached")
    assert len(await catalogue.list_grants(site.world.database.unit_of_work)) == 1


# ------------------------------------------------------------------------------ activity
async def test_the_activity_view_lists_filters_and_pages_the_audit_trail(
    page: Page, site: Site
) -> None:
    # Signed in first: root's sign-in is an event too, and must not be the newest.
    await _show(page, site, "#/")
    for number in range(60):
        site.world.audit.record("=formula", "grant", f"m{number}", {"image": HOSTILE_LABEL})

    await _show(page, site, "#/activity")

    rows = page.locator("#datatable tbody tr")
    assert await rows.count() == 50
    status = await page.locator(".pager-status").text_content()
    assert status is not None
    assert status.startswith("1\u201350 of ")
    # The newest first: the last grant recorded tops the list; hostile values stay text.
    first = rows.first.locator("td")
    assert await first.nth(1).text_content() == "=formula"
    assert await first.nth(3).text_content() == "m59"
    assert HOSTILE_LABEL in (await first.nth(4).text_content() or "")
    await _not_pwned(page)

    await page.get_by_role("button", name="Next").click()
    await page.locator(".pager-status", has_text="51\u2013").wait_for()

    await page.locator("#activity-action").select_option("start")
    await page.get_by_role("button", name="Filter").click()
    await page.locator(".pager-status", has_text="of 1").wait_for()
    cells = page.locator("#datatable tbody tr td")
    assert await cells.nth(1).text_content() == HOSTILE_USER
    assert await cells.nth(2).text_content() == "start"
    await screenshot(page, "admin-16-activity")
    await _not_pwned(page)
    csv_link = await page.locator("#activity-csv").get_attribute("href")
    assert csv_link is not None
    assert "format=csv" in csv_link
    assert "action=start" in csv_link


async def test_a_long_audit_trail_is_paged_with_its_count_as_a_lower_bound(
    page: Page, site: Site
) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    await site.world.events.append(
        [
            NewEvent.of(moment, "pager", AuditAction.LOGIN, f"t{n}", {})
            for n in range(COUNT_AHEAD + 200)
        ]
    )

    await _show(page, site, "#/activity")
    # A fresh page: no filter left from an earlier test of this module.
    await page.reload()
    await page.locator(".loading-line").wait_for(state="detached")
    status = page.locator(".pager-status")
    # Counted up to COUNT_AHEAD past the page: the view says "at least", and pages on.
    await status.filter(has_text=f"1\u201350 of at least {50 + COUNT_AHEAD + 1}").wait_for()
    await page.get_by_role("button", name="Next").click()
    await status.filter(has_text=f"51\u2013100 of at least {100 + COUNT_AHEAD + 1}").wait_for()
    assert await page.locator("#datatable tbody tr").count() == 50
    await page.get_by_role("button", name="Previous").click()
    await status.filter(has_text=f"1\u201350 of at least {50 + COUNT_AHEAD + 1}").wait_for()
    await screenshot(page, "admin-17-activity-long-trail")


# ------------------------------------------------------------------------------ paging
async def test_users_are_paged_and_searched(page: Page, site: Site) -> None:
    uow = site.world.database.unit_of_work
    for number in range(60):
        await catalogue.create_user(uow, f"pager{number:02d}")

    await _show(page, site, "#/users")
    assert await page.locator("#datatable tbody tr").count() == 50
    await page.get_by_role("button", name="Next").click()
    await page.locator(".pager-status", has_text="51\u2013").wait_for()

    await page.locator("#users-name").fill("PAGER5")
    await page.get_by_role("button", name="Filter").click()
    await page.locator(".pager-status", has_text="of 10").wait_for()
    names = await page.locator("#datatable tbody tr td:nth-child(2)").all_text_contents()
    assert names == [f"pager5{n}" for n in range(10)]
    await page.locator("#users-name").fill("")
    await page.get_by_role("button", name="Filter").click()


async def test_the_containers_view_refreshes_itself(page: Page, site: Site) -> None:
    await _show(page, site, "#/containers")
    before = await page.locator("#datatable tbody tr").count()
    uow = site.world.database.unit_of_work
    grant = await catalogue.grant_access(uow, IMAGE, site.user_id, Policy(allow_home=True))
    assert site.world.sessions is not None
    session = await site.world.sessions.start(grant)

    # No click: the view asks again within its refresh interval.
    await page.locator(f"#datatable tr[data-id='{session.url_id}']").wait_for(timeout=8_000)
    assert await page.locator("#datatable tbody tr").count() == before + 1
    await page.locator("#containers-user").fill("nobody")
    await page.get_by_role("button", name="Filter").click()
    await page.locator(".empty-row").wait_for()
    await page.locator("#containers-user").fill("")
    await page.get_by_role("button", name="Filter").click()


# ------------------------------------------------------------------------------ group policies
async def test_a_policy_is_given_to_a_hub_group_and_removed(page: Page, site: Site) -> None:
    users_grants = await catalogue.list_grants(site.world.database.unit_of_work)
    await _show(page, site, "#/users")
    await page.get_by_role("button", name="Group Policies").click()
    dialog = page.locator("dialog[open]")
    await dialog.locator("#group").fill(HOSTILE_GROUP)
    await dialog.get_by_role("button", name="Submit").click()
    await dialog.wait_for(state="detached")
    await page.locator(".loading-line").wait_for(state="detached")
    await page.get_by_role("heading", name=f"Policies of group {HOSTILE_GROUP}").wait_for()

    await page.get_by_role("button", name="Create New Entry").click()
    dialog = page.locator("dialog[open]")
    await dialog.locator("#allow_view").check()
    await dialog.get_by_role("button", name="Submit").click()
    await dialog.wait_for(state="detached")
    await page.locator("td", has_text=IMAGE).wait_for()
    uow = site.world.database.unit_of_work
    (granted,) = await catalogue.list_group_grants(uow)
    assert (granted.group, granted.application.image) == (HOSTILE_GROUP, IMAGE)
    assert granted.policy.allow_view
    await _not_pwned(page)

    await page.get_by_role("button", name="Remove").click()
    dialog = page.locator("dialog[open]")
    await dialog.get_by_role("button", name="Ok").click()
    await dialog.wait_for(state="detached")
    await page.locator("td", has_text=IMAGE).wait_for(state="detached")
    assert await catalogue.list_group_grants(uow) == []
    # The users' own policies are untouched.
    assert await catalogue.list_grants(uow) == users_grants
