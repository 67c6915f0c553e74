"""CSRF: cookie-authenticated state changes need the session's token and our own origin."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from remoteappmanager.web.auth import XSRF_COOKIE, require_user, signed_in_user
from tests.support.webapp import API, PREFIX, World, cookie, make_app, replace_cookie, sign_in

CHANGE = API + "v1/test-change"
FORM = PREFIX + "test-form"


@require_user
async def _change(request: web.Request) -> web.StreamResponse:
    return web.json_response({"changed_by": signed_in_user(request).name})


@require_user
async def _form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    return web.json_response({"value": form.get("value")})


@pytest.fixture
def world() -> World:
    world = World()
    world.hub.add_user("alice")
    world.hub.add_user("mallory")
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = make_app(world)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        app.router.add_route(method, CHANGE, _change)
    app.router.add_post(FORM, _form)
    return await aiohttp_client(app)


@pytest.fixture
async def signed_in(client: TestClient[Any, Any], world: World) -> str:
    """Signs alice in; returns her XSRF token (the ``_xsrf`` cookie)."""
    await sign_in(client, world, "alice")
    token = cookie(client, XSRF_COOKIE)
    assert token
    return token


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_cookie_request_without_token_is_refused(
    client: TestClient[Any, Any], signed_in: str, method: str
) -> None:
    response = await client.request(method, CHANGE, json={})
    assert response.status == 403
    body = await response.json()
    assert body["type"] == "Forbidden"
    assert "XSRF" in body["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_cookie_request_with_token_header_is_accepted(
    client: TestClient[Any, Any], signed_in: str, method: str
) -> None:
    response = await client.request(method, CHANGE, json={}, headers={"X-XSRFToken": signed_in})
    assert response.status == 200
    assert await response.json() == {"changed_by": "alice"}


async def test_token_in_a_form_field_is_accepted_and_the_form_still_readable(
    client: TestClient[Any, Any], signed_in: str
) -> None:
    response = await client.post(FORM, data={"_xsrf": signed_in, "value": "42"})
    assert response.status == 200
    assert await response.json() == {"value": "42"}
    assert (await client.post(FORM, data={"value": "42"})).status == 403


async def test_xsrf_cookie_is_for_the_server_only_and_scoped(
    client: TestClient[Any, Any], world: World
) -> None:
    # The pages carry the token; a script (an application's, on a shared origin) never
    # reads the cookie.
    await sign_in(client, world, "alice")
    morsel = next(m for m in client.session.cookie_jar if m.key == XSRF_COOKIE)
    assert morsel["httponly"]
    assert morsel["path"] == PREFIX


async def test_header_must_match_the_cookie(client: TestClient[Any, Any], signed_in: str) -> None:
    # Get a second token, valid for this very session, then put the first one back.
    client.session.cookie_jar.clear(lambda morsel: morsel.key == XSRF_COOKIE)
    await client.get(API + "v1/user")
    second = cookie(client, XSRF_COOKIE)
    assert second
    assert second != signed_in
    assert (await client.post(CHANGE, headers={"X-XSRFToken": second})).status == 200
    replace_cookie(client, XSRF_COOKIE, signed_in)
    assert (await client.post(CHANGE, headers={"X-XSRFToken": second})).status == 403
    assert (await client.post(CHANGE, headers={"X-XSRFToken": signed_in})).status == 200


async def test_token_of_another_session_is_refused(
    client: TestClient[Any, Any], world: World, signed_in: str, aiohttp_client: Any
) -> None:
    # Mallory plants her own (valid for her) token in alice's browser: bound to her session,
    # it is worthless in alice's.
    other = await aiohttp_client(client.server)
    await sign_in(other, world, "mallory")
    mallory_token = cookie(other, XSRF_COOKIE)
    assert mallory_token is not None
    replace_cookie(client, XSRF_COOKIE, mallory_token)
    response = await client.post(CHANGE, headers={"X-XSRFToken": mallory_token})
    assert response.status == 403


async def test_api_token_requests_are_exempt(client: TestClient[Any, Any], world: World) -> None:
    token = world.hub.issue_token("alice")
    response = await client.post(
        CHANGE,
        headers={"Authorization": f"token {token}", "Origin": "https://elsewhere.example"},
    )
    assert response.status == 200


async def test_other_origin_is_refused_even_with_the_token(
    client: TestClient[Any, Any], signed_in: str
) -> None:
    headers = {"X-XSRFToken": signed_in, "Origin": "https://evil.example"}
    response = await client.post(CHANGE, headers=headers)
    assert response.status == 403
    assert "origin" in (await response.json())["message"]
    headers = {"X-XSRFToken": signed_in, "Origin": "null"}
    assert (await client.post(CHANGE, headers=headers)).status == 403


async def test_other_referer_is_refused_when_there_is_no_origin(
    client: TestClient[Any, Any], signed_in: str
) -> None:
    headers = {"X-XSRFToken": signed_in, "Referer": "https://evil.example/page"}
    assert (await client.post(CHANGE, headers=headers)).status == 403


async def test_same_origin_is_accepted(client: TestClient[Any, Any], signed_in: str) -> None:
    origin = str(client.make_url("/")).rstrip("/")
    headers = {"X-XSRFToken": signed_in, "Origin": origin}
    assert (await client.post(CHANGE, headers=headers)).status == 200
    headers = {"X-XSRFToken": signed_in, "Referer": origin + PREFIX}
    assert (await client.post(CHANGE, headers=headers)).status == 200


async def test_anonymous_state_change_is_401(client: TestClient[Any, Any]) -> None:
    response = await client.post(CHANGE)
    assert response.status == 401


async def test_a_lost_xsrf_cookie_is_given_again(
    client: TestClient[Any, Any], signed_in: str
) -> None:
    client.session.cookie_jar.clear(lambda morsel: morsel.key == XSRF_COOKIE)
    response = await client.get(API + "v1/user")
    assert response.status == 200
    fresh = cookie(client, XSRF_COOKIE)
    assert fresh
    assert fresh != signed_in
    assert (await client.post(CHANGE, headers={"X-XSRFToken": fresh})).status == 200


async def test_logout_by_post_needs_the_token(client: TestClient[Any, Any], signed_in: str) -> None:
    assert (await client.post(PREFIX + "logout", allow_redirects=False)).status == 403
    response = await client.post(
        PREFIX + "logout", headers={"X-XSRFToken": signed_in}, allow_redirects=False
    )
    assert response.status == 302
