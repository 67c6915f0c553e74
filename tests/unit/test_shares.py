"""Sharing a running application: the API, the rules of the site, and control hand-over."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from remoteappmanager.adapters.memory_shared_state import InMemoryControlStates
from remoteappmanager.domain.errors import NotFound, Unavailable
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import Session
from remoteappmanager.domain.shares import ControlState, Share, ShareKind, ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.gate_access import GateTarget
from remoteappmanager.services.shares import (
    CONTROL_WRITE_ATTEMPTS,
    ControlAction,
    Shares,
)
from remoteappmanager.web.api_shares import DIRECTORY_LIMIT
from remoteappmanager.web.gate.framing import GateRequest
from remoteappmanager.web.gate.handler import _Caller
from remoteappmanager.web.gate.listener import Forward
from remoteappmanager.web.gate.rfb import RfbInputFilter
from remoteappmanager.web.keys import GATE, SHARES
from tests.support.gated import GATED_IMAGE, GatedService, client_of, gated_service
from tests.support.webapp import API, ApiClient, World

ALICE = AuthenticatedUser("alice", admin=False)
BOB = AuthenticatedUser("bob", admin=False)


class Scene:
    def __init__(self, service: GatedService, clients: dict[str, ApiClient]) -> None:
        self.service = service
        self.clients = clients

    @property
    def shares(self) -> Shares:
        return self.service.app[SHARES]

    def api(self, who: str) -> ApiClient:
        return self.clients[who]


@pytest.fixture
async def scene(request: pytest.FixtureRequest) -> AsyncIterator[Scene]:
    world = World()
    for name in ("alice", "bob"):
        world.hub.add_user(name)
    world.hub.add_user("carol", groups=frozenset({"team"}))
    world.hub.add_user("root", admin=True)
    settings: dict[str, Any] = getattr(request, "param", {})
    async with gated_service(world, **settings) as service:
        client = await client_of(service)
        try:
            clients = {
                name: ApiClient(client, world.hub.issue_token(name))
                for name in ("alice", "bob", "carol", "root")
            }
            yield Scene(service, clients)
        finally:
            await client.close()


def shares_url(session: Session, suffix: str = "") -> str:
    return f"{API}v1/containers/{session.url_id}/shares/{suffix}"


def control_url(session: Session) -> str:
    return f"{API}v1/containers/{session.url_id}/control"


async def test_the_owner_shares_lists_and_unshares(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    alice = scene.api("alice")
    status, _body, headers = await alice.call("POST", shares_url(session), json={"user": "bob"})
    assert status == 201
    assert (
        await alice.call("POST", shares_url(session), json={"group": "team", "mode": "control"})
    )[0] == 201
    assert (await alice.call("POST", shares_url(session), json={"link": True}))[0] == 201

    status, listing, _headers = await alice.call("GET", shares_url(session))
    assert status == 200
    assert listing["total"] == 3
    items = [listing["items"][key] for key in listing["identifiers"]]
    assert [{k: v for k, v in item.items() if k not in ("id", "created_at")} for item in items] == [
        {"user": "bob", "mode": "view"},
        {"group": "team", "mode": "control"},
        {"link": True, "mode": "view"},
    ]
    assert all(item["created_at"].endswith(("Z", "+00:00")) for item in items)
    assert listing["connected"] == []
    assert headers["Location"].endswith(f"/shares/{items[0]['id']}/")

    # Sharing with bob again changes his share's mode; it stays the one share.
    again = await alice.call("POST", shares_url(session), json={"user": "bob", "mode": "control"})
    assert again[2]["Location"] == headers["Location"]
    status, listing, _ = await alice.call("GET", shares_url(session))
    assert listing["total"] == 3
    assert listing["items"][items[0]["id"]]["mode"] == "control"

    assert (await alice.call("DELETE", shares_url(session, items[0]["id"] + "/")))[0] == 204
    assert (await alice.call("DELETE", shares_url(session, items[0]["id"] + "/")))[0] == 404
    assert (await alice.call("GET", shares_url(session)))[1]["total"] == 2


async def test_nobody_else_sees_or_changes_the_shares(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    share = await scene.shares.create(ALICE, session.url_id, *_bob_view())
    bob = scene.api("bob")
    # A viewer is not an owner: the session's shares are not his to see or change.
    assert (await bob.call("GET", shares_url(session)))[0] == 404
    assert (await bob.call("POST", shares_url(session), json={"user": "carol"}))[0] == 404
    assert (await bob.call("DELETE", shares_url(session, f"{share.id}/")))[0] == 404
    # Another session's share id does not reach through this session.
    other = await scene.service.start("alice", Policy(allow_view=True, allow_home=True))
    alice = scene.api("alice")
    assert (await alice.call("DELETE", shares_url(other, f"{share.id}/")))[0] == 404
    assert [s.id for s in await scene.shares.shares_of(session.url_id)] == [share.id]
    # An admin may.
    root = scene.api("root")
    assert (await root.call("GET", shares_url(session)))[1]["total"] == 1
    assert (await root.call("DELETE", shares_url(session, f"{share.id}/")))[0] == 204


def _bob_view() -> tuple[ShareKind, str, ShareMode]:
    return ShareKind.USER, "bob", ShareMode.VIEW


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user": "bob", "group": "team"},
        {"user": "bob", "link": True},
        {"link": False},
        {"user": ""},
        {"user": "a/b"},
        {"user": " bob"},
        {"user": "bob", "mode": "drive"},
        {"user": "bob", "extra": 1},
        {"user": "alice"},
    ],
)
async def test_bad_shares_are_400_and_change_nothing(scene: Scene, body: Any) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    status, error, _ = await scene.api("alice").call("POST", shares_url(session), json=body)
    assert status == 400
    assert error["type"] == "BadRepresentation"
    assert list(await scene.shares.shares_of(session.url_id)) == []


async def test_a_policy_without_allow_view_cannot_be_shared(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy())
    status, error, _ = await scene.api("alice").call(
        "POST", shares_url(session), json={"link": True}
    )
    assert status == 403
    assert "policy" in error["message"]
    assert list(await scene.shares.shares_of(session.url_id)) == []


@pytest.mark.parametrize(
    ("scene", "body", "word"),
    [
        ({"sharing": False}, {"user": "bob"}, "sharing"),
        ({"link_shares": False}, {"link": True}, "link"),
        ({"control_shares": False}, {"user": "bob", "mode": "control"}, "control"),
    ],
    indirect=["scene"],
)
async def test_the_site_switches_forbid_what_they_say(
    scene: Scene, body: dict[str, Any], word: str
) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    status, error, _ = await scene.api("alice").call("POST", shares_url(session), json=body)
    assert status == 403
    assert word in error["message"]


async def test_stopping_the_session_ends_every_share(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    await scene.shares.create(ALICE, session.url_id, *_bob_view())
    seen: list[str] = []
    scene.shares.on_change(seen.append)
    assert (await scene.api("alice").call("DELETE", f"{API}v1/containers/{session.url_id}/"))[
        0
    ] == 204
    assert list(await scene.shares.shares_of(session.url_id)) == []
    assert seen == [session.url_id]


async def test_the_listener_hears_of_every_share_and_unshare(scene: Scene) -> None:
    heard: list[tuple[str, str, str, int]] = []

    class Recorder:
        async def shared(self, actor: str, owner: str, share: Share) -> None:
            heard.append(("share", actor, owner, share.id))

        async def unshared(self, actor: str, owner: str, share: Share) -> None:
            heard.append(("unshare", actor, owner, share.id))

    shares = Shares(
        scene.shares._sessions,
        scene.service.world.database.unit_of_work,
        controls=InMemoryControlStates(),
        listener=Recorder(),
    )
    session = await scene.service.start("alice", Policy(allow_view=True))
    share = await shares.create(ALICE, session.url_id, *_bob_view())
    await shares.delete(AuthenticatedUser("root", admin=True), session.url_id, share.id)
    assert heard == [("share", "alice", "alice", share.id), ("unshare", "root", "alice", share.id)]


# ------------------------------------------------------------------------------ control
async def test_control_is_asked_for_given_taken_back_and_released(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    await scene.shares.create(ALICE, session.url_id, *_bob_view())
    await scene.shares.create(ALICE, session.url_id, ShareKind.GROUP, "team", ShareMode.CONTROL)
    url = session.url_id
    shares = scene.shares
    view, control = ShareMode.VIEW, ShareMode.CONTROL
    # At first: the control share's members have input, view-only viewers do not.
    assert not shares.input_allowed(url, "bob", view)
    assert shares.input_allowed(url, "carol", control)
    bob, alice = scene.api("bob"), scene.api("alice")
    status, state, _ = await bob.call("GET", control_url(session))
    assert (status, state["mode"], state["input"], state["requests"]) == (200, "view", False, [])
    status, state, _ = await bob.call("POST", control_url(session), json={"action": "request"})
    assert status == 200
    status, state, _ = await alice.call("GET", control_url(session))
    assert state["requests"] == ["bob"]
    assert state["mode"] is None
    assert state["input"] is True
    # A viewer cannot give himself control.
    assert (await bob.call("POST", control_url(session), json={"action": "give", "user": "bob"}))[
        0
    ] == 403
    status, state, _ = await alice.call(
        "POST", control_url(session), json={"action": "give", "user": "bob"}
    )
    assert (status, state["controller"], state["requests"]) == (200, "bob", [])
    # One person controls at a time: handing it to bob takes it from the control share.
    assert shares.input_allowed(url, "bob", view)
    assert not shares.input_allowed(url, "carol", control)
    await alice.call("POST", control_url(session), json={"action": "take"})
    assert not shares.input_allowed(url, "bob", view)
    assert not shares.input_allowed(url, "carol", control)
    await alice.call("POST", control_url(session), json={"action": "everyone"})
    assert shares.input_allowed(url, "bob", view)
    assert shares.input_allowed(url, "carol", control)
    await alice.call("POST", control_url(session), json={"action": "release"})
    assert not shares.input_allowed(url, "bob", view)
    assert shares.input_allowed(url, "carol", control)
    # Giving control to someone who neither asked nor has a share of their own is refused.
    status, _error, _ = await alice.call(
        "POST", control_url(session), json={"action": "give", "user": "mallory"}
    )
    assert status == 400
    # A member of a shared group is a viewer; someone with no share sees nothing.
    assert (await scene.api("carol").call("GET", control_url(session)))[1]["mode"] == "control"
    outsider = await scene.service.start("alice", Policy())
    assert (await bob.call("GET", control_url(outsider)))[0] == 404


@pytest.mark.parametrize("scene", [{"control_shares": False}], indirect=True)
async def test_without_control_no_viewer_ever_has_input(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    await scene.shares.create(ALICE, session.url_id, *_bob_view())
    bob, alice = scene.api("bob"), scene.api("alice")
    assert (await bob.call("POST", control_url(session), json={"action": "request"}))[0] == 403
    assert (await alice.call("POST", control_url(session), json={"action": "give", "user": "bob"}))[
        0
    ] == 403
    assert (await alice.call("POST", control_url(session), json={"action": "everyone"}))[0] == 403
    assert not scene.shares.input_allowed(session.url_id, "bob", ShareMode.CONTROL)


# ------------------------------------------------------------------------------ clipboard
HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
KEY_DOWN = b"\x04\x01\x00\x00\x00\x00\x00\x61"
PASTE = b"\x06\x00\x00\x00" + (5).to_bytes(4, "big") + b"hello"
UPDATE_REQUEST = b"\x03\x01\x00\x00\x00\x00\x04\x00\x03\x00"


@pytest.mark.parametrize("split", [1, 3, 7, 64])
def test_without_the_clipboard_pasted_text_never_reaches_the_desktop(split: int) -> None:
    clipboard = {"on": False}
    rfb = RfbInputFilter()
    rfb.clipboard = lambda: clipboard["on"]
    stream = HANDSHAKE + KEY_DOWN + PASTE + UPDATE_REQUEST
    out = b"".join(
        rfb.feed(stream[i : i + split], allow_input=True) for i in range(0, len(stream), split)
    )
    # Keys and picture requests pass; the clipboard text does not, however it is cut.
    assert out == HANDSHAKE + KEY_DOWN + UPDATE_REQUEST
    clipboard["on"] = True
    assert rfb.feed(PASTE, allow_input=True) == PASTE


async def test_the_owner_gets_a_filter_only_where_the_clipboard_is_kept_out() -> None:
    world = World()
    async with gated_service(world, clipboard_to_app=False) as service:
        gate = service.app[GATE]
        target = GateTarget("u" * 26, "alice", "/user/alice/containers/x", "127.0.0.1", 1, False)
        request = GateRequest("GET", "/", [], None, websocket=True)
        desktop = gate._forward(request, replace(target, protocol="vnc"), _Caller(), "alice")
        web_app = gate._forward(request, target, _Caller(), "alice")
    assert isinstance(desktop, Forward)
    assert desktop.viewer is not None
    assert (desktop.viewer.input_allowed, desktop.viewer.clipboard_in) == (True, False)
    assert isinstance(web_app, Forward)
    assert web_app.viewer is None


# ------------------------------------------------------------------------------ directory
DIRECTORY = f"{API}v1/directory"
BY_CA = {"query": '{"prefix": "ca"}'}


async def _grant(scene: Scene, user: str, policy: Policy) -> None:
    """A grant of the gated image to ``user`` (no session started)."""
    async with scene.service.world.database.unit_of_work() as uow:
        try:
            owner = await uow.users.get_by_name(user)
        except NotFound:
            owner = await uow.users.add(user)
        try:
            application = await uow.applications.get_by_image(GATED_IMAGE)
        except NotFound:
            application = await uow.applications.add(GATED_IMAGE)
        await uow.grants.grant(owner, application, policy)
        await uow.commit()


async def test_a_tenant_who_may_share_nothing_cannot_list_other_tenants(scene: Scene) -> None:
    # The attack: any signed-in user enumerating the hub's user and group names by prefix.
    bob = scene.api("bob")
    for prefix in ("a", "c", "r", "t"):
        status, error, _ = await bob.call(
            "GET", DIRECTORY, params={"query": json.dumps({"prefix": prefix})}
        )
        assert status == 403, prefix
        assert error["type"] == "Forbidden"
        assert "share" in error["message"]
        assert not {"carol", "team"} & set(json.dumps(error).replace('"', " ").split())
    # A grant whose policy does not allow sharing does not open it either.
    await _grant(scene, "bob", Policy(allow_home=True))
    assert (await bob.call("GET", DIRECTORY, params=BY_CA))[0] == 403


async def test_a_user_with_a_shareable_grant_searches_the_directory(scene: Scene) -> None:
    await _grant(scene, "bob", Policy(allow_view=True))
    bob = scene.api("bob")
    status, found, _ = await bob.call("GET", DIRECTORY, params=BY_CA)
    assert (status, found) == (200, {"users": ["carol"], "groups": []})
    status, found, _ = await bob.call("GET", DIRECTORY, params={"query": '{"prefix": "te"}'})
    assert found == {"users": [], "groups": ["team"]}
    for bad in ("", "{}", '{"prefix": ""}', "not json"):
        status, error, _ = await bob.call("GET", DIRECTORY, params={"query": bad})
        assert status == 400, bad
        assert error["type"] == "BadRepresentation"
    scene.service.world.hub.available = False
    assert (await bob.call("GET", DIRECTORY, params=BY_CA))[0] == 503


async def test_a_shareable_grant_through_a_hub_group_is_enough(scene: Scene) -> None:
    await _grant(scene, "carol", Policy())
    carol = scene.api("carol")
    assert (await carol.call("GET", DIRECTORY, params=BY_CA))[0] == 403
    body = {"group": "team", "image_name": GATED_IMAGE, "allow_view": True}
    status, _body, _ = await scene.api("root").call("POST", f"{API}v1/admin/accounting/", json=body)
    assert status == 201
    status, found, _ = await carol.call("GET", DIRECTORY, params=BY_CA)
    assert (status, found) == (200, {"users": ["carol"], "groups": []})


async def test_a_session_started_through_a_group_grant_that_allows_viewing_is_shared(
    scene: Scene,
) -> None:
    async with scene.service.world.database.unit_of_work() as uow:
        await uow.users.add("carol")
        await uow.applications.add(GATED_IMAGE)
        await uow.commit()
    body = {"group": "team", "image_name": GATED_IMAGE, "allow_view": True}
    status, _body, _ = await scene.api("root").call("POST", f"{API}v1/admin/accounting/", json=body)
    assert status == 201
    carol = scene.api("carol")
    status, listing, _ = await carol.call("GET", f"{API}v1/applications/")
    assert status == 200
    (mapping_id,) = listing["identifiers"]
    status, _body, headers = await carol.call(
        "POST", f"{API}v1/containers/", json={"mapping_id": mapping_id}
    )
    assert status == 201
    url_id = headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    status, answer, _ = await carol.call(
        "POST", f"{API}v1/containers/{url_id}/shares/", json={"user": "bob"}
    )
    assert status == 201, answer


async def test_admins_search_the_directory_without_grants(scene: Scene) -> None:
    status, found, _ = await scene.api("root").call("GET", DIRECTORY, params=BY_CA)
    assert (status, found) == (200, {"users": ["carol"], "groups": []})


async def test_losing_the_shareable_grant_closes_the_directory(scene: Scene) -> None:
    session = await scene.service.start("bob", Policy(allow_view=True))
    bob = scene.api("bob")
    assert (await bob.call("GET", DIRECTORY, params=BY_CA))[0] == 200
    root = scene.api("root")
    status, _body, _ = await root.call("DELETE", f"{API}v1/admin/accounting/{session.mapping_id}/")
    assert status == 204
    assert (await bob.call("GET", DIRECTORY, params=BY_CA))[0] == 403


async def test_the_directory_keeps_its_result_limit(scene: Scene) -> None:
    for index in range(DIRECTORY_LIMIT + 5):
        scene.service.world.hub.add_user(f"cx{index:02d}")
    status, found, _ = await scene.api("root").call(
        "GET", DIRECTORY, params={"query": '{"prefix": "cx"}'}
    )
    assert status == 200
    assert len(found["users"]) == DIRECTORY_LIMIT


@pytest.mark.parametrize("scene", [{"sharing": False}], indirect=True)
async def test_the_directory_is_closed_when_sharing_is_off(scene: Scene) -> None:
    await _grant(scene, "bob", Policy(allow_view=True))
    for who in ("bob", "root"):
        status, error, _ = await scene.api(who).call("GET", DIRECTORY, params=BY_CA)
        assert status == 403, who
        assert error["type"] == "Forbidden"
        assert "sharing" in error["message"]


async def test_sharing_and_unsharing_are_in_the_audit_trail(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    alice = scene.api("alice")
    _status, _body, headers = await alice.call(
        "POST", shares_url(session), json={"user": "bob", "mode": "control"}
    )
    share_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    assert (await alice.call("DELETE", shares_url(session, share_id + "/")))[0] == 204
    world = scene.service.world
    await world.audit.flush()
    recorded = [
        (event.actor, event.action.value, event.target, dict(event.detail))
        for event in world.events.events
        if event.action.value in ("share", "unshare")
    ]
    detail = {"owner": "alice", "with": "bob", "kind": "user", "mode": "control"}
    assert recorded == [
        ("alice", "share", session.url_id, detail),
        ("alice", "unshare", session.url_id, detail),
    ]


# ------------------------------------------------------------------------------ control states
class RacingControls(InMemoryControlStates):
    """Control states where another replica writes between each read and write here
    (``races`` times), as two replicas changing one session at once do."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    async def put(self, url_id: str, state: ControlState, *, version: int) -> bool:
        if self.races > 0:
            self.races -= 1
            found = await self.get(url_id)
            current = found[1] if found is not None else ControlState()
            other = replace(current, requests=(*current.requests, f"other{self.races}"))
            assert await super().put(url_id, other, version=found[0] if found else 0)
        return await super().put(url_id, state, version=version)


async def _racing_shares(scene: Scene, races: int) -> tuple[Shares, Session]:
    shares = Shares(
        scene.shares._sessions,
        scene.service.world.database.unit_of_work,
        controls=RacingControls(races),
    )
    session = await scene.service.start("alice", Policy(allow_view=True))
    await shares.create(ALICE, session.url_id, *_bob_view())
    return shares, session


async def test_a_change_of_control_is_made_again_over_another_replicas(scene: Scene) -> None:
    shares, session = await _racing_shares(scene, races=2)
    await shares.control(BOB, session.url_id, ControlAction.REQUEST)
    # Neither the other replica's two changes nor this one is lost.
    view = await shares.control_view(ALICE, session.url_id)
    assert view.requests == ("other1", "other0", "bob")
    given = await shares.control(ALICE, session.url_id, ControlAction.GIVE, "bob")
    assert given.controller == "bob"
    assert shares.input_allowed(session.url_id, "bob", ShareMode.VIEW)


async def test_a_change_of_control_that_keeps_losing_is_unavailable(scene: Scene) -> None:
    shares, session = await _racing_shares(scene, races=CONTROL_WRITE_ATTEMPTS)
    with pytest.raises(Unavailable, match="try again"):
        await shares.control(ALICE, session.url_id, ControlAction.GIVE, "bob")
    # Only the other replica's changes were written.
    view = await shares.control_view(ALICE, session.url_id)
    assert view.controller is None
    assert len(view.requests) == CONTROL_WRITE_ATTEMPTS
    assert not shares.input_allowed(session.url_id, "bob", ShareMode.VIEW)


async def test_stopping_a_session_forgets_its_control_state(scene: Scene) -> None:
    controls = InMemoryControlStates()
    shares = Shares(
        scene.shares._sessions, scene.service.world.database.unit_of_work, controls=controls
    )
    session = await scene.service.start("alice", Policy(allow_view=True))
    await shares.create(ALICE, session.url_id, *_bob_view())
    await shares.control(ALICE, session.url_id, ControlAction.GIVE, "bob")
    assert await controls.get(session.url_id) is not None
    await shares.end_all(session.url_id)
    assert await controls.get(session.url_id) is None
    assert not shares.input_allowed(session.url_id, "bob", ShareMode.VIEW)


async def test_ending_a_viewers_share_takes_their_control_and_request(scene: Scene) -> None:
    session = await scene.service.start("alice", Policy(allow_view=True))
    share = await scene.shares.create(ALICE, session.url_id, *_bob_view())
    await scene.shares.control(ALICE, session.url_id, ControlAction.GIVE, "bob")
    await scene.shares.delete(ALICE, session.url_id, share.id)
    view = await scene.shares.control_view(ALICE, session.url_id)
    assert (view.controller, view.requests) == (None, ())
    assert not scene.shares.input_allowed(session.url_id, "bob", ShareMode.VIEW)
