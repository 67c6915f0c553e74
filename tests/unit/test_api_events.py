"""The audit trail's admin API ({svc}api/v1/admin/events/): what is recorded through the real
application, filters, paging, CSV (formula injection neutralised), and who may read it."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.domain.audit import COUNT_AHEAD, AuditAction, NewEvent
from tests.support.webapp import API, ApiClient, World, make_app, sign_in

ADMIN = API + "v1/admin/"
EVENTS = ADMIN + "events/"
WEBAPP = "remoteapp-test/web:latest"
NS = "eu.simphony-project.docker."
LICENCE = "SECRET-LICENCE-0b1e"


@pytest.fixture
def world() -> World:
    world = World()
    world.runtime.add_image(WEBAPP, {NS + "ui_name": "Web", NS + "type": "webapp"})
    world.hub.add_user("root", admin=True)
    world.hub.add_user("alice")
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world))


@pytest.fixture
def root(client: TestClient[Any, Any], world: World) -> ApiClient:
    return ApiClient(client, world.hub.issue_token("root"))


@pytest.fixture
def alice(client: TestClient[Any, Any], world: World) -> ApiClient:
    return ApiClient(client, world.hub.issue_token("alice"))


async def _events(api: ApiClient, **params: str) -> dict[str, Any]:
    status, body, headers = await api.call("GET", EVENTS, params=params)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    return dict(body)


async def _story(root: ApiClient, alice: ApiClient) -> dict[str, str]:
    """root registers alice and an image, grants it with a licence, alice starts and stops
    it, root revokes the grant."""
    status, _, headers = await root.call("POST", ADMIN + "users/", json={"name": "alice"})
    assert status == 201
    user_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    status, _, _ = await root.call("POST", ADMIN + "applications/", json={"image_name": WEBAPP})
    assert status == 201
    status, _, headers = await root.call(
        "POST",
        ADMIN + "accounting/",
        json={"user_id": user_id, "image_name": WEBAPP, "app_license": LICENCE},
    )
    assert status == 201
    mapping_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    status, _, headers = await alice.call(
        "POST", API + "v1/containers/", json={"mapping_id": mapping_id}
    )
    assert status == 201
    url_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    status, _, _ = await alice.call("DELETE", API + f"v1/containers/{url_id}/")
    assert status == 204
    status, _, _ = await root.call("DELETE", ADMIN + f"accounting/{mapping_id}/")
    assert status == 204
    return {"mapping_id": mapping_id, "url_id": url_id}


async def test_what_happened_is_listed_newest_first_with_its_actor(
    root: ApiClient, alice: ApiClient
) -> None:
    ids = await _story(root, alice)

    body = await _events(root)

    assert body["total"] == 6
    assert body["offset"] == 0
    listed = [body["items"][key] for key in body["identifiers"]]
    assert [(e["actor"], e["action"], e["target"]) for e in listed] == [
        ("root", "revoke", ids["mapping_id"]),
        ("alice", "stop", ids["url_id"]),
        ("alice", "start", ids["url_id"]),
        ("root", "grant", ids["mapping_id"]),
        ("root", "app_create", WEBAPP),
        ("root", "user_create", "alice"),
    ]
    assert listed[1]["detail"]["reason"] == "user"
    assert listed[2]["detail"] == {
        "owner": "alice",
        "image": WEBAPP,
        "mapping_id": ids["mapping_id"],
    }
    assert all(e["time"].endswith("Z") for e in listed)
    assert set(body["items"]) == {str(e["id"]) for e in listed}


async def test_no_event_holds_the_grants_licence(root: ApiClient, alice: ApiClient) -> None:
    await _story(root, alice)

    status, body, _ = await root.call("GET", EVENTS, params={"limit": "1000"})
    assert status == 200
    async with root.client.get(EVENTS, params={"format": "csv"}, headers=root.headers) as got:
        text = await got.text()

    assert LICENCE not in json.dumps(body)
    assert LICENCE not in text


async def test_an_admin_stopping_someone_elses_application_is_recorded_as_admin(
    root: ApiClient, alice: ApiClient
) -> None:
    await _story(root, alice)
    _, body, _ = await root.call("GET", ADMIN + "accounting/", params={"filter": '{"user_id": 1}'})
    status, _, headers = await root.call(
        "POST",
        ADMIN + "accounting/",
        json={"user_id": "1", "image_name": WEBAPP},
    )
    mapping_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    status, _, headers = await alice.call(
        "POST", API + "v1/containers/", json={"mapping_id": mapping_id}
    )
    url_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]

    status, _, _ = await root.call("DELETE", ADMIN + f"containers/{url_id}/")

    assert status == 204
    body = await _events(root, action="stop", limit="1")
    (event,) = body["items"].values()
    assert (event["actor"], event["target"], event["detail"]["reason"]) == ("root", url_id, "admin")
    assert event["detail"]["owner"] == "alice"


async def test_filters_and_paging(root: ApiClient, alice: ApiClient) -> None:
    await _story(root, alice)

    by_alice = await _events(root, actor="alice")
    grants = await _events(root, action="grant")
    second_page = await _events(root, limit="2", offset="2")
    future = await _events(root, since="2999-01-01T00:00:00Z")
    past = await _events(root, until="2000-01-01T00:00:00+02:00")
    everything = await _events(root, since="2000-01-01T00:00:00.5Z", until="2999-01-01T00:00:00Z")

    assert [e["action"] for e in by_alice["items"].values()] == ["stop", "start"]
    assert by_alice["total"] == 2
    assert grants["total"] == 1
    assert (second_page["total"], second_page["offset"], len(second_page["items"])) == (6, 2, 2)
    assert [e["action"] for e in second_page["items"].values()] == ["start", "grant"]
    backwards = await _events(root, since="2999-01-01T00:00:00Z", until="2000-01-01T00:00:00Z")
    assert future["total"] == past["total"] == backwards["total"] == 0
    assert everything["total"] == 6
    assert all(
        page["total_exact"] is True
        for page in (by_alice, grants, second_page, future, past, backwards, everything)
    )


async def test_a_long_trail_is_counted_only_so_far_past_the_page_and_says_so(
    root: ApiClient, world: World
) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    beyond = COUNT_AHEAD + 150
    await world.events.append(
        [NewEvent.of(moment, "root", AuditAction.LOGIN, "hub", {}) for _ in range(beyond)]
        + [NewEvent.of(moment, "alice", AuditAction.START, "u1", {})]
    )

    # Counted: the 50 of the page and COUNT_AHEAD more, then one to know there is more.
    first = await _events(root, limit="50")
    near_the_end = await _events(root, limit="100", offset="200")
    filtered = await _events(root, actor="alice")

    assert (first["total"], first["total_exact"]) == (50 + COUNT_AHEAD + 1, False)
    assert len(first["items"]) == 50
    assert (near_the_end["total"], near_the_end["total_exact"]) == (beyond + 1, True)
    assert (filtered["total"], filtered["total_exact"]) == (1, True)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "10001"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"offset": "-1"},
        {"action": "delete_everything"},
        {"actor": ""},
        {"actor": "a\x00b"},
        {"since": "yesterday"},
        {"since": "2026-12-04"},
        {"since": "2026-12-04T10:00:00"},
        {"since": "1733300000"},
        {"until": "2026-02-30T10:00:00Z"},
        {"format": "xml"},
    ],
)
async def test_bad_arguments_are_400_with_a_message(
    root: ApiClient, params: dict[str, str]
) -> None:
    status, body, _ = await root.call("GET", EVENTS, params=params)

    assert status == 400
    assert body["type"] == "BadRepresentation"
    assert body["message"]


async def test_a_repeated_argument_is_refused(root: ApiClient) -> None:
    status, body, _ = await root.call("GET", EVENTS + "?actor=a&actor=b")

    assert status == 400
    assert "more than once" in body["message"]


async def test_csv_neutralises_formulas_and_round_trips(root: ApiClient, world: World) -> None:
    hostile = ['=HYPERLINK("http://evil")', "+1", "-2", "@SUM(A1)", "\tx", "plain"]
    for target in hostile:
        world.audit.record("=cmd|' /C calc'!A0", AuditAction.LOGIN, target, {"note": "=1+1"})

    async with root.client.get(EVENTS, params={"format": "csv"}, headers=root.headers) as got:
        assert got.status == 200
        assert got.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "attachment" in got.headers["Content-Disposition"]
        text = await got.text()

    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "time", "actor", "action", "target", "detail"]
    targets = [row[4] for row in rows[1:]]
    assert targets == ["plain", "'\tx", "'@SUM(A1)", "'-2", "'+1", '\'=HYPERLINK("http://evil")']
    for row in rows[1:]:
        assert row[2] == "'=cmd|' /C calc'!A0"
        assert json.loads(row[5]) == {"note": "=1+1"}
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t"))


async def test_users_are_forbidden_and_anonymous_callers_unauthorized(
    alice: ApiClient, client: TestClient[Any, Any]
) -> None:
    status, body, _ = await alice.call("GET", EVENTS)
    anonymous, _, _ = await ApiClient(client, None).call("GET", EVENTS)

    assert (status, body["type"]) == (403, "Forbidden")
    assert anonymous == 401


async def test_a_browser_sign_in_is_recorded(
    client: TestClient[Any, Any], world: World, root: ApiClient
) -> None:
    await sign_in(client, world, "alice")

    body = await _events(root, action="login")

    (event,) = body["items"].values()
    assert (event["actor"], event["target"], event["detail"]) == (
        "alice",
        "alice",
        {"admin": False},
    )


async def test_a_database_that_fails_never_fails_the_action(
    root: ApiClient, alice: ApiClient, world: World
) -> None:
    world.events.failing = True

    ids = await _story(root, alice)
    status, body, _ = await root.call("GET", EVENTS)
    world.events.failing = False
    listed = await _events(root)

    assert ids["url_id"]
    assert status == 503
    assert body["type"] == "Unable"
    assert listed["total"] == 6
