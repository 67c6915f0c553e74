"""The ReadinessProbe contract, run against InMemoryReadinessProbe and AiohttpReadinessProbe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.domain.errors import Unable
from remoteappmanager.ports.probe import ReadinessProbe
from tests.support.services import free_port


@dataclass
class Backend:
    probe: ReadinessProbe
    ready_url: Callable[[], str]
    never_ready_url: Callable[[], str]


async def _http_app(failures_before_ready: int) -> TestServer:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if request.path == "/never/":
            return web.Response(status=503)
        if calls <= failures_before_ready:
            return web.Response(status=502)
        return web.Response(status=404 if request.path == "/missing/" else 200)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture(params=["memory", "http"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        fake = InMemoryReadinessProbe()

        def ready() -> str:
            fake.ready = True
            return "http://127.0.0.1:1/app/"

        def never() -> str:
            fake.ready = False
            return "http://127.0.0.1:1/app/"

        yield Backend(fake, ready, never)
        return
    server = await _http_app(failures_before_ready=3)
    probe = AiohttpReadinessProbe(first_interval=0.01, max_interval=0.05)
    try:
        yield Backend(
            probe,
            lambda: f"http://127.0.0.1:{server.port}/app/",
            lambda: f"http://127.0.0.1:{server.port}/never/",
        )
    finally:
        await probe.close()
        await server.close()


async def test_returns_once_the_application_answers(backend: Backend) -> None:
    await asyncio.wait_for(backend.probe.wait_ready(backend.ready_url(), 5), 5)


async def test_a_5xx_forever_is_a_timeout(backend: Backend) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(Unable, match=r"did not become ready within 0\.3 s"):
        await backend.probe.wait_ready(backend.never_ready_url(), 0.3)
    assert loop.time() - began < 2


async def test_closing_twice_is_harmless(backend: Backend) -> None:
    await backend.probe.close()
    await backend.probe.close()


async def test_http_any_answer_below_500_means_ready() -> None:
    server = await _http_app(failures_before_ready=0)
    probe = AiohttpReadinessProbe(first_interval=0.01)
    try:
        await probe.wait_ready(f"http://127.0.0.1:{server.port}/missing/", 2)
    finally:
        await probe.close()
        await server.close()


async def test_http_nothing_listening_yet_is_waited_for() -> None:
    port = free_port()
    probe = AiohttpReadinessProbe(first_interval=0.01, max_interval=0.05)

    async def up(request: web.Request) -> web.Response:
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/{tail:.*}", up)
    runner = web.AppRunner(app)
    await runner.setup()

    async def listen_later() -> None:
        await asyncio.sleep(0.3)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    later = asyncio.create_task(listen_later())
    try:
        await probe.wait_ready(f"http://127.0.0.1:{port}/x/", 5)
    finally:
        await later
        await probe.close()
        await runner.cleanup()


async def test_http_nothing_listening_ever_is_a_timeout() -> None:
    probe = AiohttpReadinessProbe(first_interval=0.01)
    try:
        with pytest.raises(Unable, match=r"within 0\.2 s"):
            await probe.wait_ready(f"http://127.0.0.1:{free_port()}/x/", 0.2)
    finally:
        await probe.close()


async def test_http_a_cancelled_wait_leaves_the_probe_usable() -> None:
    server = await _http_app(failures_before_ready=0)
    probe = AiohttpReadinessProbe(first_interval=0.01)
    try:
        waiting = asyncio.create_task(probe.wait_ready(f"http://127.0.0.1:{server.port}/never/", 5))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await probe.wait_ready(f"http://127.0.0.1:{server.port}/app/", 2)
    finally:
        await probe.close()
        await server.close()
