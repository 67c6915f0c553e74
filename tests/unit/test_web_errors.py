"""The error middleware: domain errors → API JSON or escaped HTML; surprises → a generic 500."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from remoteappmanager.domain.errors import (
    Conflict,
    Exists,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
    Unauthorized,
    Unavailable,
)
from tests.support.webapp import API, PREFIX, World, make_app

CASES = [
    (InvalidRequest, 400, "BadRepresentation"),
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "NotFound"),
    (Exists, 409, "Exists"),
    (Conflict, 409, "Exists"),
    (Unavailable, 503, "Unable"),
    (Unable, 500, "Unable"),
]


class _Surprise(Exception):
    pass


def _raiser(error: Exception) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise error

    return handler


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient[Any, Any]:
    app = make_app(World())
    for cls, _, _ in CASES:
        error = cls("a <b>bad</b> thing & more")
        app.router.add_get(f"{API}v1/raise/{cls.__name__}", _raiser(error))
        app.router.add_get(f"{PREFIX}raise/{cls.__name__}", _raiser(error))
    app.router.add_get(API + "v1/surprise", _raiser(_Surprise("secret=hunter2 at /srv/db")))
    app.router.add_get(PREFIX + "surprise", _raiser(_Surprise("secret=hunter2 at /srv/db")))
    app.router.add_post(API + "v1/only-post", _raiser(Unable("never")))
    return await aiohttp_client(app)


@pytest.mark.parametrize(("cls", "status", "wire"), CASES)
async def test_api_errors_are_json_with_the_wire_name(
    client: TestClient[Any, Any], cls: type[RemoteAppError], status: int, wire: str
) -> None:
    response = await client.get(f"{API}v1/raise/{cls.__name__}")
    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == {"type": wire, "message": "a <b>bad</b> thing & more"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("cls", "status", "wire"), CASES)
async def test_page_errors_are_escaped_html(
    client: TestClient[Any, Any], cls: type[RemoteAppError], status: int, wire: str
) -> None:
    response = await client.get(f"{PREFIX}raise/{cls.__name__}")
    assert response.status == status
    assert response.content_type == "text/html"
    text = await response.text()
    assert "a &lt;b&gt;bad&lt;/b&gt; thing &amp; more" in text
    assert "<b>" not in text


async def test_unexpected_error_is_a_generic_500_with_the_request_id(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get(API + "v1/surprise")
    assert response.status == 500
    body = await response.json()
    assert body["type"] == "Unable"
    assert "hunter2" not in body["message"]
    assert "/srv/db" not in body["message"]
    request_id = response.headers["X-Request-Id"]
    assert request_id in body["message"]

    page = await client.get(PREFIX + "surprise")
    text = await page.text()
    assert page.status == 500
    assert "hunter2" not in text
    assert "_Surprise" not in text
    assert page.headers["X-Request-Id"] in text


async def test_unknown_api_path_is_json_404(client: TestClient[Any, Any]) -> None:
    response = await client.get(API + "v1/nothing/here/")
    assert response.status == 404
    assert (await response.json())["type"] == "NotFound"
    assert response.headers["Cache-Control"] == "no-store"


async def test_wrong_method_is_json_405_with_allow(client: TestClient[Any, Any]) -> None:
    response = await client.get(API + "v1/only-post")
    assert response.status == 405
    assert (await response.json())["type"] == "BadRepresentation"
    assert "POST" in response.headers["Allow"]


async def test_unknown_page_is_html_404(client: TestClient[Any, Any]) -> None:
    response = await client.get(PREFIX + "nothing")
    assert response.status == 404
    assert response.content_type == "text/html"


async def test_request_id_is_kept_when_sane_and_replaced_otherwise(
    client: TestClient[Any, Any],
) -> None:
    kept = await client.get(API + "v1/user", headers={"X-Request-Id": "abc-123-def"})
    assert kept.headers["X-Request-Id"] == "abc-123-def"
    replaced = await client.get(API + "v1/user", headers={"X-Request-Id": "x forged=1 <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-Id"])
    fresh = await client.get(API + "v1/user")
    assert fresh.headers["X-Request-Id"] != replaced.headers["X-Request-Id"]


async def test_api_success_is_not_cacheable_either(
    client: TestClient[Any, Any], aiohttp_client: Any
) -> None:
    world = World()
    world.hub.add_user("alice")
    app = make_app(world)
    api_client = await aiohttp_client(app)
    token = world.hub.issue_token("alice")
    response = await api_client.get(API + "v1/user", headers={"Authorization": f"token {token}"})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
