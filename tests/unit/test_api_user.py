"""The user REST API ({svc}api/v1/) over in-memory fakes: shapes, status codes, isolation."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from remoteappmanager.domain.errors import Unable
from remoteappmanager.domain.models import Policy, Volume
from remoteappmanager.services import catalogue
from remoteappmanager.services.applications import IMAGE_UNREADABLE
from remoteappmanager.web.keys import API_REGISTRY
from tests.support.webapp import (
    API,
    PREFIX,
    ApiClient,
    World,
    cookie,
    make_app,
    make_settings,
    sign_in,
)

NS = "eu.simphony-project.docker."
DESKTOP = "remoteapp-test/desktop:latest"
WEBAPP = "remoteapp-test/web:latest"
ICON = "iVBORw0KGgo="
DESKTOP_LABELS = {
    NS + "ui_name": "Desktop <script>alert(1)</script>",
    NS + "description": 'A "desktop" & more',
    NS + "icon_128": ICON,
    NS + "type": "vncapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}
WEB_LABELS = {NS + "ui_name": "Web", NS + "type": "webapp"}

APPLICATIONS = API + "v1/applications/"
CONTAINERS = API + "v1/containers/"
OPENAPI = API + "openapi.json"


class Api(ApiClient):
    """A signed-in API client: ``Authorization: token`` for one hub user."""

    async def start(self, mapping_id: str, **configurables: Any) -> str:
        status, body, headers = await self.call(
            "POST", CONTAINERS, json={"mapping_id": mapping_id, "configurables": configurables}
        )
        assert status == 201, body
        return headers["Location"]


@pytest.fixture
async def world() -> World:
    world = World()
    world.runtime.add_image(DESKTOP, DESKTOP_LABELS)
    world.runtime.add_image(WEBAPP, WEB_LABELS)
    for name in ("alice", "bob"):
        world.hub.add_user(name)
        await catalogue.create_user(world.database.unit_of_work, name)
    for image in (DESKTOP, WEBAPP):
        await catalogue.create_application(world.database.unit_of_work, image)
    return world


async def _grant(world: World, image: str, user: str, policy: Policy | None = None) -> str:
    grant = await catalogue.grant_access(
        world.database.unit_of_work,
        image,
        user,
        policy or Policy(),
        volumes=world.volume_guard(make_settings()),
    )
    return grant.mapping_id


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(world))


@pytest.fixture
def alice(client: TestClient[Any, Any], world: World) -> Api:
    return Api(client, world.hub.issue_token("alice"))


@pytest.fixture
def bob(client: TestClient[Any, Any], world: World) -> Api:
    return Api(client, world.hub.issue_token("bob"))


# ------------------------------------------------------------------------------ applications
async def test_a_user_without_grants_has_an_empty_list(alice: Api) -> None:
    status, body, headers = await alice.call("GET", APPLICATIONS)
    assert status == 200
    assert body == {"offset": 0, "total": 0, "items": {}, "identifiers": []}
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")


async def test_hub_users_unknown_to_the_catalogue_have_no_applications(
    client: TestClient[Any, Any], world: World
) -> None:
    world.hub.add_user("carol")
    status, body, _ = await Api(client, world.hub.issue_token("carol")).call("GET", APPLICATIONS)
    assert (status, body["total"]) == (200, 0)


async def test_applications_list_my_grants_with_image_policy_and_offer(
    alice: Api, bob: Api, world: World
) -> None:
    policy = Policy(
        app_license="LIC-1",
        allow_home=True,
        allow_startup_data=True,
        volume=Volume.parse("/data:/mnt/data:ro"),
        memory_limit_mb=256,
        idle_timeout_s=3600,
    )
    desktop = await _grant(world, DESKTOP, "alice", policy)
    web = await _grant(world, WEBAPP, "alice")
    await _grant(world, WEBAPP, "bob")

    status, body, _ = await alice.call("GET", APPLICATIONS)
    assert status == 200
    assert body["total"] == 2
    assert body["offset"] == 0
    assert sorted(body["identifiers"]) == sorted([desktop, web])
    assert list(body["items"]) == body["identifiers"]
    assert body["items"][desktop] == {
        "mapping_id": desktop,
        "available": True,
        "unavailable_reason": None,
        "image": {
            "name": DESKTOP,
            "ui_name": "Desktop <script>alert(1)</script>",
            "icon_128": ICON,
            "description": 'A "desktop" & more',
            "type": "vncapp",
            "configurables": ["resolution", "startupdata"],
        },
        "policy": {
            "app_license": "LIC-1",
            "allow_home": True,
            "allow_view": False,
            "allow_common": False,
            "volume_source": "/data",
            "volume_target": "/mnt/data",
            "volume_mode": "ro",
            "allow_startup_data": True,
            "placement": [],
            "memory_limit_mb": 256,
            "cpu_limit": None,
            "pids_limit": None,
            "idle_timeout_s": 3600,
            "max_lifetime_s": None,
        },
        # The policy's own memory limit, the deployment's defaults for the rest.
        "limits": {"memory_limit_mb": 256, "cpu_limit": 2.0, "pids_limit": 1024},
        "container": None,
        "last_stop": None,
        "source_group": None,
    }
    assert body["items"][web]["image"]["type"] == "webapp"
    assert body["items"][web]["image"]["configurables"] == []
    assert body["items"][web]["policy"]["volume_source"] is None

    status, body, _ = await bob.call("GET", APPLICATIONS)
    assert body["total"] == 1
    assert desktop not in body["items"]


async def test_startupdata_is_offered_only_when_the_policy_allows_it(
    alice: Api, world: World
) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice")
    _, body, _ = await alice.call("GET", APPLICATIONS + mapping_id + "/")
    assert body["image"]["configurables"] == ["resolution"]


async def test_one_application_by_mapping_id(alice: Api, bob: Api, world: World) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice")
    status, body, _ = await alice.call("GET", APPLICATIONS + mapping_id + "/")
    assert (status, body["mapping_id"], body["container"]) == (200, mapping_id, None)

    status, body, _ = await bob.call("GET", APPLICATIONS + mapping_id + "/")
    assert (status, body["type"]) == (404, "NotFound")
    status, body, _ = await alice.call("GET", APPLICATIONS + "0" * 32 + "/")
    assert (status, body["type"]) == (404, "NotFound")


async def test_an_image_gone_from_the_engine_is_listed_as_unavailable(
    alice: Api, world: World
) -> None:
    gone = await _grant(world, DESKTOP, "alice")
    kept = await _grant(world, WEBAPP, "alice")
    world.runtime.remove_image(DESKTOP)
    status, body, _ = await alice.call("GET", APPLICATIONS)
    assert status == 200
    assert body["items"][gone]["available"] is False
    assert body["items"][gone]["image"]["name"] == DESKTOP
    assert body["items"][gone]["image"]["configurables"] == []
    assert body["items"][kept]["available"] is True


async def _register_unchecked(world: World, image: str) -> None:
    # A row written before references were checked, or by hand: the catalogue's own tools
    # refuse such names.
    async with world.database.unit_of_work() as uow:
        await uow.applications.add(image)
        await uow.commit()


async def test_one_bad_catalogue_row_never_breaks_the_listing(alice: Api, world: World) -> None:
    too_long = "a" * 238  # the engine makes it docker.io/library/aaa..., 256 characters
    await _register_unchecked(world, too_long)
    bad = await _grant(world, too_long, "alice")
    good = await _grant(world, WEBAPP, "alice")

    for _ in range(2):  # the answer is not a one-off: the cached state is served alike
        status, body, _ = await alice.call("GET", APPLICATIONS)
        assert status == 200, body
        assert body["identifiers"] == [good, bad]
        assert body["items"][good]["available"] is True
        assert body["items"][good]["unavailable_reason"] is None
        entry = body["items"][bad]
        assert entry["available"] is False
        assert "not a valid Docker image name" in entry["unavailable_reason"]
        assert "longer than 255" in entry["unavailable_reason"]
        assert entry["image"]["name"] == too_long
        assert entry["image"]["configurables"] == []

    status, body, _ = await alice.call("GET", APPLICATIONS + bad + "/")
    assert (status, body["available"]) == (200, False)
    # Starting it is refused with the reason, and starts nothing.
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": bad})
    assert (status, body["type"]) == (400, "BadRepresentation")
    assert world.runtime.container_ids == frozenset()


async def test_an_engine_error_on_one_image_leaves_the_others_listed(
    alice: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = await _grant(world, DESKTOP, "alice")
    good = await _grant(world, WEBAPP, "alice")
    inspect = world.runtime.inspect_image

    async def failing(image: str) -> Any:
        if image == DESKTOP:
            raise Unable("Docker engine could not inspect image: layer store is corrupt")
        return await inspect(image)

    monkeypatch.setattr(world.runtime, "inspect_image", failing)
    status, body, _ = await alice.call("GET", APPLICATIONS)
    assert status == 200
    assert body["items"][broken]["available"] is False
    assert "layer store is corrupt" in body["items"][broken]["unavailable_reason"]
    assert body["items"][good]["available"] is True

    async def crashing(image: str) -> Any:
        if image == DESKTOP:
            raise KeyError("Config")
        return await inspect(image)

    monkeypatch.setattr(world.runtime, "inspect_image", crashing)
    world.engine_changed()
    status, body, _ = await alice.call("GET", APPLICATIONS)
    assert status == 200
    assert body["items"][broken]["unavailable_reason"] == IMAGE_UNREADABLE
    assert body["items"][good]["available"] is True


async def test_the_engine_being_down_is_a_503_not_a_crash(alice: Api, world: World) -> None:
    await _grant(world, DESKTOP, "alice")
    world.runtime.available = False
    status, body, _ = await alice.call("GET", APPLICATIONS)
    assert (status, body["type"]) == (503, "Unable")


async def test_labels_come_back_as_json_data(alice: Api, world: World) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice")
    async with alice.client.get(APPLICATIONS, headers=alice.headers) as response:
        assert response.content_type == "application/json"
        raw = await response.text()
    # The label is a JSON string value, never markup in an HTML page.
    assert json.loads(raw)["items"][mapping_id]["image"]["ui_name"].startswith("Desktop <script>")
    assert "text/html" not in response.headers["Content-Type"]


async def test_the_listing_is_revalidated_and_follows_starts_and_stops(
    alice: Api, bob: Api, world: World
) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice")
    status, first, headers = await alice.call("GET", APPLICATIONS)
    etag = headers["ETag"]
    assert (status, first["items"][mapping_id]["container"]) == (200, None)

    status, body, headers = await alice.call("GET", APPLICATIONS, headers={"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, None, etag)
    status, again, _ = await alice.call("GET", APPLICATIONS, headers={"If-None-Match": '"other"'})
    assert (status, again) == (200, first)
    # Another user's answer is never the one cached for alice.
    status, theirs, headers = await bob.call("GET", APPLICATIONS, headers={"If-None-Match": etag})
    assert (status, theirs["total"]) == (200, 0)
    assert headers["ETag"] != etag

    url_id = (await alice.start(mapping_id)).removeprefix(CONTAINERS).rstrip("/")
    status, running, headers = await alice.call(
        "GET", APPLICATIONS, headers={"If-None-Match": etag}
    )
    assert status == 200
    assert running["items"][mapping_id]["container"]["url_id"] == url_id
    assert headers["ETag"] != etag

    status, _, _ = await alice.call("DELETE", CONTAINERS + url_id + "/")
    assert status == 204
    status, stopped, headers = await alice.call(
        "GET", APPLICATIONS, headers={"If-None-Match": headers["ETag"]}
    )
    assert status == 200
    assert headers["ETag"] != etag
    # As before the start, but saying why the session ended.
    last_stop = stopped["items"][mapping_id].pop("last_stop")
    assert (last_stop["url_id"], last_stop["stop_reason"]) == (url_id, "user")
    first["items"][mapping_id].pop("last_stop")
    assert stopped == first


# ------------------------------------------------------------------------------ containers
async def test_start_get_list_and_stop_a_container(alice: Api, world: World) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice")
    status, body, headers = await alice.call(
        "POST",
        CONTAINERS,
        json={
            "mapping_id": mapping_id,
            "configurables": {"resolution": {"resolution": "1920x1080"}},
        },
    )
    assert (status, body) == (201, None)
    location = headers["Location"]
    assert location.startswith(CONTAINERS)
    assert location.endswith("/")
    url_id = location.removeprefix(CONTAINERS).rstrip("/")
    assert len(url_id) >= 26
    assert url_id.isalnum()
    assert url_id.islower()

    status, body, headers = await alice.call("GET", location)
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["url_id"] == url_id
    assert body["mapping_id"] == mapping_id
    assert body["image_name"] == DESKTOP
    assert body["state"] == "running"
    assert body["urlpath"] == f"/user/alice/containers/{url_id}"
    assert body["docker_id"] in world.runtime.container_ids
    assert body["name"].endswith(mapping_id)
    spec = world.runtime.spec_of(body["docker_id"])
    assert (spec.environment["X11_WIDTH"], spec.environment["X11_HEIGHT"]) == ("1920", "1080")

    status, listed, _ = await alice.call("GET", CONTAINERS)
    assert (status, listed["identifiers"], listed["total"]) == (200, [url_id], 1)
    assert listed["items"][url_id] == body
    _, application, _ = await alice.call("GET", APPLICATIONS + mapping_id + "/")
    assert application["container"] == body

    status, body, _ = await alice.call("DELETE", location)
    assert (status, body) == (204, None)
    assert world.runtime.container_ids == frozenset()
    assert world.routes.all_paths == frozenset()
    # Gone; looking again says why.
    status, body, _ = await alice.call("GET", location)
    assert status == 200
    assert (body["state"], body["stop_reason"]) == ("stopped", "user")
    status, listed, _ = await alice.call("GET", CONTAINERS)
    assert listed["total"] == 0
    status, body, _ = await alice.call("DELETE", location)
    assert status == 404


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


async def test_a_container_shows_its_clock_and_keep_working_counts_as_input(
    alice: Api, bob: Api, world: World
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice", Policy(idle_timeout_s=600))
    location = await alice.start(mapping_id)
    started = world.clock()

    _, body, _ = await alice.call("GET", location)
    assert body["started_at"] == _iso(started)
    assert body["last_input_at"] is None
    assert body["expires_at"] == _iso(started + 600)
    assert body["stop_reason"] is None

    world.clock.advance(100)
    status, kept, _ = await alice.call("POST", location + "activity")
    assert status == 200
    assert kept["last_input_at"] == _iso(started + 100)
    assert kept["expires_at"] == _iso(started + 700)
    _, application, _ = await alice.call("GET", APPLICATIONS + mapping_id + "/")
    assert application["container"]["expires_at"] == _iso(started + 700)

    # Nobody else can keep it alive, or learn that it exists.
    world.clock.advance(100)
    status, body, _ = await bob.call("POST", location + "activity")
    assert (status, body["type"]) == (404, "NotFound")
    _, body, _ = await alice.call("GET", location)
    assert body["last_input_at"] == _iso(started + 100)


async def test_a_session_without_timeouts_never_expires(alice: Api, world: World) -> None:
    location = await alice.start(await _grant(world, WEBAPP, "alice"))
    _, body, _ = await alice.call("GET", location)
    assert body["expires_at"] is None
    assert body["started_at"] is not None


async def test_an_application_says_why_its_last_session_ended(
    alice: Api, bob: Api, world: World
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice", Policy(memory_limit_mb=64))
    location = await alice.start(mapping_id)
    _, body, _ = await alice.call("GET", location)
    world.runtime.kill(body["docker_id"], oom=True)
    assert world.sessions is not None
    from remoteappmanager.services.reconcile import Reconciler

    await Reconciler(world.runtime, world.routes, world.sessions).reconcile_once()

    _, application, _ = await alice.call("GET", APPLICATIONS + mapping_id + "/")
    assert application["container"] is None
    assert application["last_stop"]["stop_reason"] == "oom"
    assert application["last_stop"]["message"] == "out of memory"
    _, body, _ = await alice.call("GET", location)
    assert (body["state"], body["stop_reason"]) == ("stopped", "oom")
    status, _, _ = await bob.call("GET", location)
    assert status == 404


async def test_someone_elses_container_is_not_found(alice: Api, bob: Api, world: World) -> None:
    location = await alice.start(await _grant(world, WEBAPP, "alice"))
    for method in ("GET", "DELETE"):
        status, body, _ = await bob.call(method, location)
        assert (status, body["type"]) == (404, "NotFound")
    status, body, _ = await bob.call("GET", CONTAINERS)
    assert body["total"] == 0
    # Still running for its owner.
    status, body, _ = await alice.call("GET", location)
    assert (status, body["state"]) == (200, "running")


async def test_starting_someone_elses_or_an_unknown_grant_is_not_found(
    bob: Api, world: World
) -> None:
    alices = await _grant(world, WEBAPP, "alice")
    for mapping_id in (alices, "f" * 32):
        status, body, _ = await bob.call("POST", CONTAINERS, json={"mapping_id": mapping_id})
        assert (status, body["type"]) == (404, "NotFound")
    assert world.runtime.container_ids == frozenset()


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"configurables": {}}',
        b'{"mapping_id": 12}',
        b'{"mapping_id": "../../etc"}',
        b'{"mapping_id": "' + b"a" * 65 + b'"}',
        b'{"mapping_id": "abc", "extra": 1}',
        b'{"mapping_id": "abc", "configurables": {"colour": "red"}}',
        b'{"mapping_id": "abc", "configurables": []}',
    ],
)
async def test_malformed_requests_are_bad_representations(alice: Api, payload: bytes) -> None:
    status, body, _ = await alice.call(
        "POST", CONTAINERS, data=payload, headers={"Content-Type": "application/json"}
    )
    assert (status, body["type"]) == (400, "BadRepresentation"), body
    assert "../../etc" not in body["message"]


async def test_an_oversized_body_is_refused(alice: Api) -> None:
    payload = json.dumps({"mapping_id": "abc", "configurables": {"x": "y" * 20_000}})
    status, body, _ = await alice.call("POST", CONTAINERS, data=payload)
    assert (status, body["type"]) == (400, "BadRepresentation")


@pytest.mark.parametrize(
    ("configurables", "policy"),
    [
        ({"resolution": {"resolution": "big"}}, Policy()),
        ({"resolution": {"resolution": "99999x1"}}, Policy()),
        ({"resolution": "1x1"}, Policy()),
        ({"startupdata": {"startupdata": "/workspace/in.dat"}}, Policy(allow_home=True)),
        (
            {"startupdata": {"startupdata": "/etc/passwd"}},
            Policy(allow_home=True, allow_startup_data=True),
        ),
        (
            {"startupdata": {"startupdata": "/workspace/../etc/passwd"}},
            Policy(allow_home=True, allow_startup_data=True),
        ),
        ({"startupdata": {"startupdata": "relative"}}, Policy(allow_startup_data=True)),
    ],
)
async def test_invalid_configurables_are_refused_and_nothing_runs(
    alice: Api, world: World, configurables: dict[str, Any], policy: Policy
) -> None:
    mapping_id = await _grant(world, DESKTOP, "alice", policy)
    status, body, _ = await alice.call(
        "POST", CONTAINERS, json={"mapping_id": mapping_id, "configurables": configurables}
    )
    assert (status, body["type"]) == (400, "BadRepresentation"), body
    assert world.runtime.container_ids == frozenset()


async def test_startupdata_inside_the_workspace_is_passed_on(alice: Api, world: World) -> None:
    policy = Policy(allow_home=True, allow_startup_data=True)
    location = await alice.start(
        await _grant(world, DESKTOP, "alice", policy),
        startupdata={"startupdata": "/workspace/run.in"},
    )
    _, body, _ = await alice.call("GET", location)
    assert (
        world.runtime.spec_of(body["docker_id"]).environment["STARTUPDATA"] == "/workspace/run.in"
    )


async def test_a_concurrent_start_of_the_same_grant_is_refused(alice: Api, world: World) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    world.probe.hold = asyncio.Event()
    first = asyncio.ensure_future(alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id}))
    for _ in range(1000):
        if world.probe.probed:
            break
        await asyncio.sleep(0.001)
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id})
    assert (status, body["type"]) == (409, "Exists")
    # While it starts, the list shows it as starting.
    _, listed, _ = await alice.call("GET", CONTAINERS)
    assert [item["state"] for item in listed["items"].values()] == ["starting"]
    world.probe.hold.set()
    status, _, _ = await first
    assert status == 201


async def test_a_start_shows_its_step_and_its_durations_go_to_the_metrics(
    alice: Api, world: World, client: TestClient[Any, Any]
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    world.probe.hold = asyncio.Event()
    first = asyncio.ensure_future(alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id}))
    for _ in range(1000):
        if world.probe.probed:
            break
        await asyncio.sleep(0.001)
    _, listed, _ = await alice.call("GET", CONTAINERS)
    ((url_id, item),) = listed["items"].items()
    assert (item["state"], item["step"]) == ("starting", "waiting for the app")
    _, one, _ = await alice.call("GET", f"{CONTAINERS}{url_id}/")
    assert one["step"] == "waiting for the app"
    _, application, _ = await alice.call("GET", f"{APPLICATIONS}{mapping_id}/")
    assert application["container"]["step"] == "waiting for the app"
    world.probe.hold.set()
    status, _, headers = await first
    assert status == 201
    _, running, _ = await alice.call("GET", headers["Location"])
    assert (running["state"], running["step"]) == ("running", None)

    metrics = await (await client.get(PREFIX + "metrics")).text()
    for step in ("creating", "starting", "waiting for the app", "routing"):
        assert (
            "remoteapp_session_start_step_duration_seconds_count"
            f'{{image="{WEBAPP}",step="{step}"}} 1.0'
        ) in metrics
    assert f'remoteapp_session_starts_total{{image="{WEBAPP}",outcome="started"}} 1.0' in metrics


async def test_a_start_shows_pulling_the_image_while_the_runtime_pulls_it(
    alice: Api, world: World, client: TestClient[Any, Any]
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    pulled = world.runtime.pull_on_start(WEBAPP)
    first = asyncio.ensure_future(alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id}))
    steps: list[str | None] = []
    for _ in range(1000):
        _, listed, _ = await alice.call("GET", CONTAINERS)
        steps = [item["step"] for item in listed["items"].values()]
        if steps == ["pulling the image"]:
            break
        await asyncio.sleep(0.001)
    assert steps == ["pulling the image"]
    _, application, _ = await alice.call("GET", f"{APPLICATIONS}{mapping_id}/")
    assert application["container"]["step"] == "pulling the image"
    assert not first.done()

    pulled.set()
    status, _, headers = await first

    assert status == 201
    _, running, _ = await alice.call("GET", headers["Location"])
    assert (running["state"], running["step"]) == ("running", None)
    metrics = await (await client.get(PREFIX + "metrics")).text()
    # "starting" is one step around the pull, timed once.
    for step in ("creating", "starting", "pulling the image", "waiting for the app", "routing"):
        assert (
            "remoteapp_session_start_step_duration_seconds_count"
            f'{{image="{WEBAPP}",step="{step}"}} 1.0'
        ) in metrics


async def test_a_failed_start_names_its_step_and_is_counted_by_reason(
    alice: Api, world: World, client: TestClient[Any, Any]
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    world.probe.ready = False
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id})
    assert (status, body["type"]) == (500, "Unable")
    assert body["message"].startswith("Web could not be started (step: waiting for the app): ")
    world.routes.available = False
    world.probe.ready = True
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id})
    assert (status, body["type"]) == (503, "Unable")
    assert body["message"].startswith("Web could not be started (step: routing): ")

    metrics = await (await client.get(PREFIX + "metrics")).text()
    assert f'remoteapp_session_starts_total{{image="{WEBAPP}",outcome="failed"}} 2.0' in metrics
    for step, reason in (("waiting for the app", "unable"), ("routing", "unavailable")):
        assert (
            "remoteapp_session_start_failures_total"
            f'{{image="{WEBAPP}",reason="{reason}",step="{step}"}} 1.0'
        ) in metrics
    # Steps that ended well are timed; the failed ones are not.
    durations = f'remoteapp_session_start_step_duration_seconds_count{{image="{WEBAPP}",step='
    assert durations + '"creating"} 2.0' in metrics
    assert durations + '"waiting for the app"}' not in metrics


async def test_a_failed_start_is_unable_and_leaves_nothing(alice: Api, world: World) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    world.probe.ready = False
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": mapping_id})
    assert status >= 500
    assert body["type"] == "Unable"
    assert "Web could not be started" in body["message"]
    assert world.runtime.container_ids == frozenset()
    assert world.routes.all_paths == frozenset()


async def test_starting_again_replaces_the_container(alice: Api, world: World) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    first = await alice.start(mapping_id)
    second = await alice.start(mapping_id)
    assert first != second
    _, listed, _ = await alice.call("GET", CONTAINERS)
    assert listed["total"] == 1
    status, replaced, _ = await alice.call("GET", first)
    assert (status, replaced["state"], replaced["stop_reason"]) == (200, "stopped", "user")


# ------------------------------------------------------------------------------ authentication
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", APPLICATIONS),
        ("GET", APPLICATIONS + "a" * 32 + "/"),
        ("GET", CONTAINERS),
        ("POST", CONTAINERS),
        ("GET", CONTAINERS + "a" * 26 + "/"),
        ("DELETE", CONTAINERS + "a" * 26 + "/"),
    ],
)
async def test_anonymous_callers_are_unauthorized(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    status, body, headers = await Api(client, None).call(method, path, json={"mapping_id": "a"})
    assert (status, body["type"]) == (401, "Unauthorized")
    assert headers["Cache-Control"] == "no-store"


async def test_a_bad_token_is_unauthorized(client: TestClient[Any, Any]) -> None:
    status, body, _ = await Api(client, "not-a-token").call("GET", APPLICATIONS)
    assert (status, body["type"]) == (401, "Unauthorized")


async def test_cookie_sessions_need_the_xsrf_token_to_change_anything(
    client: TestClient[Any, Any], world: World
) -> None:
    mapping_id = await _grant(world, WEBAPP, "alice")
    await sign_in(client, world, "alice")
    async with client.get(APPLICATIONS) as response:
        assert response.status == 200
        assert mapping_id in (await response.json())["items"]
    async with client.post(CONTAINERS, json={"mapping_id": mapping_id}) as refused:
        assert refused.status == 403
        assert (await refused.json())["type"] == "Forbidden"
    assert world.runtime.container_ids == frozenset()

    token = cookie(client, "_xsrf")
    assert token
    async with client.post(
        CONTAINERS, json={"mapping_id": mapping_id}, headers={"X-XSRFToken": token}
    ) as created:
        assert created.status == 201
        location = created.headers["Location"]
    async with client.delete(location) as refused:
        assert refused.status == 403
    async with client.post(location + "activity") as refused:
        assert refused.status == 403
    async with client.post(location + "activity", headers={"X-XSRFToken": token}) as kept:
        assert kept.status == 200
    async with client.delete(location, headers={"X-XSRFToken": token}) as deleted:
        assert deleted.status == 204


# ------------------------------------------------------------------------------ OpenAPI
async def test_the_openapi_document_is_public_valid_and_lists_every_route(
    client: TestClient[Any, Any],
) -> None:
    async with client.get(OPENAPI) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        document = await response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")

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
    assert ("POST", CONTAINERS) in documented
    assert ("DELETE", CONTAINERS + "{url_id}/") in documented
    assert len(client.app[API_REGISTRY].operations) == len(documented)

    create = document["paths"][CONTAINERS]["post"]
    assert create["responses"]["201"]["headers"]["Location"]
    request_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema == {"$ref": "#/components/schemas/ContainerCreate"}
    schemas = document["components"]["schemas"]
    assert schemas["ContainerCreate"]["additionalProperties"] is False
    assert set(schemas["ApplicationOut"]["properties"]) == {
        "mapping_id",
        "available",
        "unavailable_reason",
        "source_group",
        "image",
        "policy",
        "limits",
        "container",
        "last_stop",
    }
    # Everything but the document itself needs a signed-in caller.
    assert document["paths"][APPLICATIONS]["get"]["security"] == [
        {"hubToken": []},
        {"sessionCookie": []},
    ]


async def test_every_signed_in_route_documents_the_503_of_a_dependency_that_is_down(
    client: TestClient[Any, Any], alice: Api, world: World
) -> None:
    # Signing a caller in asks the hub: with the hub down, any such route answers 503.
    async with client.get(OPENAPI) as response:
        document = await response.json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                continue  # public: signs nobody in
            error = operation["responses"].get("503")
            assert error is not None, (method, path)
            schema = error["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ApiError"}, (method, path)
    world.hub.available = False
    status, body, _ = await alice.call("GET", API + "v1/user")
    assert status == 503
    assert body["type"] == "Unable"
    assert "JupyterHub" in body["message"]


async def test_every_api_answer_is_not_cacheable(alice: Api, world: World) -> None:
    location = await alice.start(await _grant(world, WEBAPP, "alice"))
    for path in (APPLICATIONS, CONTAINERS, location, OPENAPI):
        _, _, headers = await alice.call("GET", path)
        assert headers["Cache-Control"] == "no-store", path


def test_prefix_is_what_the_test_app_uses() -> None:
    assert API == PREFIX + "api/"


def test_the_documented_steps_are_the_steps_of_a_start() -> None:
    from typing import get_args

    from remoteappmanager.domain.sessions import StartStep
    from remoteappmanager.web.api_models import ContainerOut

    annotation = ContainerOut.model_fields["step"].annotation
    (literal, _none) = get_args(annotation)
    assert list(get_args(literal)) == [step.value for step in StartStep]


# ------------------------------------------------------------------------------ group grants
async def _grant_group(world: World, image: str, group: str, policy: Policy | None = None) -> str:
    async with world.database.unit_of_work() as work:
        application = await work.applications.get_by_image(image)
        granted = await work.grants.grant_group(group, application, policy or Policy())
        await work.commit()
    return granted.mapping_id


async def test_a_group_grant_is_listed_for_members_only_and_names_its_group(
    alice: Api, bob: Api, world: World
) -> None:
    world.hub.set_groups("alice", frozenset({"physics"}))
    world.hub_changed()
    own = await _grant(world, DESKTOP, "alice")
    shared = await _grant_group(world, WEBAPP, "physics", Policy(allow_home=True))

    _, body, _ = await alice.call("GET", APPLICATIONS)
    assert body["identifiers"] == [own, shared]
    assert body["items"][own]["source_group"] is None
    assert body["items"][shared]["source_group"] == "physics"
    assert body["items"][shared]["policy"]["allow_home"] is True
    status, one, _ = await alice.call("GET", APPLICATIONS + shared + "/")
    assert (status, one["source_group"]) == (200, "physics")

    # Bob is in no group: he neither sees nor starts it, whatever the mapping id he holds.
    _, body, _ = await bob.call("GET", APPLICATIONS)
    assert body["total"] == 0
    status, _, _ = await bob.call("GET", APPLICATIONS + shared + "/")
    assert status == 404
    status, body, _ = await bob.call("POST", CONTAINERS, json={"mapping_id": shared})
    assert (status, body["type"]) == (404, "NotFound")
    assert world.runtime.container_ids == frozenset()


async def test_a_member_starts_a_group_grant_and_loses_it_on_leaving_the_group(
    alice: Api, world: World
) -> None:
    world.hub.set_groups("alice", frozenset({"physics", "chemistry"}))
    world.hub_changed()
    shared = await _grant_group(world, WEBAPP, "physics")
    location = await alice.start(shared)
    status, body, _ = await alice.call("GET", location)
    assert (status, body["state"], body["mapping_id"]) == (200, "running", shared)

    # Removed from the group at the hub: the hub's cached answer holds until it expires.
    world.hub.set_groups("alice", frozenset({"chemistry"}))
    _, body, _ = await alice.call("GET", APPLICATIONS)
    assert body["identifiers"] == [shared]
    world.hub_changed()

    _, body, _ = await alice.call("GET", APPLICATIONS)
    assert body["total"] == 0
    assert world.runtime.container_ids == frozenset()
    assert world.routes.all_paths == frozenset()
    _, body, _ = await alice.call("GET", location)
    assert (body["state"], body["stop_reason"]) == ("stopped", "admin")
    status, body, _ = await alice.call("POST", CONTAINERS, json={"mapping_id": shared})
    assert (status, body["type"]) == (404, "NotFound")


async def test_a_group_grant_needs_the_members_own_entry(
    client: TestClient[Any, Any], world: World
) -> None:
    world.hub.add_user("carol", groups=frozenset({"physics"}))
    shared = await _grant_group(world, WEBAPP, "physics")
    carol = Api(client, world.hub.issue_token("carol"))
    _, body, _ = await carol.call("GET", APPLICATIONS)
    assert body["total"] == 0
    status, _, _ = await carol.call("POST", CONTAINERS, json={"mapping_id": shared})
    assert status == 404
