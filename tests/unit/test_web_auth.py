"""Browser sign-in through the (fake) hub, API tokens, sessions, admin, logout."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from remoteappmanager.web.auth import (
    SESSION_COOKIE,
    STATE_COOKIE_PREFIX,
    XSRF_COOKIE,
    require_admin,
    signed_in_user,
)
from tests.support.webapp import (
    API,
    CALLBACK,
    PREFIX,
    World,
    cookie,
    make_app,
    replace_cookie,
    sign_in,
    start_sign_in,
)

WHOAMI = API + "v1/user"
ADMIN_ONLY = API + "v1/test-admin-only"


@require_admin
async def _admin_only(request: web.Request) -> web.StreamResponse:
    return web.json_response({"admin": signed_in_user(request).name})


@pytest.fixture
def world() -> World:
    world = World()
    world.hub.add_user("alice")
    world.hub.add_user("root", admin=True)
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = make_app(world)
    app.router.add_get(ADMIN_ONLY, _admin_only)
    app.router.add_get(PREFIX + "admin-page", _admin_only)
    return await aiohttp_client(app)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ------------------------------------------------------------------------------ anonymous
async def test_anonymous_api_request_is_401_json(client: TestClient[Any, Any]) -> None:
    response = await client.get(WHOAMI)
    assert response.status == 401
    assert (await response.json())["type"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"] == "token"
    assert response.headers["Cache-Control"] == "no-store"


async def test_anonymous_page_redirects_to_hub_authorize_with_pkce(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get(PREFIX + "?tab=2", allow_redirects=False)
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith("/hub/api/oauth2/authorize?")
    redirect = await start_sign_in(client)
    query = redirect.query
    assert query["client_id"] == "service-remoteapp"
    assert query["redirect_uri"] == CALLBACK
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    # S256 of a 43+ character verifier: 43 characters of unpadded base64url.
    assert len(query["code_challenge"]) == 43
    assert set(query["code_challenge"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    state_cookie = response.cookies[STATE_COOKIE_PREFIX + parse_state(location)]
    assert state_cookie["path"] == CALLBACK
    assert state_cookie["httponly"]
    assert state_cookie["samesite"] == "Lax"
    assert parse_state(location) not in state_cookie.value  # signed, not the plain state


def parse_state(location: str) -> str:
    from tests.support.webapp import parse_login_redirect

    return parse_login_redirect(location).state


async def test_two_sign_ins_in_parallel_tabs_both_complete(
    client: TestClient[Any, Any], world: World
) -> None:
    first = await start_sign_in(client)
    second = await start_sign_in(client)
    for redirect in (first, second):
        code = world.hub.approve("alice", redirect.code_challenge)
        response = await client.get(
            CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
        )
        assert response.status == 302


# ------------------------------------------------------------------------------ sign-in
async def test_sign_in_lands_on_the_page_asked_for(
    client: TestClient[Any, Any], world: World
) -> None:
    landed = await sign_in(client, world, "alice", page=PREFIX + "?tab=2")
    assert landed == PREFIX + "?tab=2"
    page = await client.get(PREFIX)
    assert page.status == 200
    assert 'Signed in as <strong id="user">alice</strong>' in await page.text()
    assert (await (await client.get(WHOAMI)).json()) == {
        "name": "alice",
        "admin": False,
        "groups": [],
    }


async def test_session_cookie_is_opaque_httponly_lax_and_scoped(
    client: TestClient[Any, Any], world: World
) -> None:
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    session = response.cookies[SESSION_COOKIE]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
    assert session["path"] == PREFIX
    assert not session["secure"]  # plain http here
    # The hub token never reaches the browser.
    for token in world.hub._tokens:
        assert token not in session.value
        assert token not in base64.urlsafe_b64decode(session.value.split(".")[0] + "==").decode()
    # The state cookie is spent.
    assert response.cookies[STATE_COOKIE_PREFIX + redirect.state].value == ""


async def test_session_cookie_is_secure_behind_https(
    client: TestClient[Any, Any], world: World
) -> None:
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK,
        params={"code": code, "state": redirect.state},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.cookies[SESSION_COOKIE]["secure"]


async def test_user_names_are_escaped_on_the_page(
    client: TestClient[Any, Any], world: World
) -> None:
    world.hub.add_user("<img src=x onerror=alert(1)>")
    await sign_in(client, world, "<img src=x onerror=alert(1)>")
    text = await (await client.get(PREFIX)).text()
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


async def test_callback_with_wrong_state_is_refused(
    client: TestClient[Any, Any], world: World
) -> None:
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": "x" * 32}, allow_redirects=False
    )
    assert response.status == 400
    assert SESSION_COOKIE not in response.cookies
    assert (await client.get(WHOAMI)).status == 401


async def test_callback_without_the_browsers_state_cookie_is_refused(
    client: TestClient[Any, Any], world: World, aiohttp_client: Any
) -> None:
    # Login CSRF: the attacker's own code and state, replayed in the victim's browser.
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    victim = await aiohttp_client(client.server)
    response = await victim.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 400
    assert (await victim.get(WHOAMI)).status == 401


async def test_callback_with_a_forged_state_cookie_is_refused(
    client: TestClient[Any, Any], world: World
) -> None:
    redirect = await start_sign_in(client)
    name = STATE_COOKIE_PREFIX + redirect.state
    signed = cookie(client, name)
    assert signed is not None
    payload, issued, mac = signed.split(".")
    forged = f"{payload}.{issued}.{'A' * len(mac)}"
    replace_cookie(client, name, forged, CALLBACK)
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 400


async def test_callback_after_the_state_expired_is_refused(
    client: TestClient[Any, Any], world: World
) -> None:
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    world.clock.advance(11 * 60)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 400


async def test_code_issued_for_another_challenge_is_refused(
    client: TestClient[Any, Any], world: World
) -> None:
    # PKCE: a code obtained with someone else's challenge fails with our verifier.
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", _s256("some-other-verifier-" + "x" * 30))
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 401
    assert (await response.text()).count("sign in again") == 1


async def test_hub_refusal_is_a_page_not_a_crash(client: TestClient[Any, Any]) -> None:
    response = await client.get(CALLBACK, params={"error": "access_denied<script>"})
    assert response.status == 403
    text = await response.text()
    assert "access_denied&lt;script&gt;" in text
    assert "<script>" not in text


async def test_tampered_session_cookie_is_refused_and_cleared(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    signed = cookie(client, SESSION_COOKIE)
    assert signed is not None
    payload, issued, mac = signed.split(".")
    other_id = base64.urlsafe_b64encode(b"another-session-id").rstrip(b"=").decode()
    for forged in (f"{other_id}.{issued}.{mac}", f"{payload}.{int(issued) + 1}.{mac}", "junk"):
        replace_cookie(client, SESSION_COOKIE, forged)
        response = await client.get(WHOAMI)
        assert response.status == 401
        assert response.cookies[SESSION_COOKIE].value == ""
        page = await client.get(PREFIX, allow_redirects=False)
        assert page.status == 302


async def test_a_new_sign_in_replaces_the_session_id(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    first = cookie(client, SESSION_COOKIE)
    assert first is not None
    client.session.cookie_jar.clear(lambda morsel: morsel.key == SESSION_COOKIE)
    redirect = await start_sign_in(client)
    replace_cookie(client, SESSION_COOKIE, first)  # still signed in when the callback comes
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    second = response.cookies[SESSION_COOKIE].value
    assert second != first
    assert (await client.get(WHOAMI)).status == 200
    replace_cookie(client, SESSION_COOKIE, first)
    assert (await client.get(WHOAMI)).status == 401


async def test_idle_session_expires(client: TestClient[Any, Any], world: World) -> None:
    await sign_in(client, world, "alice")
    world.clock.advance(7 * 3600)
    assert (await client.get(WHOAMI)).status == 200
    world.clock.advance(7 * 3600)  # busy sessions stay
    assert (await client.get(WHOAMI)).status == 200
    world.clock.advance(9 * 3600)
    assert (await client.get(WHOAMI)).status == 401


async def test_hub_revoking_the_token_ends_the_session(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    assert (await client.get(WHOAMI)).status == 200
    world.hub.revoke_user("alice")  # what a hub logout does
    world.hub_changed()
    response = await client.get(WHOAMI)
    assert response.status == 401
    assert response.cookies[SESSION_COOKIE].value == ""


async def test_hub_unreachable_is_503_not_a_sign_out(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    world.hub.available = False
    response = await client.get(WHOAMI)
    assert response.status == 503
    assert (await response.json())["type"] == "Unable"
    world.hub.available = True
    assert (await client.get(WHOAMI)).status == 200


# ------------------------------------------------------------------------------ API tokens
async def test_api_token_authenticates(client: TestClient[Any, Any], world: World) -> None:
    token = world.hub.issue_token("alice")
    for scheme in ("token", "Bearer"):
        response = await client.get(WHOAMI, headers={"Authorization": f"{scheme} {token}"})
        assert response.status == 200
        assert (await response.json())["name"] == "alice"
        assert SESSION_COOKIE not in response.cookies


async def test_bad_api_token_is_401_even_with_a_session(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    response = await client.get(WHOAMI, headers={"Authorization": "token nope"})
    assert response.status == 401
    assert (await response.json())["type"] == "Unauthorized"


# ------------------------------------------------------------------------------ admin
async def test_admin_is_decided_on_every_request(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    assert (await (await client.get(WHOAMI)).json())["admin"] is False
    assert (await client.get(ADMIN_ONLY)).status == 403
    world.hub.set_admin("alice", True)
    world.hub_changed()
    assert (await (await client.get(WHOAMI)).json())["admin"] is True
    assert (await client.get(ADMIN_ONLY)).status == 200
    world.hub.set_admin("alice", False)
    world.hub_changed()
    response = await client.get(ADMIN_ONLY)
    assert response.status == 403
    assert (await response.json())["type"] == "Forbidden"


async def test_admin_group_makes_admins(world: World, aiohttp_client: Any) -> None:
    app = make_app(world, admin_group="remoteapp-admins")
    client = await aiohttp_client(app)
    token = world.hub.issue_token("alice")
    headers = {"Authorization": f"token {token}"}
    assert (await (await client.get(WHOAMI, headers=headers)).json())["admin"] is False
    world.hub.set_groups("alice", frozenset({"remoteapp-admins"}))
    world.hub_changed()
    body = await (await client.get(WHOAMI, headers=headers)).json()
    assert body == {"name": "alice", "admin": True, "groups": ["remoteapp-admins"]}


async def test_admin_pages_for_non_admins_are_403_html(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    response = await client.get(PREFIX + "admin-page")
    assert response.status == 403
    assert response.content_type == "text/html"
    assert (await client.get(ADMIN_ONLY)).status == 403


async def test_anonymous_admin_api_is_401(client: TestClient[Any, Any]) -> None:
    assert (await client.get(ADMIN_ONLY)).status == 401


# ------------------------------------------------------------------------------ logout
async def test_logout_ends_the_session_and_goes_to_the_hub(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    old = cookie(client, SESSION_COOKIE)
    # GET only asks: a link or an image on another site cannot sign anyone out.
    page = await client.get(PREFIX + "logout", allow_redirects=False)
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    form = _logout_form(await page.text())
    assert form["action"] == PREFIX + "logout"
    assert (await client.get(WHOAMI)).status == 200
    # The confirmation page's form POSTs the sign-out with the XSRF token it carries.
    response = await client.post(
        form["action"], data={XSRF_COOKIE: form["_xsrf"]}, allow_redirects=False
    )
    assert response.status == 302
    assert response.headers["Location"] == "/hub/logout"
    assert response.cookies[SESSION_COOKIE].value == ""
    assert response.cookies[XSRF_COOKIE].value == ""
    assert (await client.get(WHOAMI)).status == 401
    # The old cookie is worthless now, even if the browser kept it.
    replace_cookie(client, SESSION_COOKIE, old)
    assert (await client.get(WHOAMI)).status == 401


def _logout_form(text: str) -> dict[str, str]:
    action = re.search(r'<form method="post" action="([^"]+)">', text)
    token = re.search(r'name="_xsrf" value="([^"]*)"', text)
    assert action is not None
    assert token is not None
    return {"action": html.unescape(action.group(1)), "_xsrf": html.unescape(token.group(1))}


async def test_logout_answers_get_with_a_confirmation_and_post_only_signs_out(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    for method in ("GET", "HEAD"):
        response = await client.request(method, PREFIX + "logout", allow_redirects=False)
        assert response.status == 200
    for method in ("PUT", "DELETE", "PATCH"):
        # Refused by the CSRF check (no token) before the router's 405.
        response = await client.request(method, PREFIX + "logout", allow_redirects=False)
        assert response.status == 403
    assert (await client.get(WHOAMI)).status == 200
    # Without the token (a cross-site form) the POST is refused and the session lives on.
    response = await client.post(PREFIX + "logout", data={}, allow_redirects=False)
    assert response.status == 403
    assert (await client.get(WHOAMI)).status == 200


async def test_the_confirmation_page_gives_a_token_even_without_the_xsrf_cookie(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "alice")
    client.session.cookie_jar.clear(lambda morsel: morsel.key == XSRF_COOKIE)
    page = await client.get(PREFIX + "logout")
    form = _logout_form(await page.text())
    assert form["_xsrf"] == cookie(client, XSRF_COOKIE)
    response = await client.post(
        form["action"], data={"_xsrf": form["_xsrf"]}, allow_redirects=False
    )
    assert response.status == 302


async def test_the_confirmation_page_for_anonymous_visitors(client: TestClient[Any, Any]) -> None:
    page = await client.get(PREFIX + "logout", allow_redirects=False)
    assert page.status == 200
    assert _logout_form(await page.text())["_xsrf"] == ""


async def test_prefix_without_slash_redirects(client: TestClient[Any, Any]) -> None:
    response = await client.get(PREFIX.rstrip("/"), allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == PREFIX
