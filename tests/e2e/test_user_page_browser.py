"""The user page in a real browser, over the real service with a stand-in API and hub."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from aiohttp import web

from tests.e2e.fake_api import FakeBackend, image, policy
from tests.support.browser import namespaced_chromium, screenshot, watch_for_errors
from tests.support.services import REPO, free_port
from tests.support.webapp import PREFIX, World, make_app

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

WEBAPP_ICON = base64.b64encode((REPO / "images" / "webapp" / "icon.png").read_bytes()).decode()
VNCAPP_ICON = base64.b64encode((REPO / "images" / "vncapp" / "icon.png").read_bytes()).decode()
HOSTILE = '<img src=x onerror="window.pwned=1">'


@dataclass
class Site:
    url: str
    backend: FakeBackend
    browser: Browser
    world: World


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site() -> AsyncIterator[Site]:
    world = World()
    world.hub.add_user("alice")
    backend = FakeBackend(world.hub)
    app = make_app(world)
    app.middlewares.append(backend.middleware)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with namespaced_chromium([port]) as browser:
            yield Site(f"http://127.0.0.1:{port}", backend, browser, world)
    finally:
        await runner.cleanup()


@pytest.fixture
def backend(site: Site) -> FakeBackend:
    site.backend.applications.clear()
    site.backend.starts.clear()
    site.backend.csrf_headers.clear()
    site.backend.start_delay = 0.0
    site.backend.start_error = None
    site.backend.start_steps = []
    site.backend.expires_in = None
    site.backend.activity.clear()
    return site.backend


@pytest_asyncio.fixture(loop_scope="module")
async def page(site: Site, backend: FakeBackend) -> AsyncIterator[Page]:
    context = await site.browser.new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    watch_for_errors(page, problems)
    try:
        yield page
        assert not problems, problems
    finally:
        await context.close()


def _catalogue(backend: FakeBackend) -> dict[str, Any]:
    web_app = backend.add(
        image(
            "remoteapp-demo/webapp:latest",
            "Demo web app",
            description="A tiny web page.",
            icon=WEBAPP_ICON,
        ),
        policy(allow_home=True),
    )
    desktop = backend.add(
        image(
            "remoteapp-demo/vncapp:latest",
            "Another desktop",
            description="xclock on a VNC desktop.",
            type="vncapp",
            icon=VNCAPP_ICON,
            configurables=("resolution", "startupdata"),
        ),
        policy(
            allow_home=True,
            allow_view=True,
            allow_startup_data=True,
            volume_source="/srv/data",
            volume_target="/data",
            volume_mode="ro",
        ),
    )
    broken = backend.add(
        image("x/broken-icon", "Zebra tool", icon="not base64!"), policy(allow_view=True)
    )
    return {"web": web_app, "desktop": desktop, "broken": broken}


async def _open(page: Page, site: Site, fragment: str = "", *, settled: bool = True) -> None:
    await page.goto(site.url + PREFIX + fragment)
    await page.wait_for_selector("#applistentries li")
    if settled:
        await page.wait_for_selector("#loading-spinner", state="hidden")


async def _names(page: Page) -> list[str]:
    return await page.locator("#applistentries .app-name").all_text_contents()


# ------------------------------------------------------------------------------ the list
async def test_the_list_is_sorted_searchable_and_describes_each_application(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    _catalogue(backend)
    await _open(page, site)
    assert await _names(page) == ["Another desktop", "Demo web app", "Zebra tool"]
    desktop = page.locator("#application-entry-0")
    assert await desktop.locator(".status").text_content() == "Stopped"
    chips = await desktop.locator(".chip").all_text_contents()
    assert chips == ["Desktop", "Workspace → /workspace", "/srv/data → /data (read-only)"]
    assert (await desktop.locator("img").get_attribute("src") or "").startswith(
        "data:image/png;base64,iVBOR"
    )
    # An icon that is not base64 is never used as one.
    broken_icon = await page.locator("#application-entry-2 img").get_attribute("src") or ""
    assert broken_icon.startswith(PREFIX + "static/app-icon.svg?v=")
    assert await page.text_content("#user-menu") is not None
    await screenshot(page, "fake-01-list")

    await page.fill("#search-input", "TINY")  # descriptions count, case aside
    assert await _names(page) == ["Demo web app"]
    assert await page.locator("#application-entry-0 .app-name").text_content() == "Demo web app"
    await page.fill("#search-input", "zebra")
    assert await _names(page) == ["Zebra tool"]
    await page.fill("#search-input", "nothing like this")
    assert await _names(page) == []
    assert "No application matches" in (await page.text_content("#applist-message") or "")
    await page.fill("#search-input", "")
    assert len(await _names(page)) == 3


async def test_keyboard_reaches_and_opens_an_entry(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    _catalogue(backend)
    await _open(page, site)
    await page.focus("#search-input")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    assert await page.evaluate("document.activeElement.id") == "application-entry-1"
    await page.keyboard.press("Enter")
    assert await page.locator("#application-entry-1").get_attribute("aria-current") == "true"
    assert await page.evaluate("document.activeElement.id") == "start-button"


# ------------------------------------------------------------------------------ start, quit
async def test_start_show_reload_and_quit_a_web_application(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    backend.start_delay = 1.0
    await _open(page, site)
    await page.click("#application-entry-1")
    settings = page.locator("#application-settings")
    assert "/workspace" in (await settings.text_content() or "")
    assert await page.locator("#resolution-select").count() == 0
    assert await page.text_content("#start-button") == "Start"

    await page.click("#start-button")
    await page.wait_for_selector("#loading-spinner", state="visible")
    assert await page.locator("#application-entry-1 .status").text_content() == "Starting"
    await screenshot(page, "fake-02-starting")
    frame = page.frame_locator("#application")
    await frame.locator("#fake-app").wait_for()
    assert await frame.locator("#fake-app").text_content() == "Inside Demo web app"
    assert await page.locator("#application-entry-1 .status").text_content() == "Running"
    assert await page.evaluate("document.activeElement.id") == "application"
    assert await page.locator("#share-button").count() == 0  # no allow_view
    assert backend.starts == [(apps["web"].mapping_id, {})]
    assert backend.csrf_headers == [await page.get_attribute("meta[name=xsrf-token]", "content")]
    await screenshot(page, "fake-03-running")

    # The state comes from the API: a reload shows the same.
    await page.reload()
    await page.frame_locator("#application").locator("#fake-app").wait_for()
    assert await page.locator("#application-entry-1 .status").text_content() == "Running"

    await page.click("#quit-button")
    dialog = page.locator("dialog[open]")
    assert await dialog.locator("footer button").all_text_contents() == ["Cancel", "Ok"]
    await screenshot(page, "fake-04-quit-dialog")
    await dialog.get_by_role("button", name="Cancel").click()
    assert await page.locator("#application").count() == 1
    await page.click("#quit-button")
    await page.locator("dialog[open]").get_by_role("button", name="Ok").click()
    await page.wait_for_selector("#start-button")
    assert await page.text_content("#start-button") == "Start"
    assert await page.locator("#application-entry-1 .status").text_content() == "Stopped"
    assert apps["web"].container is None


async def test_desktop_settings_fit_the_window_and_pass_the_startup_file(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    await _open(page, site, "#" + apps["desktop"].mapping_id)
    # The fragment selected the entry.
    assert await page.locator("#application-entry-0").get_attribute("aria-current") == "true"
    options = await page.locator("#resolution-select option").all_text_contents()
    assert options[0] == "Fit window"
    assert "1920 \N{MULTIPLICATION SIGN} 1080" in options
    await page.fill("#startupdata-input", "/data/input.txt")
    await screenshot(page, "fake-05-desktop-settings")
    await page.click("#start-button")
    frame_box = None
    await page.frame_locator("#application").locator("#fake-app").wait_for()
    frame_box = await page.locator("#application").bounding_box()
    assert frame_box is not None
    ((mapping_id, configurables),) = backend.starts
    assert mapping_id == apps["desktop"].mapping_id
    assert configurables["startupdata"] == {"startupdata": "/data/input.txt"}
    width, height = map(int, configurables["resolution"]["resolution"].split("x"))
    assert abs(width - frame_box["width"]) <= 2
    assert abs(height - frame_box["height"]) <= 2

    await page.click("#application-entry-0")  # selecting it again keeps the frame
    assert await page.locator("#application").count() == 1


async def test_a_chosen_resolution_is_sent_as_is(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    await _open(page, site, "#" + apps["desktop"].mapping_id)
    await page.select_option("#resolution-select", "1280x800")
    await page.click("#start-button")
    await page.wait_for_selector("#application")
    assert backend.starts == [
        (apps["desktop"].mapping_id, {"resolution": {"resolution": "1280x800"}})
    ]


async def test_share_shows_an_absolute_link_to_copy(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    await _open(page, site, "#" + apps["desktop"].mapping_id)
    await page.click("#start-button")
    await page.wait_for_selector("#share-button")
    await page.click("#share-button")
    shared = await page.input_value("#shared-url")
    container = apps["desktop"].container
    assert container is not None
    # The link is the viewer's page of the session, and works at once: a link share to view.
    assert shared == f"{site.url}{PREFIX}?view={container['url_id']}"
    assert [
        {key: share[key] for key in ("link", "mode")}
        for share in backend.shares[container["url_id"]]
    ] == [{"link": True, "mode": "view"}]
    assert await page.locator("#share-list .share-entry").count() == 1
    await page.click("#cp-clipboard-button")
    # A locator, not wait_for_function: its string predicate is an eval the page's CSP refuses.
    await page.locator("dialog[open] .copy-feedback", has_text="Copied").wait_for()
    assert await page.evaluate("navigator.clipboard.readText()") == shared
    await screenshot(page, "fake-06-share")
    await page.locator("dialog[open]").get_by_role("button", name="Close").click()
    assert await page.locator("dialog[open]").count() == 0


async def test_errors_show_the_apis_message_in_a_dialog(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    _catalogue(backend)
    backend.start_error = "Demo web app could not be started: the application exited"
    await _open(page, site)
    await page.click("#application-entry-1")
    await page.click("#start-button")
    dialog = page.locator("dialog[open]")
    await dialog.wait_for()
    assert await dialog.locator(".error-message").text_content() == backend.start_error
    await screenshot(page, "fake-07-error")
    await dialog.get_by_role("button", name="Close").click()
    assert await page.text_content("#start-button") == "Start"
    assert await page.locator("#application-entry-1 .status").text_content() == "Stopped"


async def test_a_start_shows_its_steps_as_they_happen(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    backend.start_steps = ["creating", "starting", "waiting for the app", "routing"]
    backend.start_delay = 4.0
    await _open(page, site, "#" + apps["web"].mapping_id)
    await page.click("#start-button")
    steps = page.locator("#start-steps")
    current = steps.locator("li[aria-current=step]")
    await steps.locator("li[aria-current=step][data-step='waiting for the app']").wait_for()
    assert await current.text_content() == "Waiting for the application to answer"
    assert await steps.locator("li.step-done").all_text_contents() == [
        "Creating the container",
        "Starting it",
    ]
    await screenshot(page, "fake-06b-start-steps")
    await page.frame_locator("#application").locator("#fake-app").wait_for()
    assert await steps.is_hidden()


async def test_pulling_the_image_shows_as_a_step_only_while_it_lasts(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    backend.start_steps = ["creating", "starting", "pulling the image", "waiting for the app"]
    backend.start_delay = 4.0
    await _open(page, site, "#" + apps["web"].mapping_id)
    await page.click("#start-button")
    steps = page.locator("#start-steps")
    pulling = steps.locator("li[data-step='pulling the image']")

    await steps.locator("li[aria-current=step][data-step='pulling the image']").wait_for()
    assert await pulling.text_content() == "Pulling the image onto the node"
    assert await steps.locator("li.step-done").all_text_contents() == [
        "Creating the container",
        "Starting it",
    ]
    await steps.locator("li[aria-current=step][data-step='waiting for the app']").wait_for()
    assert await pulling.count() == 0
    await page.frame_locator("#application").locator("#fake-app").wait_for()


async def test_a_failed_start_names_its_step_and_leaves_the_page_startable(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    backend.start_steps = ["creating", "waiting for the app"]
    backend.start_delay = 1.0
    backend.start_error = (
        "Demo web app could not be started (step: waiting for the app): the application did "
        "not become ready within 30 s"
    )
    await _open(page, site, "#" + apps["web"].mapping_id)
    await page.click("#start-button")
    dialog = page.locator("dialog[open]")
    await dialog.wait_for(timeout=15_000)
    assert await dialog.locator(".error-message").text_content() == backend.start_error
    await dialog.get_by_role("button", name="Close").click()
    assert await page.locator("#start-steps").is_hidden()
    assert await page.text_content("#start-button") == "Start"


async def test_applications_being_started_elsewhere_are_followed_until_running(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    apps = _catalogue(backend)
    url_id = "a" * 32
    apps["web"].container = {
        "url_id": url_id,
        "urlpath": f"/user/alice/containers/{url_id}",
        "state": "starting",
        "step": "starting",
    }
    await _open(page, site, "#" + apps["web"].mapping_id, settled=False)
    assert await page.locator("#application-entry-1 .status").text_content() == "Starting"
    assert await page.is_visible("#loading-spinner")
    assert await page.text_content("#start-steps li[aria-current=step]") == "Starting it"
    apps["web"].container = {**apps["web"].container, "state": "running"}
    await page.frame_locator("#application").locator("#fake-app").wait_for()
    assert await page.locator("#application-entry-1 .status").text_content() == "Running"


# ------------------------------------------------------------------------------ safety, menu
async def test_limits_show_before_a_start_and_the_time_left_once_it_runs_short(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    app = backend.add(
        image("remoteapp-demo/webapp:latest", "Timed app"),
        policy(idle_timeout_s=600, max_lifetime_s=7200),
    )
    app.limits = {"memory_limit_mb": 128, "cpu_limit": 0.5, "pids_limit": 64}
    app.last_stop = {
        "url_id": "a" * 26,
        "stop_reason": "oom",
        "message": "out of memory",
        "stopped_at": "2026-12-04T12:00:00Z",
    }
    await _open(page, site, "#" + app.mapping_id)
    details = await page.locator(".details").inner_text()
    assert "128 MiB memory, 0.5 CPUs, 64 processes" in details
    assert "stops after 10 min without input; stops 2 h after its start" in details
    assert await page.locator("#last-stop").inner_text() == (
        "Your last session ended: out of memory."
    )

    backend.expires_in = 90
    await page.click("#start-button")
    await page.wait_for_selector("#time-left:not([hidden])")
    assert re.fullmatch(r"Stops in 1:[23]\d", await page.locator("#time-left").inner_text())
    # Keep working counts as input: the deadline moves beyond the warning.
    backend.expires_in = 3600
    await page.click("#keep-working")
    await page.wait_for_selector("#time-left", state="hidden")
    assert await page.locator("#keep-working").is_hidden()
    assert app.container is not None
    assert backend.activity == [app.container["url_id"]]
    assert backend.csrf_headers[-1]


async def test_hostile_labels_stay_text(page: Page, site: Site, backend: FakeBackend) -> None:
    backend.add(image("evil", HOSTILE, description=HOSTILE, icon='x" onerror="1'), policy())
    await _open(page, site)
    assert await _names(page) == [HOSTILE]
    assert await page.locator("#applistentries img[onerror]").count() == 0
    assert await page.locator("#applistentries img").count() == 1
    await page.click("#application-entry-0")
    assert await page.locator("h1.toolbar-title").text_content() == HOSTILE
    assert await page.evaluate("window.pwned") is None


async def test_a_card_names_the_hub_group_its_grant_comes_through(
    page: Page, site: Site, backend: FakeBackend
) -> None:
    mine = backend.add(image("mine", "Mine"), policy())
    shared = backend.add(image("shared", "Shared"), policy())
    shared.source_group = HOSTILE
    await _open(page, site)
    assert await _names(page) == ["Mine", "Shared"]
    groups = page.locator("#applistentries .app-group")
    assert await groups.all_text_contents() == [f"Through group {HOSTILE}"]
    assert mine.source_group is None
    assert await page.evaluate("window.pwned") is None


async def test_sign_out_from_the_user_menu(page: Page, site: Site, backend: FakeBackend) -> None:
    await page.goto(site.url + PREFIX)
    await page.wait_for_selector("#loading-spinner", state="hidden")
    assert "You have no applications yet" in (await page.text_content("#applist-message") or "")
    assert not await page.is_visible("#logout")
    await page.click("#user-menu")
    assert re.search(r"Signed in as\s+alice", await page.text_content("#user-menu-items") or "")
    await screenshot(page, "fake-08-user-menu")
    await page.click("#logout")
    await page.wait_for_url(re.compile(r"/hub/logout$"))
    # Our session is gone: the page asks the hub again.
    response = await page.request.get(site.url + PREFIX + "api/v1/user")
    assert response.status == 401
