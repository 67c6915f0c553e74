"""The user page: who may see it, what it is made of, its security headers and static files."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.web.assets import IMMUTABLE_CACHE, PageAssets, Template
from remoteappmanager.web.auth import XSRF_COOKIE
from remoteappmanager.web.pages import CONTENT_SECURITY_POLICY
from tests.support.webapp import (
    PREFIX,
    PageOutline,
    World,
    cookie,
    make_app,
    replace_cookie,
    sign_in,
    static_text,
)

STATIC = PREFIX + "static/"
# Ids the browser tests (and users' own scripts from the original product) rely on.
SERVER_RENDERED_IDS = ("applistentries", "search-input", "loading-spinner", "user-menu", "logout")
SCRIPT_BUILT_IDS = (
    "application-entry-",
    "start-button",
    "application",
    "application-settings",
    "quit-button",
    "share-button",
    "shared-url",
    "cp-clipboard-button",
)
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def world() -> World:
    world = World()
    world.hub.add_user("alice")
    world.hub.add_user("root", admin=True)
    world.hub.add_user(HOSTILE)
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world))


async def _page(client: TestClient[Any, Any]) -> tuple[str, PageOutline]:
    response = await client.get(PREFIX)
    assert response.status == 200
    text = await response.text()
    return text, PageOutline(text)


# ------------------------------------------------------------------------------ who sees it
async def test_anonymous_visitors_are_sent_to_the_hub(client: TestClient[Any, Any]) -> None:
    response = await client.get(PREFIX, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/hub/api/oauth2/authorize?")


@pytest.mark.parametrize("page", ["", "admin/"])
async def test_with_the_hub_down_a_page_is_a_readable_503_not_a_traceback(
    client: TestClient[Any, Any], world: World, page: str
) -> None:
    await sign_in(client, world, "root")
    world.hub.available = False
    response = await client.get(PREFIX + page, allow_redirects=False)
    assert response.status == 503
    assert response.content_type == "text/html"
    text = await response.text()
    assert "JupyterHub cannot be reached; try again shortly" in text
    assert "Traceback" not in text
    assert "Request id:" in text


async def test_signed_in_user_gets_the_page_with_every_element_id(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    text, page = await _page(client)
    assert page.ids["applistentries"] == "ul"
    assert page.ids["search-input"] == "input"
    assert page.ids["logout"] == "button"
    assert page.ids["user-menu"] == "button"
    assert set(SERVER_RENDERED_IDS) <= page.ids.keys()
    assert 'Signed in as <strong id="user">alice</strong>.' in text
    assert page.meta["remoteapp-api"] == PREFIX + "api/v1/"
    assert page.body["data-admin"] == "false"
    # The rest is built by the script from the API's answers.
    script = static_text("app.js")
    for element_id in SCRIPT_BUILT_IDS:
        assert re.search(rf"""id: [`"]{re.escape(element_id)}""", script), element_id


async def test_admins_get_the_administration_link(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    _, page = await _page(client)
    assert page.body["data-admin"] == "true"


async def test_sign_out_is_a_form_post_that_carries_the_xsrf_token(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    text, page = await _page(client)
    token = page.meta["xsrf-token"]
    assert token == cookie(client, XSRF_COOKIE)
    assert f'<form method="post" action="{PREFIX}logout">' in text
    assert f'name="_xsrf" value="{token}"' in text
    signed_out = await client.post(PREFIX + "logout", data={"_xsrf": token}, allow_redirects=False)
    assert signed_out.status == 302
    assert signed_out.headers["Location"] == "/hub/logout"


async def test_the_pages_xsrf_token_is_accepted_for_api_changes(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    _, page = await _page(client)
    headers = {"X-XSRFToken": page.meta["xsrf-token"]}
    # Whatever the route answers, the CSRF check let it through (it would be 403).
    accepted = await client.post(PREFIX + "logout", headers=headers, allow_redirects=False)
    assert accepted.status == 302
    await sign_in(client, world, "alice")
    refused = await client.post(
        PREFIX + "logout", headers={"X-XSRFToken": "forged.token"}, allow_redirects=False
    )
    assert refused.status == 403


async def test_a_browser_without_a_valid_xsrf_cookie_gets_one_with_the_page(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    replace_cookie(client, XSRF_COOKIE, "not.valid")
    response = await client.get(PREFIX)
    page = PageOutline(await response.text())
    token = page.meta["xsrf-token"]
    assert token
    assert token != "not.valid"
    assert response.cookies[XSRF_COOKIE].value == token
    assert response.cookies[XSRF_COOKIE]["path"] == PREFIX
    assert len(response.headers.getall("Set-Cookie")) == 1


# ------------------------------------------------------------------------------ escaping
async def test_hostile_user_names_are_inert(client: TestClient[Any, Any], world: World) -> None:
    await sign_in(client, world, HOSTILE)
    text, page = await _page(client)
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert page.meta["remoteapp-user"] == HOSTILE
    # The only scripts are our own file.
    assert page.scripts == [page.scripts[0]]
    assert page.scripts[0].startswith(STATIC + "app.js?v=")


def test_the_script_builds_the_dom_without_parsing_html() -> None:
    script = static_text("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "textContent" in script


def test_templates_escape_every_value_and_insist_on_all_of_them() -> None:
    template = Template("t.html", '<a title="{{ title }}">{{ body }}</a>')
    rendered = template.render({"title": '"><script>', "body": "<b>&"})
    assert rendered == '<a title="&quot;&gt;&lt;script&gt;">&lt;b&gt;&amp;</a>'
    with pytest.raises(KeyError, match="body"):
        template.render({"title": "x"})


# ------------------------------------------------------------------------------ headers
async def test_the_page_has_a_strict_content_security_policy(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    response = await client.get(PREFIX)
    policy = response.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["frame-src"] == ["'self'"]
    assert directives["img-src"] == ["'self'", "data:"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert response.headers["Cache-Control"] == "no-store"


# ------------------------------------------------------------------------------ static files
async def test_static_files_are_versioned_and_cached_for_long(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    _, page = await _page(client)
    for url, content_type in ((page.scripts[0], "text/javascript"), (page.styles[0], "text/css")):
        response = await client.get(url)
        assert response.status == 200
        assert response.content_type == content_type
        assert response.headers["Cache-Control"] == IMMUTABLE_CACHE
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        name = url.removeprefix(STATIC).split("?")[0]
        packaged = (resources.files("remoteappmanager.web") / "static" / name).read_bytes()
        assert await response.read() == packaged


async def test_static_files_need_no_sign_in_and_revalidate_without_the_current_version(
    client: TestClient[Any, Any],
) -> None:
    assets = PageAssets.load(STATIC)
    current = await client.get(assets.static_url("app.css"))
    assert current.status == 200
    for stale in (STATIC + "app.css", STATIC + "app.css?v=0123456789abcdef"):
        response = await client.get(stale)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache"
    etag = current.headers["ETag"]
    unchanged = await client.get(STATIC + "app.css", headers={"If-None-Match": etag})
    assert unchanged.status == 304


async def test_a_new_file_content_gets_a_new_url() -> None:
    assets = PageAssets.load(STATIC)
    assert assets.static_url("app.js") == f"{STATIC}app.js?v={assets.static['app.js'].version}"
    versions = {file.version for file in assets.static.values()}
    assert len(versions) == len(assets.static)


@pytest.mark.parametrize(
    "path", ["nothing.js", "..%2Fpages.py", "%2E%2E/pages.py", "app.js/", "../templates/user.html"]
)
async def test_only_packaged_static_files_are_served(
    client: TestClient[Any, Any], path: str
) -> None:
    response = await client.get(STATIC + path, allow_redirects=False)
    assert response.status == 404
