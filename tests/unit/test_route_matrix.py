"""Every route by every kind of caller, against a table of the answers each must get.

The rows come from the application's own route table (``app.router.routes()``) plus the
paths the gate serves, so a route added without a row here fails
``test_every_route_has_a_row``. Each cell runs against a fresh in-memory service (gated
mode) in which alice runs two applications: a private one and one whose policy has
``allow_view``.

Columns (who is calling):

- ``anonymous``: no credentials at all;
- ``narrow``: alice's hub token holding only ``read:users:name`` (no access to this service);
- ``user``: alice's token (owner of every grant and container named in the path);
- ``other``: bob's token, on alice's private grant and container;
- ``viewer``: bob's token, on alice's ``allow_view`` grant and container, which alice shared
  with bob in ``view`` mode (a web application: he may read it, not act in it);
- ``admin``: a hub admin's token;
- ``cookie``: a browser session (signed in through the hub) sending the XSRF token and our
  own ``Origin``, as the pages do: the hub admin's for the admin page and API, alice's
  otherwise;
- ``foreign``: the same session and token, but with the ``Origin`` of another site: a
  cross-site state change. Only for methods that change state (``-`` otherwise), where it
  differs from ``cookie`` by the ``Origin`` alone.

Numbers are HTTP statuses; ``-`` means "not applicable".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.shares import ShareKind, ShareMode
from remoteappmanager.services import catalogue
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.web.gate.handler import GATE_COOKIE
from remoteappmanager.web.keys import SHARES as SHARES_KEY
from tests.support.gated import GATED_IMAGE, GatedService, client_of, gated_service
from tests.support.webapp import PREFIX, World, cookie, make_app, sign_in

COLUMNS = ("anonymous", "narrow", "user", "other", "viewer", "admin", "cookie", "foreign")
NA = None
_ = NA
SVC = PREFIX.rstrip("/")
API = PREFIX + "api/v1/"
ADMIN = API + "admin/"
GATE = "GATE"  # rows answered by the gate's own listener, not the service's router
APP_PATH = "/user/alice/containers/{url_id}/x"
OTHER_IMAGE = "remoteapp-test/other:latest"
EVIL = "http://evil.example"
SHARES = API + "containers/{url_id}/shares/"
CONTROL = API + "containers/{url_id}/control"

# fmt: off
# (method, path as the router spells it):
#                                                 anon narrow user other viewer admin cookie foreign
EXPECTED: dict[tuple[str, str], tuple[int | None, ...]] = {
    # pages
    ("GET", PREFIX):                                 (302, 403, 200, 200, 200, 200, 200, _),
    ("GET", SVC):                                    (302, 302, 302, 302, 302, 302, 302, _),
    ("GET", PREFIX + "admin/"):                      (302, 403, 403, 403, 403, 200, 200, _),
    ("GET", PREFIX + "admin"):                       (302, 302, 302, 302, 302, 302, 302, _),
    ("GET", PREFIX + "static/{name}"):               (200, 200, 200, 200, 200, 200, 200, _),
    ("GET", PREFIX + "oauth_callback"):              (400, 400, 400, 400, 400, 400, 400, _),
    ("GET", PREFIX + "logout"):                      (200, 403, 200, 200, 200, 200, 200, _),
    ("POST", PREFIX + "logout"):                     (302, 403, 302, 302, 302, 302, 302, 403),
    ("GET", PREFIX + "health"):                      (200, 200, 200, 200, 200, 200, 200, _),
    ("GET", PREFIX + "metrics"):                     (200, 200, 200, 200, 200, 200, 200, _),
    ("GET", PREFIX + "api/openapi.json"):            (200, 200, 200, 200, 200, 200, 200, _),
    ("GET", PREFIX + "gate/{url_id}"):               (302, 403, 401, 401, 401, 401, 302, _),
    ("POST", PREFIX + "gate/{url_id}"):              (401, 403, 401, 401, 401, 401, 302, 403),
    # the user API
    ("GET", API + "user"):                           (401, 403, 200, 200, 200, 200, 200, _),
    ("GET", API + "applications/"):                  (401, 403, 200, 200, 200, 200, 200, _),
    ("GET", API + "applications/{mapping_id}/"):     (401, 403, 200, 404, 404, 404, 200, _),
    ("GET", API + "containers/"):                    (401, 403, 200, 200, 200, 200, 200, _),
    ("POST", API + "containers/"):                   (401, 403, 201, 404, 404, 404, 201, 403),
    ("GET", API + "containers/{url_id}/"):           (401, 403, 200, 404, 404, 404, 200, _),
    ("DELETE", API + "containers/{url_id}/"):        (401, 403, 204, 404, 404, 404, 204, 403),
    ("POST", API + "containers/{url_id}/activity"):  (401, 403, 200, 404, 404, 404, 200, 403),
    # sharing (on alice's shareable application, but for ``other``)
    ("GET", SHARES):                                 (401, 403, 200, 404, 404, 200, 200, _),
    ("POST", SHARES):                                (401, 403, 201, 404, 404, 201, 201, 403),
    ("DELETE", SHARES + "{share_id}/"):              (401, 403, 204, 404, 404, 204, 204, 403),
    ("GET", CONTROL):                                (401, 403, 200, 404, 200, 200, 200, _),
    ("POST", CONTROL):                               (401, 403, 200, 404, 403, 200, 200, 403),
    ("GET", API + "directory"):                      (401, 403, 200, 403, 403, 200, 200, _),
    # the admin API
    ("GET", ADMIN + "users/"):                       (401, 403, 403, 403, 403, 200, 200, _),
    ("POST", ADMIN + "users/"):                      (401, 403, 403, 403, 403, 201, 201, 403),
    ("GET", ADMIN + "users/{id}/"):                  (401, 403, 403, 403, 403, 200, 200, _),
    ("DELETE", ADMIN + "users/{id}/"):               (401, 403, 403, 403, 403, 204, 204, 403),
    ("GET", ADMIN + "applications/"):                (401, 403, 403, 403, 403, 200, 200, _),
    ("POST", ADMIN + "applications/"):               (401, 403, 403, 403, 403, 201, 201, 403),
    ("GET", ADMIN + "applications/{id}/"):           (401, 403, 403, 403, 403, 200, 200, _),
    ("DELETE", ADMIN + "applications/{id}/"):        (401, 403, 403, 403, 403, 204, 204, 403),
    ("GET", ADMIN + "accounting/"):                  (401, 403, 403, 403, 403, 200, 200, _),
    ("POST", ADMIN + "accounting/"):                 (401, 403, 403, 403, 403, 201, 201, 403),
    ("GET", ADMIN + "accounting/{mapping_id}/"):     (401, 403, 403, 403, 403, 200, 200, _),
    ("DELETE", ADMIN + "accounting/{mapping_id}/"):  (401, 403, 403, 403, 403, 204, 204, 403),
    ("GET", ADMIN + "containers/"):                  (401, 403, 403, 403, 403, 200, 200, _),
    ("GET", ADMIN + "containers/{url_id}/"):         (401, 403, 403, 403, 403, 200, 200, _),
    ("DELETE", ADMIN + "containers/{url_id}/"):      (401, 403, 403, 403, 403, 204, 204, 403),
    ("GET", ADMIN + "stats/"):                       (401, 403, 403, 403, 403, 200, 200, _),
    ("GET", ADMIN + "events/"):                      (401, 403, 403, 403, 403, 200, 200, _),
    # a running application, through the gate
    (GATE + " GET", APP_PATH):                       (302, 403, 200, 403, 200, 403, 200, _),
    (GATE + " POST", APP_PATH):                      (401, 403, 200, 403, 403, 403, 200, _),
}
# fmt: on

# The answer a request with the wrong method gets before anyone is asked who is calling.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _router_rows() -> set[tuple[str, str]]:
    """(method, path) of every route of the application, HEAD folded into GET."""
    app = make_app(World())
    rows = set()
    for route in app.router.routes():
        assert route.resource is not None
        method = "GET" if route.method == "HEAD" else route.method
        rows.add((method, route.resource.canonical))
    return rows


def _head_rows() -> list[tuple[str, str]]:
    app = make_app(World())
    return sorted(
        ("HEAD", route.resource.canonical)
        for route in app.router.routes()
        if route.method == "HEAD" and route.resource is not None
    )


def test_every_route_has_a_row() -> None:
    routes = _router_rows()
    missing = sorted(routes - EXPECTED.keys())
    assert not missing, f"routes without an expected answer per caller: {missing}"
    stale = sorted(key for key in EXPECTED.keys() - routes if not key[0].startswith(GATE))
    assert not stale, f"rows for routes that no longer exist: {stale}"


def test_every_state_change_has_a_cross_site_cell_and_reads_have_none() -> None:
    for (method, path), cells in EXPECTED.items():
        assert len(cells) == len(COLUMNS), (method, path)
        foreign = cells[COLUMNS.index("foreign")]
        if method in STATE_CHANGING:
            assert foreign == 403, f"{method} {path} must refuse a cross-site request"
        else:
            assert foreign is NA, (method, path)


# ------------------------------------------------------------------------------ the world
@dataclass
class Scene:
    service: GatedService
    client: TestClient[Any, Any]
    tokens: dict[str, str]
    values: dict[str, dict[str, str]]  # column -> path parameter -> value
    alice_id: str
    application_id: str


async def _scene(world: World, service: GatedService) -> Scene:
    hub = world.hub
    for name in ("alice", "bob"):
        hub.add_user(name)
    hub.add_user("root", admin=True)
    uow = world.database.unit_of_work
    alice = await catalogue.create_user(uow, "alice")
    await catalogue.create_user(uow, "bob")
    world.runtime.add_image(OTHER_IMAGE, {"eu.simphony-project.docker.type": "webapp"})
    private = await service.start("alice", Policy())
    shared = await service.start("alice", Policy(allow_view=True))
    async with uow() as unit:
        application = await unit.applications.get_by_image(GATED_IMAGE)
    own = {
        "url_id": private.url_id,
        "mapping_id": private.mapping_id,
        "name": "app.css",
    }
    viewed = {**own, "url_id": shared.url_id, "mapping_id": shared.mapping_id}
    share = await service.app[SHARES_KEY].create(
        AuthenticatedUser("alice", admin=False),
        shared.url_id,
        ShareKind.USER,
        "bob",
        ShareMode.VIEW,
    )
    values = {column: dict(own) for column in COLUMNS}
    values["viewer"] = viewed
    for column in COLUMNS:
        values[column]["share_id"] = str(share.id)
        values[column]["shared_url_id"] = shared.url_id if column != "other" else private.url_id
    tokens = {
        "narrow": hub.issue_token("alice", scopes=frozenset({"read:users:name!user=alice"})),
        "user": hub.issue_token("alice"),
        "other": hub.issue_token("bob"),
        "viewer": hub.issue_token("bob"),
        "admin": hub.issue_token("root"),
    }
    client = await client_of(service)
    return Scene(service, client, tokens, values, str(alice.id), str(application.id))


def _path(path: str, column: str, scene: Scene) -> str:
    filled = path
    if path.startswith((SHARES, CONTROL)):
        filled = filled.replace("{url_id}", scene.values[column]["shared_url_id"])
    for name, value in scene.values[column].items():
        filled = filled.replace("{" + name + "}", value)
    row_id = scene.application_id if "/applications/" in path else scene.alice_id
    return filled.replace("{id}", row_id)


def _body(method: str, path: str, scene: Scene) -> tuple[dict[str, str], Any]:
    """Query and JSON body that make the request valid, so that only the caller is at issue."""
    if method == "GET" and path == ADMIN + "accounting/":
        return {"filter": json.dumps({"user_id": scene.alice_id})}, None
    if method == "GET" and path == API + "directory":
        return {"query": json.dumps({"prefix": "b"})}, None
    if method != "POST":
        return {}, None
    bodies: dict[str, Any] = {
        API + "containers/": {"mapping_id": scene.values["user"]["mapping_id"]},
        ADMIN + "users/": {"name": "newcomer"},
        SHARES: {"group": "team", "mode": "control"},
        CONTROL: {"action": "take"},
        ADMIN + "applications/": {"image_name": OTHER_IMAGE},
        ADMIN + "accounting/": {
            "user_id": scene.alice_id,
            "image_name": GATED_IMAGE,
            "allow_home": True,
        },
    }
    return {}, bodies.get(path)


async def _ask(scene: Scene, method: str, path: str, column: str) -> int:
    target = _path(path, column, scene)
    headers: dict[str, str] = {}
    if column in scene.tokens:
        headers["Authorization"] = f"token {scene.tokens[column]}"
    if method.startswith(GATE):
        if column == "cookie":
            # A browser gets in with the gate cookie that the service's gate page sets.
            headers["Cookie"] = await _gate_cookie(scene, scene.values[column]["url_id"])
        status, _body_bytes = await scene.service.gate_request(method.split()[1], target, headers)
        return status
    query, body = _body(method, path, scene)
    client = scene.client
    if column in ("cookie", "foreign"):
        admin_path = path.startswith((ADMIN, PREFIX + "admin"))
        await sign_in(client, scene.service.world, "root" if admin_path else "alice")
        headers["X-XSRFToken"] = cookie(client, "_xsrf") or ""
        headers["Origin"] = EVIL if column == "foreign" else str(client.make_url("/")).rstrip("/")
    async with client.request(
        method,
        target,
        headers=headers,
        params=query,
        json=body,
        allow_redirects=False,
    ) as response:
        await response.read()
        return response.status


async def _gate_cookie(scene: Scene, url_id: str) -> str:
    client = scene.client
    await sign_in(client, scene.service.world, "alice")
    async with client.get(PREFIX + "gate/" + url_id, allow_redirects=False) as response:
        assert response.status == 302
        morsel = response.cookies[GATE_COOKIE]
    return f"{GATE_COOKIE}={morsel.value}"


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    world = World()
    async with gated_service(world) as service:
        built = await _scene(world, service)
        try:
            yield built
        finally:
            await built.client.close()


_CELLS = [
    pytest.param(method, path, column, cells[index], id=f"{method} {path} {column}")
    for (method, path), cells in EXPECTED.items()
    for index, column in enumerate(COLUMNS)
    if cells[index] is not NA
]


@pytest.mark.parametrize(("method", "path", "column", "expected"), _CELLS)
async def test_cell(scene: Scene, method: str, path: str, column: str, expected: int) -> None:
    assert await _ask(scene, method, path, column) == expected


@pytest.mark.parametrize(("method", "path"), _head_rows())
async def test_head_answers_as_get_does(scene: Scene, method: str, path: str) -> None:
    cells = EXPECTED[("GET", path)]
    for index, column in enumerate(COLUMNS):
        if cells[index] is not NA:
            assert await _ask(scene, method, path, column) == cells[index], column
