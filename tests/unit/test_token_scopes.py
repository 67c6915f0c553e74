"""Hub tokens are accepted only with a scope granting access to this service: API, gate, sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.domain.errors import Forbidden
from remoteappmanager.ports.identity import HubUser
from remoteappmanager.services.access import AccessService, grants_access
from remoteappmanager.settings import SettingsError, load_settings
from remoteappmanager.web.keys import LOGIN_SESSIONS
from tests.support.gated import GatedService, gated_service
from tests.support.webapp import API, CALLBACK, PREFIX, World, make_app, start_sign_in

WHOAMI = API + "v1/user"
ACCESS = "access:services!service=remoteapp"


@pytest.fixture
def world() -> World:
    world = World()
    world.hub.add_user("alice")
    world.hub.add_user("root", admin=True)
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(world))
    return client


@pytest.fixture
async def gated(world: World) -> AsyncIterator[GatedService]:
    async with gated_service(world) as service:
        yield service


# ------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize(
    ("held", "required", "granted"),
    [
        ({ACCESS}, {ACCESS}, True),
        # Unfiltered covers every filtered form (the hub's own expansion).
        ({"access:services"}, {ACCESS}, True),
        ({"access:services!service=other"}, {ACCESS}, False),
        ({"read:users:name!user=alice"}, {ACCESS}, False),
        ({"read:users:name", "self"}, {ACCESS}, False),
        (set(), {ACCESS}, False),
        # Any one of several required scopes suffices.
        ({"custom:scope"}, {ACCESS, "custom:scope"}, True),
        # A filter on the required scope is not satisfied by another filter, nor by a prefix.
        ({"access:services!service=remoteapp2"}, {ACCESS}, False),
        ({"access:service"}, {ACCESS}, False),
        ({"access:servicesX"}, {ACCESS}, False),
    ],
)
def test_which_scopes_grant_access(held: set[str], required: set[str], granted: bool) -> None:
    assert grants_access(held, required) is granted


def test_access_scopes_come_from_the_hub_or_the_service_name() -> None:
    assert load_settings().access_scopes == {ACCESS}
    assert load_settings(jupyterhub_service_name="lab").access_scopes == {
        "access:services!service=lab"
    }
    given = load_settings(jupyterhub_oauth_access_scopes='["a:b!service=x", "c"]')
    assert given.access_scopes == {"a:b!service=x", "c"}


@pytest.mark.parametrize("value", ["[]", "not json", '"access:services"', '[""]', "[1]"])
def test_bad_access_scopes_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="JUPYTERHUB_OAUTH_ACCESS_SCOPES"):
        load_settings(jupyterhub_oauth_access_scopes=value)


# ------------------------------------------------------------------------------ the REST API
async def _whoami(client: TestClient[Any, Any], token: str) -> tuple[int, Any]:
    response = await client.get(WHOAMI, headers={"Authorization": f"token {token}"})
    return response.status, await response.json()


async def test_a_token_with_the_access_scope_works(
    client: TestClient[Any, Any], world: World
) -> None:
    assert (await _whoami(client, world.hub.issue_token("alice")))[0] == 200
    wide = world.hub.issue_token("alice", scopes=frozenset({"access:services"}))
    assert (await _whoami(client, wide))[0] == 200


@pytest.mark.parametrize(
    "scopes",
    [
        frozenset({"read:users:name!user=alice"}),
        frozenset({"access:services!service=other", "read:users:name!user=alice"}),
        frozenset(),
    ],
    ids=["identity-only", "another-service", "no-scopes"],
)
async def test_a_token_without_the_access_scope_is_403(
    client: TestClient[Any, Any], world: World, scopes: frozenset[str]
) -> None:
    token = world.hub.issue_token("root", scopes=scopes)
    status, body = await _whoami(client, token)
    assert status == 403
    assert body["type"] == "Forbidden"
    assert ACCESS in body["message"]
    assert token not in body["message"]
    # Changes too, and the admin flag does not help.
    response = await client.post(
        API + "v1/admin/users/",
        json={"name": "mallory"},
        headers={"Authorization": f"token {token}"},
    )
    assert response.status == 403


async def test_the_service_honours_the_scopes_the_hub_gives_it(
    world: World, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(
        make_app(world, jupyterhub_oauth_access_scopes='["access:services!service=lab"]')
    )
    ours = world.hub.issue_token("alice")  # access:services!service=remoteapp
    assert (await _whoami(client, ours))[0] == 403
    lab = world.hub.issue_token("alice", scopes=frozenset({"access:services!service=lab"}))
    assert (await _whoami(client, lab))[0] == 200


# ------------------------------------------------------------------------------ browser sign-in
async def test_a_sign_in_whose_token_lacks_the_scope_opens_no_session(
    client: TestClient[Any, Any], world: World
) -> None:
    # The hub's OAuth client was configured without our access scope.
    world.hub.issue_token = (  # type: ignore[method-assign]
        lambda name, scopes=None, _issue=world.hub.issue_token: _issue(
            name, scopes=frozenset({f"read:users:name!user={name}"})
        )
    )
    redirect = await start_sign_in(client)
    code = world.hub.approve("alice", redirect.code_challenge)
    response = await client.get(
        CALLBACK, params={"code": code, "state": redirect.state}, allow_redirects=False
    )
    assert response.status == 403
    assert "remoteapp-session" not in response.cookies
    assert (await client.get(PREFIX, allow_redirects=False)).status == 302
    assert len(client.app[LOGIN_SESSIONS]) == 0


# ------------------------------------------------------------------------------ the gate
async def test_the_gate_refuses_a_token_without_the_access_scope(gated: GatedService) -> None:
    session = await gated.start("alice")
    hub = gated.world.hub
    narrow = hub.issue_token("alice", scopes=frozenset({"read:users:name!user=alice"}))
    status, body = await gated.gate_request(
        "GET", session.urlpath + "/x", {"Authorization": f"token {narrow}"}
    )
    assert status == 403
    assert narrow.encode() not in body
    other = hub.issue_token("alice", scopes=frozenset({"access:services!service=other"}))
    status, _ = await gated.gate_request(
        "GET", session.urlpath + "/x", {"Authorization": f"bearer {other}"}
    )
    assert status == 403
    good = hub.issue_token("alice")
    status, body = await gated.gate_request(
        "GET", session.urlpath + "/x", {"Authorization": f"token {good}"}
    )
    assert status == 200
    assert body == b'{"path": "' + session.urlpath.encode() + b'/x"}'


def test_a_refused_scope_is_forbidden_even_for_a_hub_admin(world: World) -> None:
    # The gate and the API map this one error type; a different one would slip past them.
    access = AccessService(world.database.unit_of_work)
    with pytest.raises(Forbidden):
        access.identify(HubUser("root", admin=True, scopes=frozenset({"admin:users"})))
    assert access.identify(HubUser("root", admin=True, scopes=frozenset({ACCESS}))).admin
