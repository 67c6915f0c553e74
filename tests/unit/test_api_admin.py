"""The admin REST API ({svc}api/v1/admin/) over in-memory fakes: shapes, status codes, effects."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from remoteappmanager.domain.containers import RUNINFO_NAMESPACE
from remoteappmanager.web.keys import API_REGISTRY
from tests.support.webapp import (
    API,
    REALM,
    ApiClient,
    World,
    cookie,
    make_app,
    sign_in,
)

NS = "eu.simphony-project.docker."
DESKTOP = "remoteapp-test/desktop:latest"
WEBAPP = "remoteapp-test/web:latest"
MISSING = "remoteapp-test/not-built:1.0"
ICON = "iVBORw0KGgo="
DESKTOP_LABELS = {
    NS + "ui_name": "Desktop <b>bold</b>",
    NS + "description": "A desktop",
    NS + "icon_128": ICON,
    NS + "type": "vncapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}
WEB_LABELS = {NS + "ui_name": "Web", NS + "type": "webapp"}

ADMIN = API + "v1/admin/"
USERS = ADMIN + "users/"
APPLICATIONS = ADMIN + "applications/"
ACCOUNTING = ADMIN + "accounting/"
CONTAINERS = ADMIN + "containers/"
STATS = ADMIN + "stats/"
USER_APPLICATIONS = API + "v1/applications/"
USER_CONTAINERS = API + "v1/containers/"
OPENAPI = API + "openapi.json"


class Api(ApiClient):
    """An API client: ``Authorization: token`` for one hub user (or anonymous)."""

    async def create(self, collection: str, payload: dict[str, Any]) -> str:
        """POST and return the new entry's id (the last part of its Location)."""
        status, body, headers = await self.call("POST", collection, json=payload)
        assert status == 201, body
        assert body is None
        location = headers["Location"]
        assert location.startswith(collection)
        assert location.endswith("/")
        return str(location.removeprefix(collection).rstrip("/"))

    async def grants(self, user_id: str) -> dict[str, Any]:
        status, body, _ = await self.call(
            "GET", ACCOUNTING, params={"filter": json.dumps({"user_id": user_id})}
        )
        assert status == 200, body
        return dict(body)


def _grant(user_id: str, image: str = WEBAPP, **policy: Any) -> dict[str, Any]:
    return {"user_id": user_id, "image_name": image, **policy}


@pytest.fixture
def world() -> World:
    world = World()
    world.runtime.add_image(DESKTOP, DESKTOP_LABELS)
    world.runtime.add_image(WEBAPP, WEB_LABELS)
    world.hub.add_user("root", admin=True)
    world.hub.add_user("alice")
    world.hub.add_user("bob")
    return world


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world))


@pytest.fixture
def root(client: TestClient[Any, Any], world: World) -> Api:
    return Api(client, world.hub.issue_token("root"))


@pytest.fixture
def alice(client: TestClient[Any, Any], world: World) -> Api:
    return Api(client, world.hub.issue_token("alice"))


@pytest.fixture
def bob(client: TestClient[Any, Any], world: World) -> Api:
    return Api(client, world.hub.issue_token("bob"))


@pytest.fixture
async def ids(root: Api) -> dict[str, str]:
    """alice, bob, and both images registered through the API: name → id."""
    found = {}
    for name in ("alice", "bob"):
        found[name] = await root.create(USERS, {"name": name})
    for image in (DESKTOP, WEBAPP):
        found[image] = await root.create(APPLICATIONS, {"image_name": image})
    return found


async def _start(user: Api, mapping_id: str) -> str:
    status, body, headers = await user.call(
        "POST", USER_CONTAINERS, json={"mapping_id": mapping_id}
    )
    assert status == 201, body
    return str(headers["Location"].removeprefix(USER_CONTAINERS).rstrip("/"))


# ------------------------------------------------------------------------------ users
async def test_users_are_created_listed_fetched_and_removed(root: Api) -> None:
    status, body, headers = await root.call("GET", USERS)
    assert (status, body) == (200, {"offset": 0, "total": 0, "items": {}, "identifiers": []})
    assert headers["Cache-Control"] == "no-store"

    alice = await root.create(USERS, {"name": "alice"})
    bob = await root.create(USERS, {"name": "bob"})
    assert alice.isdigit()
    status, body, _ = await root.call("GET", USERS)
    assert status == 200
    assert body == {
        "offset": 0,
        "total": 2,
        "items": {alice: {"id": alice, "name": "alice"}, bob: {"id": bob, "name": "bob"}},
        "identifiers": [alice, bob],
    }
    status, body, _ = await root.call("GET", USERS + alice + "/")
    assert (status, body) == (200, {"id": alice, "name": "alice"})

    status, body, _ = await root.call("DELETE", USERS + alice + "/")
    assert (status, body) == (204, None)
    _, body, _ = await root.call("GET", USERS)
    assert body["identifiers"] == [bob]
    status, body, _ = await root.call("DELETE", USERS + alice + "/")
    assert (status, body["type"]) == (404, "NotFound")


async def test_a_duplicate_user_is_a_conflict(root: Api) -> None:
    await root.create(USERS, {"name": "alice"})
    status, body, _ = await root.call("POST", USERS, json={"name": "alice"})
    assert (status, body["type"]) == (409, "Exists")
    assert "alice" in body["message"]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"name": ""}',
        b'{"name": " alice"}',
        b'{"name": "a/b"}',
        b'{"name": "' + b"x" * 300 + b'"}',
        b'{"name": 12}',
        b"{}",
        b'{"name": "alice", "admin": true}',
        b"{not json",
        b"",
    ],
)
async def test_an_invalid_user_is_a_bad_representation(root: Api, payload: bytes) -> None:
    status, body, _ = await root.call(
        "POST", USERS, data=payload, headers={"Content-Type": "application/json"}
    )
    assert (status, body["type"]) == (400, "BadRepresentation"), body
    _, listed, _ = await root.call("GET", USERS)
    assert listed["total"] == 0


@pytest.mark.parametrize("collection", [USERS, APPLICATIONS])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("identifier", "status"),
    [
        ("abc", 400),
        ("-1", 400),
        ("1.5", 400),
        ("1e3", 400),
        ("%20", 400),
        ("1%0A", 400),
        ("9" * 19, 400),
        ("99999999999", 404),  # a number, but beyond what the database holds
        ("0", 404),
        ("4242", 404),
    ],
)
async def test_malformed_ids_are_400_and_unknown_ids_404(
    root: Api, collection: str, method: str, identifier: str, status: int
) -> None:
    answered, body, _ = await root.call(method, collection + identifier + "/")
    assert answered == status, body
    assert body["type"] == ("BadRepresentation" if status == 400 else "NotFound")


async def test_removing_a_user_takes_their_grants_and_stops_their_containers(
    root: Api, alice: Api, bob: Api, ids: dict[str, str], world: World
) -> None:
    alices = await root.create(ACCOUNTING, _grant(ids["alice"]))
    bobs = await root.create(ACCOUNTING, _grant(ids["bob"]))
    await _start(alice, alices)
    bob_url_id = await _start(bob, bobs)

    status, _, _ = await root.call("DELETE", USERS + ids["alice"] + "/")
    assert status == 204
    _, listed, _ = await root.call("GET", CONTAINERS)
    assert listed["identifiers"] == [bob_url_id]
    assert len(world.runtime.container_ids) == 1
    status, body, _ = await root.call("GET", ACCOUNTING + alices + "/")
    assert (status, body["type"]) == (404, "NotFound")
    status, body, _ = await root.call(
        "GET", ACCOUNTING, params={"filter": json.dumps({"user_id": ids["alice"]})}
    )
    assert (status, body["type"]) == (404, "NotFound")


# ------------------------------------------------------------------------------ applications
async def test_applications_list_the_image_the_engine_has_and_what_it_declares(
    root: Api,
) -> None:
    desktop = await root.create(APPLICATIONS, {"image_name": DESKTOP})
    missing = await root.create(APPLICATIONS, {"image_name": MISSING})
    status, body, _ = await root.call("GET", APPLICATIONS)
    assert status == 200
    assert body["identifiers"] == [desktop, missing]
    assert body["total"] == 2
    assert body["items"][desktop] == {
        "id": desktop,
        "image_name": DESKTOP,
        "available": True,
        "unavailable_reason": None,
        "image": {
            "ui_name": "Desktop <b>bold</b>",
            "icon_128": ICON,
            "description": "A desktop",
            "type": "vncapp",
            "env": ["STARTUPDATA", "X11_HEIGHT", "X11_WIDTH"],
        },
    }
    assert body["items"][missing] == {
        "id": missing,
        "image_name": MISSING,
        "available": False,
        "unavailable_reason": "the image is not on the Docker engine",
        "image": None,
    }
    status, body, _ = await root.call("GET", APPLICATIONS + desktop + "/")
    assert (status, body["image_name"], body["available"]) == (200, DESKTOP, True)


async def test_the_catalogue_is_managed_while_the_engine_is_down(root: Api, world: World) -> None:
    world.runtime.available = False
    world.engine_changed()
    application = await root.create(APPLICATIONS, {"image_name": DESKTOP})
    status, body, _ = await root.call("GET", APPLICATIONS)
    assert status == 200
    assert body["items"][application]["available"] is None
    assert body["items"][application]["image"] is None
    status, body, _ = await root.call("GET", CONTAINERS)
    assert (status, body["type"]) == (503, "Unable")


async def test_one_bad_application_row_never_breaks_the_admin_listing(
    root: Api, world: World
) -> None:
    good = await root.create(APPLICATIONS, {"image_name": DESKTOP})
    async with world.database.unit_of_work() as uow:
        bad = str((await uow.applications.add("a" * 238)).id)
        await uow.commit()
    for _ in range(2):
        status, body, _ = await root.call("GET", APPLICATIONS)
        assert status == 200, body
        assert body["identifiers"] == [good, bad]
        assert body["items"][good]["available"] is True
        assert body["items"][bad]["available"] is False
        assert "longer than 255" in body["items"][bad]["unavailable_reason"]
    status, body, _ = await root.call("GET", APPLICATIONS + bad + "/")
    assert (status, body["available"], body["image"]) == (200, False, None)
    # And it can be removed like any other.
    status, _, _ = await root.call("DELETE", APPLICATIONS + bad + "/")
    assert status == 204


@pytest.mark.parametrize(
    "image",
    ["a" * 238, "x/" + "a" * 244, "foo:" + "t" * 129, "foo@sha256:" + "a" * 32, "Upper/case"],
)
async def test_references_the_engine_would_refuse_are_not_registered(
    root: Api, world: World, image: str
) -> None:
    status, body, _ = await root.call("POST", APPLICATIONS, json={"image_name": image})
    assert (status, body["type"]) == (400, "BadRepresentation")
    assert "not a valid Docker image name" in body["message"]
    status, body, _ = await root.call("GET", APPLICATIONS)
    assert (status, body["total"]) == (200, 0)


async def test_an_image_built_after_registration_shows_as_available(
    root: Api, world: World
) -> None:
    application = await root.create(APPLICATIONS, {"image_name": MISSING})
    _, body, _ = await root.call("GET", APPLICATIONS + application + "/")
    assert body["available"] is False
    world.runtime.add_image(MISSING, WEB_LABELS)
    world.engine_changed()
    _, body, _ = await root.call("GET", APPLICATIONS + application + "/")
    assert body["available"] is True


async def test_a_duplicate_application_is_a_conflict(root: Api) -> None:
    await root.create(APPLICATIONS, {"image_name": WEBAPP})
    status, body, _ = await root.call("POST", APPLICATIONS, json={"image_name": WEBAPP})
    assert (status, body["type"]) == (409, "Exists")
    _, listed, _ = await root.call("GET", APPLICATIONS)
    assert listed["total"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"image_name": "Not An Image"},
        {"image_name": "UPPER/case"},
        {"image_name": "repo/name:tag;rm -rf"},
        {"image_name": ""},
        {"image_name": None},
        {"name": WEBAPP},
        {"image_name": WEBAPP, "verify": True},
    ],
)
async def test_an_invalid_image_name_is_a_bad_representation(
    root: Api, payload: dict[str, Any]
) -> None:
    status, body, _ = await root.call("POST", APPLICATIONS, json=payload)
    assert (status, body["type"]) == (400, "BadRepresentation"), body


async def test_removing_an_application_cascades_its_grants_and_stops_its_containers(
    root: Api, alice: Api, bob: Api, ids: dict[str, str], world: World
) -> None:
    web_alice = await root.create(ACCOUNTING, _grant(ids["alice"], WEBAPP))
    desktop_alice = await root.create(ACCOUNTING, _grant(ids["alice"], DESKTOP))
    web_bob = await root.create(ACCOUNTING, _grant(ids["bob"], WEBAPP, allow_home=True))
    await _start(alice, web_alice)
    await _start(bob, web_bob)
    desktop_url_id = await _start(alice, desktop_alice)

    status, body, _ = await root.call("DELETE", APPLICATIONS + ids[WEBAPP] + "/")
    assert (status, body) == (204, None)

    assert list((await root.grants(ids["alice"]))["items"]) == [desktop_alice]
    assert (await root.grants(ids["bob"]))["total"] == 0
    _, listed, _ = await root.call("GET", CONTAINERS)
    assert listed["identifiers"] == [desktop_url_id]
    assert len(world.runtime.container_ids) == 1
    # The users' pages agree at once.
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["identifiers"] == [desktop_alice]
    _, bobs, _ = await bob.call("GET", USER_APPLICATIONS)
    assert bobs["total"] == 0
    _, apps, _ = await root.call("GET", APPLICATIONS)
    assert apps["identifiers"] == [ids[DESKTOP]]


async def test_an_application_whose_container_cannot_be_stopped_is_kept(
    root: Api, alice: Api, ids: dict[str, str], world: World
) -> None:
    mapping_id = await root.create(ACCOUNTING, _grant(ids["alice"], WEBAPP))
    await _start(alice, mapping_id)
    world.routes.available = False
    status, body, _ = await root.call("DELETE", APPLICATIONS + ids[WEBAPP] + "/")
    assert (status, body["type"]) == (503, "Unable")
    world.routes.available = True
    assert (await root.grants(ids["alice"]))["identifiers"] == [mapping_id]
    status, _, _ = await root.call("DELETE", APPLICATIONS + ids[WEBAPP] + "/")
    assert status == 204
    assert world.runtime.container_ids == frozenset()


# ------------------------------------------------------------------------------ accounting
async def test_grants_are_created_listed_and_revoked(
    root: Api, alice: Api, ids: dict[str, str]
) -> None:
    mapping_id = await root.create(
        ACCOUNTING,
        {
            "user_id": ids["alice"],
            "image_name": DESKTOP,
            "app_license": "LIC-42",
            "allow_home": True,
            "allow_view": True,
            "allow_common": False,
            "volume_source": "/data/shared/",
            "volume_target": "/mnt/shared",
            "volume_mode": "rw",
            "allow_startup_data": True,
            "placement": ["node.labels.gpu==true", "node.role!=manager"],
            "memory_limit_mb": 512,
            "cpu_limit": 0.5,
            "pids_limit": 128,
            "idle_timeout_s": 600,
            "max_lifetime_s": 0,
        },
    )
    assert len(mapping_id) == 32
    body = await root.grants(ids["alice"])
    assert body["identifiers"] == [mapping_id]
    assert body["items"][mapping_id] == {
        "mapping_id": mapping_id,
        "user_id": ids["alice"],
        "user_name": "alice",
        "group": None,
        "application_id": ids[DESKTOP],
        "image_name": DESKTOP,
        "app_license": "LIC-42",
        "allow_home": True,
        "allow_view": True,
        "allow_common": False,
        "volume_source": "/data/shared",
        "volume_target": "/mnt/shared",
        "volume_mode": "rw",
        "allow_startup_data": True,
        "placement": ["node.labels.gpu==true", "node.role!=manager"],
        "memory_limit_mb": 512,
        "cpu_limit": 0.5,
        "pids_limit": 128,
        "idle_timeout_s": 600,
        "max_lifetime_s": 0,
    }
    status, one, _ = await root.call("GET", ACCOUNTING + mapping_id + "/")
    assert (status, one) == (200, body["items"][mapping_id])
    # The user sees it at once, with the policy given.
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["items"][mapping_id]["policy"]["app_license"] == "LIC-42"

    status, body, _ = await root.call("DELETE", ACCOUNTING + mapping_id + "/")
    assert (status, body) == (204, None)
    assert (await root.grants(ids["alice"]))["total"] == 0
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["total"] == 0
    status, body, _ = await root.call("DELETE", ACCOUNTING + mapping_id + "/")
    assert (status, body["type"]) == (404, "NotFound")


async def test_the_same_grant_twice_is_the_same_mapping_id(root: Api, ids: dict[str, str]) -> None:
    payload = _grant(ids["alice"], WEBAPP, allow_home=True, volume="/data:/data:ro")
    first = await root.call("POST", ACCOUNTING, json=payload)
    # The id as a number and the application by id name the same grant.
    again = dict(payload, user_id=int(ids["alice"]))
    del again["image_name"]
    again["application_id"] = ids[WEBAPP]
    second = await root.call("POST", ACCOUNTING, json=again)
    assert first[0] == second[0] == 201
    assert first[2]["Location"] == second[2]["Location"]
    assert (await root.grants(ids["alice"]))["total"] == 1

    other = await root.create(ACCOUNTING, dict(payload, allow_home=False))
    assert other != first[2]["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert (await root.grants(ids["alice"]))["total"] == 2
    # Differing only in placement: another policy; the same constraints in another order
    # are the same one.
    gpu = await root.create(ACCOUNTING, dict(payload, placement=["node.labels.gpu==true"]))
    assert gpu not in (other, first[2]["Location"].rstrip("/").rsplit("/", 1)[-1])
    both = ["node.labels.gpu==true", "node.role==worker"]
    one_way = await root.create(ACCOUNTING, dict(payload, placement=both))
    other_way = await root.create(ACCOUNTING, dict(payload, placement=both[::-1]))
    assert one_way == other_way
    assert (await root.grants(ids["alice"]))["total"] == 4


@pytest.mark.parametrize(
    "placement",
    [
        ["node.labels.gpu=true"],
        ["gpu==true"],
        ["node.labels.gpu==true\n"],
        ["node.labels.gpu==true && x"],
        ["node.labels.==true"],
        ["node.labels.gpu=="],
        "node.labels.gpu==true",
        ["node.labels.a==b"] * 1 + [f"node.labels.n{i}==x" for i in range(16)],
    ],
)
async def test_a_malformed_placement_is_refused_and_grants_nothing(
    root: Api, ids: dict[str, str], placement: object
) -> None:
    payload = dict(_grant(ids["alice"], WEBAPP), placement=placement)
    status, body, _ = await root.call("POST", ACCOUNTING, json=payload)
    assert (status, body["type"]) == (400, "BadRepresentation")
    assert (await root.grants(ids["alice"]))["total"] == 0


async def test_the_original_clients_grant_without_a_volume(root: Api, ids: dict[str, str]) -> None:
    # What the original admin page sends when no volume is wanted.
    mapping_id = await root.create(
        ACCOUNTING,
        {
            "user_id": ids["bob"],
            "image_name": WEBAPP,
            "app_license": "",
            "allow_home": False,
            "volume_source": "",
            "volume_target": "",
            "volume_mode": "rw",
            "allow_startup_data": False,
        },
    )
    item = (await root.grants(ids["bob"]))["items"][mapping_id]
    assert (item["volume_source"], item["volume_mode"], item["app_license"]) == (None, None, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"volume_source": "/data"},
        {"volume_target": "/data"},
        {"volume_source": "data", "volume_target": "/data"},
        {"volume_source": "/data/../etc", "volume_target": "/data"},
        {"volume_source": "/a", "volume_target": "/b", "volume_mode": "rx"},
        {"volume": "/a:/b"},
        {"volume": "/a:/b:ro", "volume_source": "/a", "volume_target": "/b"},
        {"image_name": None},
        {"application_id": "1"},
        {"user_id": "alice"},
        {"user_id": None},
        {"user_id": "0"},
        {"user_id": True},
        {"user_id": 1.5},
        {"user_id": " 1"},
        {"allow_home": "perhaps"},
        {"app_license": "x" * 5000},
        {"allow_everything": True},
    ],
)
async def test_invalid_grants_are_bad_representations(
    root: Api, ids: dict[str, str], changes: dict[str, Any]
) -> None:
    payload = {k: v for k, v in {**_grant(ids["alice"]), **changes}.items() if v is not None}
    status, body, _ = await root.call("POST", ACCOUNTING, json=payload)
    assert (status, body["type"]) == (400, "BadRepresentation"), body
    assert (await root.grants(ids["alice"]))["total"] == 0


# What the admin page's grant form sends (volume_source, volume_target, volume_mode), with a
# source an attacker with the admin's ear would like mounted. VOLUME_ROOT (/data) is the root.
@pytest.mark.parametrize(
    ("source", "target", "reason"),
    [
        ("/var/run/docker.sock", "/var/run/docker.sock", "Docker socket"),
        ("/data/docker.sock", "/run/docker.sock", "Docker socket"),
        ("/", "/host", "never mounted"),
        ("/etc", "/data", "never mounted"),
        ("/proc", "/data", "never mounted"),
        ("/var/lib/docker", "/data", "never mounted"),
        ("/root", "/data", "never mounted"),
        ("/home/alice", "/data", "outside the folders grants may mount"),
        ("/data/escape", "/data", "symbolic link"),
        ("/data/project", "/proc/sys", "volume target"),
        ("/data/project", "/", "volume target"),
        ("/data/project", "/dev/shm", "volume target"),
    ],
)
async def test_dangerous_volumes_are_refused_and_nothing_is_written(
    root: Api, ids: dict[str, str], world: World, source: str, target: str, reason: str
) -> None:
    world.host_paths.paths.update({"/data", "/data/project", "/etc"})
    world.host_paths.links["/data/escape"] = "/etc"
    payload = _grant(ids["alice"], volume_source=source, volume_target=target, volume_mode="rw")

    status, body, _ = await root.call("POST", ACCOUNTING, json=payload)

    # Well-formed, but this deployment does not allow it: 403, as for other refusals.
    assert (status, body["type"]) == (403, "Forbidden"), body
    assert reason in body["message"]
    assert (await root.grants(ids["alice"]))["total"] == 0
    # The combined form is judged the same way.
    status, body, _ = await root.call(
        "POST", ACCOUNTING, json=_grant(ids["alice"], volume=f"{source}:{target}:ro")
    )
    assert (status, body["type"]) == (403, "Forbidden"), body
    assert (await root.grants(ids["alice"]))["total"] == 0


async def test_a_volume_under_the_root_is_granted(root: Api, ids: dict[str, str]) -> None:
    payload = _grant(
        ids["alice"], volume_source="/data/project", volume_target="/data", volume_mode="ro"
    )

    mapping_id = await root.create(ACCOUNTING, payload)

    item = (await root.grants(ids["alice"]))["items"][mapping_id]
    assert (item["volume_source"], item["volume_target"]) == ("/data/project", "/data")


async def test_an_integral_number_is_an_id_as_json_schema_has_it(
    root: Api, ids: dict[str, str]
) -> None:
    payload = {**_grant(ids["alice"]), "user_id": float(ids["alice"])}
    status, body, _ = await root.call("POST", ACCOUNTING, json=payload)
    assert status == 201, body
    assert (await root.grants(ids["alice"]))["total"] == 1


@pytest.mark.parametrize(
    "changes",
    [{"user_id": "4242"}, {"image_name": MISSING}, {"image_name": None, "application_id": 4242}],
)
async def test_grants_of_unknown_users_or_applications_are_not_found(
    root: Api, ids: dict[str, str], changes: dict[str, Any]
) -> None:
    payload = {k: v for k, v in {**_grant(ids["alice"]), **changes}.items() if v is not None}
    status, body, _ = await root.call("POST", ACCOUNTING, json=payload)
    assert (status, body["type"]) == (404, "NotFound"), body


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"filter": ""}, "filter query argument is required"),
        ({"filter": "{user_id: 1}"}, "not valid JSON"),
        ({"filter": "[]"}, "filter"),
        ({"filter": "{}"}, "user_id"),
        ({"filter": '{"user_id": "x"}'}, "user_id"),
        ({"filter": '{"user_id": true}'}, "user_id"),
        ({"filter": '{"user_id": "1", "image_name": "x"}'}, "image_name"),
    ],
)
async def test_a_grant_filter_must_name_a_user(
    root: Api, ids: dict[str, str], query: dict[str, str], says: str
) -> None:
    status, body, _ = await root.call("GET", ACCOUNTING, params=query)
    assert (status, body["type"]) == (400, "BadRepresentation"), body
    assert says in body["message"]
    assert '?filter={"user_id": "<id>"}' in body["message"]


async def test_grants_of_an_unknown_user_are_not_found(root: Api) -> None:
    status, body, _ = await root.call(
        "GET", ACCOUNTING, params={"filter": json.dumps({"user_id": "4242"})}
    )
    assert (status, body["type"]) == (404, "NotFound")


@pytest.mark.parametrize(
    ("mapping_id", "status"),
    [("a.b", 400), ("x" * 65, 400), (quote("a b"), 400), ("f" * 32 + "%0A", 400), ("f" * 32, 404)],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_malformed_mapping_ids_are_400_and_unknown_404(
    root: Api, mapping_id: str, status: int, method: str
) -> None:
    answered, body, _ = await root.call(method, ACCOUNTING + mapping_id + "/")
    assert answered == status, body


async def test_revoking_a_grant_stops_its_container(
    root: Api, alice: Api, ids: dict[str, str], world: World
) -> None:
    stopped = await root.create(ACCOUNTING, _grant(ids["alice"], WEBAPP))
    kept = await root.create(ACCOUNTING, _grant(ids["alice"], DESKTOP))
    await _start(alice, stopped)
    kept_url_id = await _start(alice, kept)
    status, _, _ = await root.call("DELETE", ACCOUNTING + stopped + "/")
    assert status == 204
    _, mine, _ = await alice.call("GET", USER_CONTAINERS)
    assert mine["identifiers"] == [kept_url_id]
    assert len(world.routes.all_paths) == 1


async def test_grant_changes_show_on_a_users_page_at_once_despite_its_cache(
    world: World, aiohttp_client: Any
) -> None:
    # The user page keeps grants for a while; admin changes must not wait for that.
    client = await aiohttp_client(make_app(world))
    root = Api(client, world.hub.issue_token("root"))
    alice = Api(client, world.hub.issue_token("alice"))
    alice_id = await root.create(USERS, {"name": "alice"})
    await root.create(APPLICATIONS, {"image_name": WEBAPP})
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["total"] == 0

    mapping_id = await root.create(ACCOUNTING, _grant(alice_id))
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["identifiers"] == [mapping_id]

    await root.call("DELETE", ACCOUNTING + mapping_id + "/")
    _, mine, _ = await alice.call("GET", USER_APPLICATIONS)
    assert mine["total"] == 0


# ------------------------------------------------------------------------------ containers
async def test_admins_see_and_stop_everybodys_containers(
    root: Api, alice: Api, bob: Api, ids: dict[str, str], world: World
) -> None:
    alices = await root.create(ACCOUNTING, _grant(ids["alice"]))
    bobs = await root.create(ACCOUNTING, _grant(ids["bob"]))
    alice_url_id = await _start(alice, alices)
    bob_url_id = await _start(bob, bobs)

    status, body, _ = await root.call("GET", CONTAINERS)
    assert status == 200
    assert body["total"] == 2
    assert sorted(body["identifiers"]) == sorted([alice_url_id, bob_url_id])
    bobs_container = body["items"][bob_url_id]
    assert bobs_container["user"] == "bob"
    assert bobs_container["mapping_id"] == bobs
    assert bobs_container["image_name"] == WEBAPP
    assert bobs_container["state"] == "running"
    assert bobs_container["docker_id"] in world.runtime.container_ids
    assert bobs_container["urlpath"] == f"/user/bob/containers/{bob_url_id}"
    assert bobs_container["name"].startswith(REALM + ".bob.")
    status, one, _ = await root.call("GET", CONTAINERS + bob_url_id + "/")
    assert (status, one) == (200, bobs_container)

    status, body, _ = await root.call("DELETE", CONTAINERS + bob_url_id + "/")
    assert (status, body) == (204, None)
    _, bobs_list, _ = await bob.call("GET", USER_CONTAINERS)
    assert bobs_list["total"] == 0
    _, alices_list, _ = await alice.call("GET", USER_CONTAINERS)
    assert alices_list["identifiers"] == [alice_url_id]
    _, body, _ = await root.call("GET", CONTAINERS)
    assert body["identifiers"] == [alice_url_id]
    status, body, _ = await root.call("DELETE", CONTAINERS + bob_url_id + "/")
    assert (status, body["type"]) == (404, "NotFound")


@pytest.mark.parametrize(
    "label",
    [
        {"mapping_id": "not a mapping id!"},
        {"url_id": "SHOUTING"},
        {"urlpath": "/hub/admin"},
        {"user": "a/b"},
        {"user": ""},
    ],
)
async def test_a_container_with_malformed_labels_never_breaks_a_listing(
    root: Api, alice: Api, ids: dict[str, str], world: World, label: dict[str, str]
) -> None:
    mapping_id = await root.create(ACCOUNTING, _grant(ids["alice"]))
    url_id = await _start(alice, mapping_id)
    (container_id,) = world.runtime.container_ids
    spec = world.runtime.spec_of(container_id)
    # A container of our realm whose labels were written by someone else.
    labels = dict(spec.labels)
    for key, value in label.items():
        labels[RUNINFO_NAMESPACE + key] = value
    odd = replace(spec, name=spec.name + ".odd", labels=labels)
    await world.runtime.start(await world.runtime.create(odd))

    status, body, _ = await root.call("GET", CONTAINERS)
    assert (status, body["identifiers"]) == (200, [url_id])
    status, body, _ = await alice.call("GET", USER_CONTAINERS)
    assert (status, body["identifiers"]) == (200, [url_id])
    status, body, _ = await alice.call("GET", USER_APPLICATIONS)
    assert status == 200
    assert body["items"][mapping_id]["container"]["url_id"] == url_id
    status, _, _ = await root.call("GET", STATS)
    assert status == 200


@pytest.mark.parametrize(
    ("url_id", "status"),
    [("short", 400), ("A" * 26, 400), ("a" * 65, 400), ("a-b" * 10, 400), ("a" * 26, 404)],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_malformed_url_ids_are_400_and_unknown_404(
    root: Api, url_id: str, status: int, method: str
) -> None:
    answered, body, _ = await root.call(method, CONTAINERS + url_id + "/")
    assert answered == status, body


# ------------------------------------------------------------------------------ stats
async def test_stats_count_users_applications_and_running_containers(
    root: Api, alice: Api, bob: Api, ids: dict[str, str]
) -> None:
    status, body, _ = await root.call("GET", STATS)
    assert (status, body) == (
        200,
        {
            "realm": REALM,
            "num_total_users": 2,
            "num_active_users": 0,
            "num_applications": 2,
            "num_running_containers": 0,
        },
    )
    await root.create(USERS, {"name": "carol"})
    await _start(alice, await root.create(ACCOUNTING, _grant(ids["alice"], WEBAPP)))
    await _start(alice, await root.create(ACCOUNTING, _grant(ids["alice"], DESKTOP)))
    bob_url_id = await _start(bob, await root.create(ACCOUNTING, _grant(ids["bob"])))
    _, body, _ = await root.call("GET", STATS)
    assert body == {
        "realm": REALM,
        "num_total_users": 3,
        "num_active_users": 2,
        "num_applications": 2,
        "num_running_containers": 3,
    }
    await root.call("DELETE", CONTAINERS + bob_url_id + "/")
    _, body, _ = await root.call("GET", STATS)
    assert (body["num_active_users"], body["num_running_containers"]) == (1, 2)


# ------------------------------------------------------------------------------ who may call
ROUTES = [
    ("GET", USERS),
    ("POST", USERS),
    ("GET", USERS + "1/"),
    ("DELETE", USERS + "1/"),
    ("GET", APPLICATIONS),
    ("POST", APPLICATIONS),
    ("GET", APPLICATIONS + "1/"),
    ("DELETE", APPLICATIONS + "1/"),
    ("GET", ACCOUNTING + '?filter={"user_id":"1"}'),
    ("POST", ACCOUNTING),
    ("GET", ACCOUNTING + "f" * 32 + "/"),
    ("DELETE", ACCOUNTING + "f" * 32 + "/"),
    ("GET", CONTAINERS),
    ("GET", CONTAINERS + "a" * 26 + "/"),
    ("DELETE", CONTAINERS + "a" * 26 + "/"),
    ("GET", STATS),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_anonymous_callers_are_unauthorized(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    status, body, headers = await Api(client, None).call(method, path, json={"name": "x"})
    assert (status, body["type"]) == (401, "Unauthorized")
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_users_who_are_not_admins_are_forbidden(alice: Api, method: str, path: str) -> None:
    status, body, _ = await alice.call(method, path, json={"name": "mallory"})
    assert (status, body["type"]) == (403, "Forbidden")
    assert "administrator" in body["message"]


async def test_non_admins_change_nothing(alice: Api, root: Api, ids: dict[str, str]) -> None:
    for method, path, payload in [
        ("POST", USERS, {"name": "mallory"}),
        ("DELETE", USERS + ids["bob"] + "/", None),
        ("POST", APPLICATIONS, {"image_name": MISSING}),
        ("POST", ACCOUNTING, _grant(ids["alice"])),
    ]:
        status, _, _ = await alice.call(method, path, json=payload)
        assert status == 403
    _, users, _ = await root.call("GET", USERS)
    assert users["total"] == 2
    _, apps, _ = await root.call("GET", APPLICATIONS)
    assert apps["total"] == 2
    assert (await root.grants(ids["alice"]))["total"] == 0


async def test_members_of_the_admin_group_are_admins(world: World, aiohttp_client: Any) -> None:
    world.hub.add_user("carol", groups=frozenset({"remoteapp-admins"}))
    client = await aiohttp_client(make_app(world, admin_group="remoteapp-admins"))
    status, _, _ = await Api(client, world.hub.issue_token("carol")).call("GET", STATS)
    assert status == 200
    world.hub.set_groups("carol", frozenset())
    status, _, _ = await Api(client, world.hub.issue_token("carol")).call("GET", STATS)
    assert status == 403


async def test_an_admin_taken_away_in_the_hub_is_refused_once_the_answer_expires(
    root: Api, world: World
) -> None:
    assert (await root.call("GET", STATS))[0] == 200
    world.hub.set_admin("root", False)
    # The hub's answer is cached for its stated time, then the change holds.
    assert (await root.call("GET", STATS))[0] == 200
    world.hub_changed()
    status, body, _ = await root.call("GET", STATS)
    assert (status, body["type"]) == (403, "Forbidden")


async def test_cookie_sessions_need_the_xsrf_token_to_change_anything(
    client: TestClient[Any, Any], world: World
) -> None:
    await sign_in(client, world, "root")
    async with client.get(USERS) as response:
        assert response.status == 200
    async with client.post(USERS, json={"name": "alice"}) as refused:
        assert refused.status == 403
        assert "XSRF" in (await refused.json())["message"]
    token = cookie(client, "_xsrf")
    assert token
    async with client.post(
        USERS, json={"name": "alice"}, headers={"X-XSRFToken": token}
    ) as created:
        assert created.status == 201
        location = created.headers["Location"]
    async with client.delete(location) as refused:
        assert refused.status == 403
    async with client.delete(location, headers={"X-XSRFToken": token}) as deleted:
        assert deleted.status == 204


# ------------------------------------------------------------------------------ OpenAPI
async def test_the_openapi_document_lists_the_admin_routes_and_still_validates(
    client: TestClient[Any, Any],
) -> None:
    async with client.get(OPENAPI) as response:
        assert response.status == 200
        document = await response.json()
    validate(document)

    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(API + "v1/")
        and route.method != "HEAD"
    }
    assert documented == served
    assert len(client.app[API_REGISTRY].operations) == len(documented)
    for method, path in [
        ("GET", USERS),
        ("POST", USERS),
        ("DELETE", USERS + "{id}/"),
        ("GET", APPLICATIONS),
        ("POST", APPLICATIONS),
        ("DELETE", APPLICATIONS + "{id}/"),
        ("GET", ACCOUNTING),
        ("POST", ACCOUNTING),
        ("DELETE", ACCOUNTING + "{mapping_id}/"),
        ("GET", CONTAINERS),
        ("DELETE", CONTAINERS + "{url_id}/"),
        ("GET", STATS),
    ]:
        assert (method, path) in documented, (method, path)
        operation = document["paths"][path][method.lower()]
        assert operation["tags"] == ["admin"]
        assert {"401", "403"} <= operation["responses"].keys()
    # The user API is still there.
    assert ("POST", USER_CONTAINERS) in documented

    listing = document["paths"][ACCOUNTING]["get"]
    parameters = {p["name"]: (p["in"], p["required"]) for p in listing["parameters"]}
    assert parameters == {
        "filter": ("query", False),
        "limit": ("query", False),
        "offset": ("query", False),
    }
    assert "400" in listing["responses"]
    create = document["paths"][ACCOUNTING]["post"]
    assert create["responses"]["201"]["headers"]["Location"]
    schemas = document["components"]["schemas"]
    assert schemas["AdminGrantCreate"]["additionalProperties"] is False
    assert {"user_id", "image_name", "application_id", "volume", "volume_source"} <= set(
        schemas["AdminGrantCreate"]["properties"]
    )
    assert set(schemas["AdminStatsOut"]["properties"]) == {
        "realm",
        "num_total_users",
        "num_active_users",
        "num_applications",
        "num_running_containers",
    }
    # The user API's models are untouched by the admin ones.
    assert set(schemas["ApplicationOut"]["properties"]) == {
        "mapping_id",
        "available",
        "unavailable_reason",
        "image",
        "policy",
        "limits",
        "container",
        "last_stop",
        "source_group",
    }


async def test_the_document_states_what_the_server_checks(client: TestClient[Any, Any]) -> None:
    async with client.get(OPENAPI) as response:
        document = await response.json()
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                where = f"{method} {path} {parameter['name']}"
                if parameter["in"] == "path":
                    assert parameter["schema"]["pattern"].startswith("^"), where
                    assert parameter["schema"]["maxLength"] <= 64, where
                elif "content" in parameter:
                    assert parameter["content"]["application/json"]["schema"], where
                else:
                    # An optional plain argument: a bounded number, a choice, a date-time,
                    # or a string with its pattern and length.
                    schema = parameter["schema"]
                    assert (
                        "maximum" in schema
                        or "enum" in schema
                        or schema.get("format") == "date-time"
                        or ("pattern" in schema and "maxLength" in schema)
                    ), where
            # Every answer the server may give is documented with its body.
            assert "500" in operation["responses"], f"{method} {path}"
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ApiError"
                    }
    grant = schemas["AdminGrantCreate"]
    assert "required" not in grant
    # one application, both volume paths or none, one volume form, one of user and group
    assert len(grant["allOf"]) == 4
    image = schemas["AdminApplicationCreate"]["properties"]["image_name"]
    assert image["format"] == "docker-image-reference"
    assert re.search(image["pattern"], "remoteapp-demo/webapp:latest")
    assert not re.search(image["pattern"], "a" * 238)  # the engine's docker.io/library/ limit
    name = schemas["AdminUserCreate"]["properties"]["name"]
    assert re.search(name["pattern"], "jos\u00e9 a")
    for refused in ("", " alice", "a/b", "tab\tname", "alice\n", "rtl\u202eoverride"):
        assert not re.search(name["pattern"], refused), refused


@pytest.mark.parametrize(
    "name", [" alice", "alice ", "a/b", "bell\a", "alice\n", "rtl\u202eoverride", "x" * 256]
)
async def test_user_names_outside_the_documented_pattern_are_refused(root: Api, name: str) -> None:
    status, body, _ = await root.call("POST", USERS, json={"name": name})
    assert (status, body["type"]) == (400, "BadRepresentation")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_limit_mb", 5),
        ("memory_limit_mb", True),
        ("memory_limit_mb", "512"),
        ("cpu_limit", 0),
        ("cpu_limit", "0.5"),
        ("pids_limit", 2.5),
        ("idle_timeout_s", -1),
        ("max_lifetime_s", 366 * 24 * 3600 + 1),
    ],
)
async def test_limits_out_of_bounds_are_refused_and_grant_nothing(
    root: Api, ids: dict[str, str], field: str, value: object
) -> None:
    status, body, _ = await root.call(
        "POST", ACCOUNTING, json=_grant(ids["alice"], **{field: value})
    )
    assert (status, body["type"]) == (400, "BadRepresentation")
    assert field in body["message"]
    assert (await root.grants(ids["alice"]))["total"] == 0


async def test_a_whole_number_written_with_a_fraction_is_a_whole_number(
    root: Api, ids: dict[str, str]
) -> None:
    mapping_id = await root.create(ACCOUNTING, _grant(ids["alice"], pids_limit=251.0, cpu_limit=1))
    grant = (await root.grants(ids["alice"]))["items"][mapping_id]
    assert (grant["pids_limit"], grant["cpu_limit"]) == (251, 1.0)


async def test_the_document_states_the_limits_bounds(client: TestClient[Any, Any]) -> None:
    async with client.get(OPENAPI) as response:
        document = await response.json()
    fields = document["components"]["schemas"]["AdminGrantCreate"]["properties"]
    bounds = {
        name: next(option for option in fields[name]["anyOf"] if option["type"] != "null")
        for name in ("memory_limit_mb", "cpu_limit", "pids_limit", "idle_timeout_s")
    }
    assert bounds["memory_limit_mb"] == {"type": "integer", "minimum": 6, "maximum": 16777216}
    assert bounds["cpu_limit"] == {"type": "number", "minimum": 0.01, "maximum": 1024.0}
    assert bounds["pids_limit"] == {"type": "integer", "minimum": 1, "maximum": 4194304}
    assert bounds["idle_timeout_s"]["minimum"] == 0


# ------------------------------------------------------------------------------ paging
async def test_users_are_paged_and_filtered_by_name(root: Api) -> None:
    for name in ("alice", "bob", "Alicia", "carol", "malice"):
        await root.create(USERS, {"name": name})

    status, every, _ = await root.call("GET", USERS)
    status_page, page, _ = await root.call("GET", USERS, params={"limit": "2", "offset": "1"})
    _, named, _ = await root.call("GET", USERS, params={"name": "ALI"})
    _, literal, _ = await root.call("GET", USERS, params={"name": "%"})

    assert (status, every["total"], len(every["items"])) == (200, 5, 5)
    assert status_page == 200
    assert (page["total"], page["offset"]) == (5, 1)
    assert [page["items"][i]["name"] for i in page["identifiers"]] == ["bob", "Alicia"]
    assert [named["items"][i]["name"] for i in named["identifiers"]] == [
        "alice",
        "Alicia",
        "malice",
    ]
    assert literal["total"] == 0  # a wildcard of SQL is a plain character here


async def test_everyones_grants_are_paged_without_a_filter(root: Api, ids: dict[str, str]) -> None:
    for user in ("alice", "bob"):
        for image in (DESKTOP, WEBAPP):
            await root.create(ACCOUNTING, _grant(ids[user], image))

    _, first, _ = await root.call("GET", ACCOUNTING, params={"limit": "3"})
    _, rest, _ = await root.call("GET", ACCOUNTING, params={"limit": "3", "offset": "3"})
    _, alices, _ = await root.call(
        "GET", ACCOUNTING, params={"filter": json.dumps({"user_id": ids["alice"]}), "limit": "1"}
    )

    assert (first["total"], len(first["identifiers"])) == (4, 3)
    assert (rest["total"], rest["offset"], len(rest["identifiers"])) == (4, 3, 1)
    assert not set(first["identifiers"]) & set(rest["identifiers"])
    assert [first["items"][i]["user_name"] for i in first["identifiers"]] == [
        "alice",
        "alice",
        "bob",
    ]
    assert (alices["total"], len(alices["identifiers"])) == (2, 1)


async def test_containers_are_filtered_by_user_and_paged(
    root: Api, alice: Api, bob: Api, ids: dict[str, str]
) -> None:
    for user, api in (("alice", alice), ("bob", bob)):
        mapping_id = await root.create(ACCOUNTING, _grant(ids[user]))
        await _start(api, mapping_id)

    _, every, _ = await root.call("GET", CONTAINERS)
    _, bobs, _ = await root.call("GET", CONTAINERS, params={"user": "bob"})
    _, second, _ = await root.call("GET", CONTAINERS, params={"limit": "1", "offset": "1"})

    assert every["total"] == 2
    assert [item["user"] for item in bobs["items"].values()] == ["bob"]
    assert (second["total"], second["offset"], len(second["items"])) == (2, 1, 1)
    assert [item["user"] for item in second["items"].values()] == ["bob"]


@pytest.mark.parametrize("path", [USERS, ACCOUNTING, CONTAINERS])
@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "x"}, {"offset": "-1"}, {"limit": "10001"}]
)
async def test_bad_paging_is_400(root: Api, path: str, params: dict[str, str]) -> None:
    status, body, _ = await root.call("GET", path, params=params)

    assert (status, body["type"]) == (400, "BadRepresentation")


# ------------------------------------------------------------------------------ group grants
async def test_a_grant_to_a_hub_group_is_created_listed_and_revoked(
    root: Api, alice: Api, bob: Api, world: World, ids: dict[str, str]
) -> None:
    world.hub.set_groups("alice", frozenset({"physics"}))
    world.hub_changed()
    body = {"group": "physics", "image_name": WEBAPP, "allow_view": True}
    mapping_id = await root.create(ACCOUNTING, body)
    assert await root.create(ACCOUNTING, body) == mapping_id

    status, one, _ = await root.call("GET", ACCOUNTING + mapping_id + "/")
    assert status == 200
    assert (one["group"], one["user_id"], one["user_name"]) == ("physics", None, None)
    assert (one["image_name"], one["allow_view"]) == (WEBAPP, True)
    status, listed, _ = await root.call(
        "GET", ACCOUNTING, params={"filter": json.dumps({"group": "physics"})}
    )
    assert (status, listed["identifiers"]) == (200, [mapping_id])
    _, none, _ = await root.call(
        "GET", ACCOUNTING, params={"filter": json.dumps({"group": "chemistry"})}
    )
    assert none["total"] == 0
    # No user holds it by name.
    assert (await root.grants(ids["alice"]))["total"] == 0

    # A member starts it; the grant's revocation stops the session.
    url_id = await _start(alice, mapping_id)
    status, _, _ = await bob.call("POST", USER_CONTAINERS, json={"mapping_id": mapping_id})
    assert status == 404
    status, _, _ = await root.call("DELETE", ACCOUNTING + mapping_id + "/")
    assert status == 204
    assert world.runtime.container_ids == frozenset()
    status, _, _ = await root.call("GET", ACCOUNTING + mapping_id + "/")
    assert status == 404
    status, _, _ = await root.call("DELETE", ACCOUNTING + mapping_id + "/")
    assert status == 404
    assert url_id

    await world.audit.flush()
    actions = [
        (event.action.value, event.target, event.detail.get("group"))
        for event in world.events.events
        if event.action.value in ("grant", "revoke")
    ]
    assert actions == [
        ("grant", mapping_id, "physics"),
        ("grant", mapping_id, "physics"),
        ("revoke", mapping_id, "physics"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"image_name": WEBAPP},
        {"user_id": "1", "group": "physics", "image_name": WEBAPP},
        {"group": None, "image_name": WEBAPP},
        {"group": "a/b", "image_name": WEBAPP},
        {"group": " physics", "image_name": WEBAPP},
        {"group": "", "image_name": WEBAPP},
    ],
)
async def test_a_grant_names_exactly_one_user_or_group(
    root: Api, ids: dict[str, str], world: World, body: dict[str, Any]
) -> None:
    status, answer, _ = await root.call("POST", ACCOUNTING, json=body)
    assert (status, answer["type"]) == (400, "BadRepresentation")
    async with world.database.unit_of_work() as work:
        assert list(await work.grants.list_groups()) == []
        assert list(await work.grants.list_all()) == []


async def test_a_grant_filter_names_exactly_one_user_or_group(root: Api) -> None:
    for wanted in ({}, {"user_id": "1", "group": "physics"}, {"group": "a/b"}):
        status, answer, _ = await root.call(
            "GET", ACCOUNTING, params={"filter": json.dumps(wanted)}
        )
        assert (status, answer["type"]) == (400, "BadRepresentation"), wanted


async def test_non_admins_cannot_grant_to_a_group(alice: Api, ids: dict[str, str]) -> None:
    status, _, _ = await alice.call(
        "POST", ACCOUNTING, json={"group": "physics", "image_name": WEBAPP}
    )
    assert status == 403
