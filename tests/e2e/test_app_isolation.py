"""Applications never act with the service's origin: a hostile application in Chromium.

Everything is real (the hub, the proxy, Docker, the gate, Chromium), in both ways of serving
applications: on the service's origin (the default) and on hosts of their own
(``<url_id>.apps.example.localhost``; Chromium resolves ``*.localhost`` to loopback). A page
that an application serves tries to read the service's API and pages, and the cookies, in
the browser of its owner and of an admin: it gets nothing. noVNC and the web app still work.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import pytest_asyncio
import structlog

from tests.support.browser import screenshot, watch_for_errors
from tests.support.hostile_image import HOSTILE_IMAGE, ensure_hostile_image
from tests.support.stack import (
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
    from playwright.async_api import FrameLocator, Page

pytestmark = stack_marks(timeout=400)

START_TIMEOUT_MS = 60_000
ADMIN = "root"
OWNER = "alice"
# Names of the service's and the hub's cookies: none may show in document.cookie.
OUR_COOKIES = re.compile(r"remoteapp|_xsrf|jupyterhub")
MODES = {
    "shared-origin": {},
    "own-hosts": {
        "app_origin_template": "http://{url_id}.apps.example.localhost:{port}",
        "jupyterhub_public_url": "http://hub.example.localhost:{port}/",
    },
}
PUBLIC_HOSTS = {"shared-origin": "127.0.0.1", "own-hosts": "hub.example.localhost"}


def _fill_database(database: Path) -> None:
    remoteappdb(database, "init")
    remoteappdb(database, "user", "create", OWNER)
    for image in (HOSTILE_IMAGE, WEBAPP, VNCAPP):
        remoteappdb(database, "app", "create", image)
        remoteappdb(database, "app", "grant", image, OWNER)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=list(MODES))
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    require_everything()
    ensure_hostile_image()
    mode: str = request.param
    async with running_stack(
        tmp_path_factory.mktemp(mode),
        _fill_database,
        hub_admins=[ADMIN],
        public_host=PUBLIC_HOSTS[mode],
        settings=MODES[mode],
    ) as stack:
        yield stack


def _own_hosts(stack: Stack) -> bool:
    return not stack.public_url.startswith("http://127.0.0.1:")


async def _start(page: Page, name: str) -> tuple[FrameLocator, str]:
    """Start application ``name`` on the user page; its frame and its path."""
    await page.wait_for_selector("#loading-spinner", state="hidden")
    entry = page.locator("#applistentries .app-entry", has_text=name)
    await entry.click()
    await page.click("#start-button")
    await page.locator("#application").wait_for(timeout=START_TIMEOUT_MS)
    path = await page.get_attribute("#application", "src")
    assert path is not None
    # A desktop is shown by the service's viewer, under the desktop's own path.
    assert re.fullmatch(rf"/user/{OWNER}/containers/[a-z0-9]+/(\.remoteapp-desktop/)?", path), path
    return page.frame_locator("#application"), path


async def _report(where: Page | FrameLocator) -> dict[str, Any]:
    """What the hostile page got, once its script is done."""
    report = where.locator("#report")
    await report.filter(has_text=re.compile(r"\S")).wait_for(timeout=START_TIMEOUT_MS)
    result: dict[str, Any] = json.loads(await report.text_content() or "{}")
    return result


def _assert_got_nothing(
    report: dict[str, Any], stack: Stack, page_url: str, *, absolute: bool = True
) -> None:
    """Nothing of ours in what the script got; ``absolute``: it also knew the service's
    address (five paths on the page's own origin, and five there)."""
    cookie = report["cookie"]
    assert not OUR_COOKIES.search(cookie), cookie
    reads: dict[str, dict[str, Any]] = report["reads"]
    assert len(reads) == (10 if absolute else 5), reads
    for url, read in reads.items():
        assert not read.get("leaked"), (url, read)
        assert read["status"] != 200 or not url.startswith(stack.public_url), (url, read)
    if _own_hosts(stack):
        # From the application's own host the service is another origin: the browser
        # lets the script read nothing there.
        assert ".apps.example.localhost:" in page_url
        for url, read in reads.items():
            if url.startswith(stack.public_url):
                assert read == {"status": 0, "error": "TypeError"}, (url, read)
    else:
        # Same origin: the browser sends the cookies, and the service refuses.
        for url, read in reads.items():
            assert read["status"] == 403, (url, read)


async def test_a_hostile_page_gets_nothing_from_its_owner_or_an_admin(stack: Stack) -> None:
    owner_context, owner = await signed_in(stack, OWNER)
    admin_context, admin = await signed_in(stack, ADMIN)
    try:
        # The owner opens it on the user page, as always.
        frame, path = await _start(owner, "Hostile test app")
        _assert_got_nothing(await _report(frame), stack, owner.frames[-1].url, absolute=False)
        await screenshot(owner, f"isolation-{PUBLIC_HOSTS[_mode(stack)]}-owner-frame")

        # ... and on a page of its own, with the service's address for the script.
        target = stack.url(path) + "?svc=" + quote(stack.public_url, safe="")
        hostile = await owner_context.new_page()
        await hostile.goto(target)
        _assert_got_nothing(await _report(hostile), stack, hostile.url)
        await hostile.close()

        # An admin following the link is asked first; nothing of the application runs.
        await admin.goto(target)
        title = admin.locator("#enter-title")
        assert await title.text_content() == f"You are about to enter {OWNER}'s session"
        assert await admin.locator("#report").count() == 0
        await screenshot(admin, f"isolation-{PUBLIC_HOSTS[_mode(stack)]}-admin-confirmation")
        with structlog.testing.capture_logs() as logs:
            await admin.click("#enter-confirm")
            report = await _report(admin)
        _assert_got_nothing(report, stack, admin.url)
        entered = [entry for entry in logs if entry["event"] == "enter"]
        assert len(entered) == 1, logs
        assert entered[0]["actor"] == ADMIN
        assert entered[0]["owner"] == OWNER
        assert entered[0]["url_id"] == path.rstrip("/").rsplit("/", 1)[1]
    finally:
        await owner_context.close()
        await admin_context.close()


async def test_the_desktop_and_the_web_app_still_work(stack: Stack) -> None:
    context, page = await signed_in(stack, OWNER)
    problems: list[str] = []
    watch_for_errors(page, problems)
    try:
        web, _path = await _start(page, "Demo web app")
        await web.locator("#user").wait_for(timeout=START_TIMEOUT_MS)
        assert await web.locator("#user").text_content() == OWNER
        if _own_hosts(stack):
            assert ".apps.example.localhost:" in page.frames[-1].url

        desktop, _path = await _start(page, "Demo desktop (xclock)")
        await desktop.locator("html.noVNC_connected").wait_for(timeout=START_TIMEOUT_MS)
        await desktop.locator("#noVNC_container canvas").wait_for()
        await screenshot(page, f"isolation-{PUBLIC_HOSTS[_mode(stack)]}-desktop")
        if _own_hosts(stack):
            assert ".apps.example.localhost:" in page.frames[-1].url
        # noVNC asks for its package.json (a version it shows), which the image leaves out.
        assert [p for p in problems if "package.json" not in p] == []
    finally:
        await context.close()


def _mode(stack: Stack) -> str:
    return "own-hosts" if _own_hosts(stack) else "shared-origin"
