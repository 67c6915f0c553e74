"""The admin page: who may see it, what it is made of, its security headers and scripts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.web.auth import XSRF_COOKIE
from remoteappmanager.web.pages import CONTENT_SECURITY_POLICY
from tests.support.webapp import (
    PREFIX,
    PageOutline,
    World,
    cookie,
    make_app,
    sign_in,
    static_text,
)

ADMIN_PAGE = PREFIX + "admin/"
STATIC = PREFIX + "static/"
HOSTILE = '<script>alert("x")</script>'
# Server-rendered ids the browser tests and the original product's automation rely on.
SERVER_RENDERED_IDS = (
    "adminoptions",
    "admin-view",
    "user-menu",
    "user-menu-items",
    "user",
    "logout",
    "user-page-link",
)


@pytest.fixture
def world() -> World:
    world = World()
    world.hub.add_user("alice")
    world.hub.add_user("root", admin=True)
    world.hub.add_user(HOSTILE, admin=True)
    world.hub.add_user("carol", groups=frozenset({"remoteapp-admins"}))
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world, admin_group="remoteapp-admins"))


async def _admin_page(client: TestClient[Any, Any]) -> tuple[Any, str, PageOutline]:
    response = await client.get(ADMIN_PAGE)
    text = await response.text()
    return response, text, PageOutline(text)


# ------------------------------------------------------------------------------ who sees it
async def test_anonymous_visitors_sign_in_and_come_back_to_the_admin_page(
    client: TestClient[Any, Any], world: World
) -> None:
    response = await client.get(ADMIN_PAGE, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/hub/api/oauth2/authorize?")
    landed = await sign_in(client, world, "root", page=ADMIN_PAGE)
    assert landed == ADMIN_PAGE


async def test_admins_get_the_page_with_their_name_and_every_element_id(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    response, text, page = await _admin_page(client)
    assert response.status == 200
    assert response.content_type == "text/html"
    assert set(SERVER_RENDERED_IDS) <= page.ids.keys()
    assert 'Signed in as <strong id="user">root</strong>.' in text
    assert '<span class="user-name">root</span>' in text
    assert page.meta["remoteapp-admin-api"] == PREFIX + "api/v1/admin/"
    assert page.meta["xsrf-token"] == cookie(client, XSRF_COOKIE)
    # The way back to the user page.
    assert page.ids["user-page-link"] == "a"
    assert f'id="user-page-link" class="topbar-link" href="{PREFIX}"' in text
    for view in ("#/", "#/containers", "#/users", "#/applications", "#/activity"):
        assert view in page.links


async def test_members_of_the_admin_group_get_the_page(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "carol")
    response, _, page = await _admin_page(client)
    assert response.status == 200
    assert "adminoptions" in page.ids


async def test_other_users_get_a_403_page_not_the_admin_ui(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    response, text, page = await _admin_page(client)
    assert response.status == 403
    assert response.content_type == "text/html"
    assert "403 Forbidden" in text
    assert "administrator" in text
    assert "adminoptions" not in page.ids
    assert page.scripts == []
    assert "remoteapp-admin-api" not in page.meta


async def test_a_revoked_admin_flag_closes_the_page_once_the_hub_answer_expires(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    assert (await client.get(ADMIN_PAGE)).status == 200
    world.hub.set_admin("root", False)
    world.hub_changed()
    assert (await client.get(ADMIN_PAGE)).status == 403


async def test_the_admin_page_without_its_slash_redirects(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get(ADMIN_PAGE.rstrip("/"), allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == ADMIN_PAGE


async def test_the_user_page_links_admins_to_the_admin_page(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    text = await (await client.get(PREFIX)).text()
    assert re.search(rf'<a class="menu-item" data-admin-only href="{ADMIN_PAGE}">', text)
    assert 'data-admin="true"' in text
    # For everybody else the script removes the link (and the style hides it meanwhile).
    assert 'querySelectorAll("[data-admin-only]")' in static_text("app.js")
    assert 'body:not([data-admin="true"]) [data-admin-only]' in static_text("app.css")


# ------------------------------------------------------------------------------ headers
async def test_the_page_has_the_strict_content_security_policy(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    response, _, page = await _admin_page(client)
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    directives = {part.split()[0]: part.split()[1:] for part in CONTENT_SECURITY_POLICY.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Only our own, versioned files: no inline script or style for the policy to allow.
    assert len(page.scripts) == 1
    assert page.scripts[0].startswith(STATIC + "admin.js?v=")
    assert [style.split("?")[0] for style in page.styles] == [
        STATIC + "app.css",
        STATIC + "admin.css",
    ]


async def test_the_pages_scripts_and_styles_are_served(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    _, _, page = await _admin_page(client)
    for url in (*page.scripts, *page.styles, STATIC + "common.js"):
        response = await client.get(url)
        assert response.status == 200, url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    common = await client.get(STATIC + "common.js")
    assert common.content_type == "text/javascript"


# ------------------------------------------------------------------------------ escaping
async def test_hostile_admin_names_are_inert(client: TestClient[Any, Any], world: World) -> None:
    await sign_in(client, world, HOSTILE)
    response, text, page = await _admin_page(client)
    assert response.status == 200
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert page.meta["remoteapp-user"] == HOSTILE
    assert len(page.scripts) == 1


@pytest.mark.parametrize("name", ["admin.js", "common.js", "app.js"])
def test_the_scripts_build_the_dom_without_parsing_html(name: str) -> None:
    script = static_text(name)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


def test_the_scripts_share_one_module_for_the_api_dialogs_and_dom() -> None:
    common = static_text("common.js")
    assert "textContent" in common
    assert '"X-XSRFToken"' in common
    for page in ("app.js", "admin.js"):
        script = static_text(page)
        assert 'from "./common.js"' in script, page
        # Each helper is defined once, in the shared module.
        for helper in ("function h(", "function openDialog(", "class ApiError", "X-XSRFToken"):
            assert helper not in script, (page, helper)


def test_the_admin_page_keeps_the_original_products_labels() -> None:
    # The original's browser automation clicks buttons by these labels.
    script, common = static_text("admin.js"), static_text("common.js")
    assert '"Create New Entry"' in script
    for label in ("Cancel", "Submit"):
        assert f'label: "{label}"' in script
    for label in ("Ok", "Cancel", "Close"):
        assert f'label: "{label}"' in common
    for action in ('"Remove"', '"Policies"', '"Stop"'):
        assert action in script
    assert 'id: "image-name"' in script
    assert "/accounting" in script
