"""The RouteTable contract, run against InMemoryRouteTable and ChpRouteTable (a real proxy)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable
from remoteappmanager.domain.containers import Route
from remoteappmanager.domain.errors import InvalidRequest, Unable, Unavailable
from remoteappmanager.domain.naming import urlpath
from remoteappmanager.ports.routes import RouteTable
from tests.support.services import Proxy


@dataclass
class Backend:
    """One implementation of the port plus the controls the contract needs."""

    kind: str
    table: RouteTable
    add_foreign: Callable[[str, str], Awaitable[None]]
    all_paths: Callable[[], Awaitable[set[str]]]
    go_down: Callable[[], None]


def _post_foreign(proxy: Proxy, path: str, target: str) -> None:
    # A route as JupyterHub adds it, straight through the proxy's API.
    request = urllib.request.Request(
        proxy.api_url + "/api/routes" + path,
        data=json.dumps({"target": target, "jupyterhub": True}).encode(),
        headers={"Authorization": f"token {proxy.token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


@pytest.fixture(params=["memory", pytest.param("chp", marks=pytest.mark.proxy)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        fake = InMemoryRouteTable()

        async def add_foreign_fake(path: str, target: str) -> None:
            fake.add_foreign(path, target)

        async def all_fake() -> set[str]:
            return set(fake.all_paths)

        def down_fake() -> None:
            fake.available = False

        yield Backend("memory", fake, add_foreign_fake, all_fake, down_fake)
        await fake.close()
        return

    proxy: Proxy = request.getfixturevalue("proxy")
    table = ChpRouteTable(proxy.api_url, proxy.token, backoff=0.01)

    async def add_foreign_real(path: str, target: str) -> None:
        await asyncio.to_thread(_post_foreign, proxy, path, target)

    async def all_real() -> set[str]:
        return set(await asyncio.to_thread(proxy.routes))

    try:
        yield Backend("chp", table, add_foreign_real, all_real, proxy.stop)
    finally:
        await table.close()


def route(user: str, url_id: str, port: int = 40000) -> Route:
    return Route(
        path=urlpath(user, url_id),
        target=f"http://127.0.0.1:{port}",
        user=user,
        url_id=url_id,
    )


# ---------------------------------------------------------------------------- contract
async def test_add_list_remove(backend: Backend) -> None:
    table = backend.table
    alice = route("alice", "a1")
    bob = Route(
        path=urlpath("bob", "b2"),
        target="http://127.0.0.1:40002",
        user="bob",
        url_id="b2",
        extra={"mapping_id": "m1"},
    )
    await table.add(alice)
    await table.add(bob)

    assert await table.list() == {alice.path: alice, bob.path: bob}

    await table.remove(alice.path)
    assert await table.list() == {bob.path: bob}
    assert alice.path not in await backend.all_paths()


async def test_add_is_idempotent_and_replaces_the_target(backend: Backend) -> None:
    first = route("alice", "a1", 40001)
    moved = route("alice", "a1", 40009)
    await backend.table.add(first)
    await backend.table.add(first)
    await backend.table.add(moved)
    assert await backend.table.list() == {moved.path: moved}


async def test_removing_a_route_that_is_gone_is_fine(backend: Backend) -> None:
    gone = route("alice", "a1")
    await backend.table.remove(gone.path)
    await backend.table.add(gone)
    await backend.table.remove(gone.path)
    await backend.table.remove(gone.path)
    assert await backend.table.list() == {}


async def test_routes_of_others_are_neither_listed_nor_removed(backend: Backend) -> None:
    ours = route("alice", "a1")
    await backend.table.add(ours)
    hub_route = "/user/alice"
    lookalike = urlpath("alice", "f00")
    await backend.add_foreign(hub_route, "http://127.0.0.1:8888")
    await backend.add_foreign(lookalike, "http://127.0.0.1:8889")

    assert await backend.table.list() == {ours.path: ours}

    await backend.table.remove(lookalike)
    with pytest.raises(InvalidRequest):
        await backend.table.remove(hub_route)
    with pytest.raises(InvalidRequest):
        await backend.table.add(Route("/hub", "http://127.0.0.1:1", "alice", "x"))
    assert {hub_route, lookalike, ours.path} <= await backend.all_paths()


async def test_odd_user_names_round_trip(backend: Backend) -> None:
    names = ["al ice", "a?b#c%d", "ünïcødé", "x@y~z", "a+b", "Ünder_score-dash.dot"]
    routes = [route(name, f"id{n}") for n, name in enumerate(names)]
    for each in routes:
        await backend.table.add(each)
    assert await backend.table.list() == {each.path: each for each in routes}
    for each in routes:
        await backend.table.remove(each.path)
    assert await backend.table.list() == {}


async def test_dot_segments_and_foreign_shapes_are_refused(backend: Backend) -> None:
    for path in ["/user/../containers/abc", "/user/%2e%2e/containers/abc", "/", "/hub/"]:
        with pytest.raises(InvalidRequest):
            await backend.table.add(Route(path, "http://127.0.0.1:1", "x", "abc"))
        with pytest.raises(InvalidRequest):
            await backend.table.remove(path)


async def test_many_concurrent_adds_all_land(backend: Backend) -> None:
    routes = [route(f"user{n}", f"id{n}", 41000 + n) for n in range(100)]
    await asyncio.gather(*(backend.table.add(each) for each in routes))
    assert await backend.table.list() == {each.path: each for each in routes}
    await asyncio.gather(*(backend.table.remove(each.path) for each in routes))
    assert await backend.table.list() == {}


async def test_a_proxy_that_is_down_is_unavailable(backend: Backend) -> None:
    await backend.table.add(route("alice", "a1"))
    backend.go_down()
    for call in (
        lambda: backend.table.list(),
        lambda: backend.table.add(route("bob", "b1")),
        lambda: backend.table.remove(urlpath("alice", "a1")),
    ):
        with pytest.raises(Unavailable, match=r"^proxy unavailable"):
            await call()


# ---------------------------------------------------------------------------- the real proxy
@pytest.mark.proxy
async def test_a_wrong_token_is_a_clear_error_without_the_token(proxy: Proxy) -> None:
    table = ChpRouteTable(proxy.api_url, "not-the-token-" + proxy.token[:4], retries=3)
    try:
        for call in (
            lambda: table.list(),
            lambda: table.add(route("alice", "a1")),
            lambda: table.remove(urlpath("alice", "a1")),
        ):
            with pytest.raises(Unavailable, match="proxy rejected our token") as caught:
                await call()
            assert "not-the-token" not in str(caught.value)
            assert proxy.token not in str(caught.value)
    finally:
        await table.close()
    assert proxy.routes() == {}


@pytest.mark.proxy
async def test_routes_carry_our_tag_and_never_the_hub_tag(proxy: Proxy) -> None:
    table = ChpRouteTable(proxy.api_url, proxy.token)
    try:
        await table.add(route("alice", "a1"))
    finally:
        await table.close()
    data = proxy.routes()["/user/alice/containers/a1"]
    assert data["remoteappmanager"] is True
    assert data["user"] == "alice"
    assert data["url_id"] == "a1"
    assert "jupyterhub" not in data


@pytest.mark.proxy
async def test_the_proxy_routes_odd_user_names_to_the_target(
    proxy: Proxy, aiohttp_server: Callable[..., Awaitable[object]]
) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.raw_path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    server = await aiohttp_server(app)
    target = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]

    table = ChpRouteTable(proxy.api_url, proxy.token)
    try:
        for name in ["alice", "al ice", "a?b#c", "ünï", "x@y~z"]:
            path = urlpath(name, "abc123")
            await table.add(Route(path, target, name, "abc123"))
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    proxy.public_url + path + "/",
                    # As a browser sends it: the path exactly as urlpath encoded it.
                    allow_redirects=False,
                ) as response,
            ):
                assert response.status == 200, name
                assert (await response.text()).startswith(path), name
    finally:
        await table.close()


# ---------------------------------------------------------------------------- retries
@dataclass
class FlakyProxy:
    """A stand-in for the proxy's API that fails on purpose: ``answers`` are used in turn."""

    answers: list[int]
    seen: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        status = self.answers.pop(0) if self.answers else 200
        if request.method == "GET" and status == 200:
            return web.json_response({})
        return web.Response(status=status)


async def _flaky(
    aiohttp_server: Callable[..., Awaitable[object]], answers: list[int]
) -> tuple[FlakyProxy, str]:
    flaky = FlakyProxy(answers)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", flaky.handle)
    server = await aiohttp_server(app)
    return flaky, f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]


async def test_5xx_is_retried(aiohttp_server: Callable[..., Awaitable[object]]) -> None:
    flaky, url = await _flaky(aiohttp_server, [502, 503, 201])
    table = ChpRouteTable(url, "t", retries=3, backoff=0.001)
    try:
        await table.add(route("alice", "a1"))
    finally:
        await table.close()
    assert flaky.seen == 3


async def test_5xx_beyond_the_retries_is_unavailable(
    aiohttp_server: Callable[..., Awaitable[object]],
) -> None:
    flaky, url = await _flaky(aiohttp_server, [500] * 10)
    table = ChpRouteTable(url, "t", retries=2, backoff=0.001)
    try:
        with pytest.raises(Unavailable, match="HTTP 500"):
            await table.list()
    finally:
        await table.close()
    assert flaky.seen == 3


@pytest.mark.parametrize(("status", "error"), [(400, Unable), (403, Unavailable)])
async def test_4xx_is_never_retried(
    aiohttp_server: Callable[..., Awaitable[object]], status: int, error: type[Exception]
) -> None:
    flaky, url = await _flaky(aiohttp_server, [status] * 10)
    table = ChpRouteTable(url, "t", retries=3, backoff=0.001)
    try:
        with pytest.raises(error):
            await table.add(route("alice", "a1"))
    finally:
        await table.close()
    assert flaky.seen == 1


async def test_connection_errors_are_retried_then_unavailable() -> None:
    from tests.support.services import free_port

    table = ChpRouteTable(f"http://127.0.0.1:{free_port()}", "t", retries=2, backoff=0.001)
    try:
        with pytest.raises(Unavailable, match="cannot connect"):
            await table.list()
    finally:
        await table.close()


async def test_concurrency_is_bounded(aiohttp_server: Callable[..., Awaitable[object]]) -> None:
    in_flight = 0
    peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return web.Response(status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    server = await aiohttp_server(app)
    table = ChpRouteTable(f"http://127.0.0.1:{server.port}", "t", max_concurrency=4)  # type: ignore[attr-defined]
    try:
        await asyncio.gather(*(table.add(route(f"u{n}", f"i{n}")) for n in range(40)))
    finally:
        await table.close()
    assert peak == 4
