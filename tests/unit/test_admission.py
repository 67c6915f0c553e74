"""Admission of reads and the garbage collector's tuning (``web.admission``)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from aiohttp import web

from remoteappmanager.web.admission import GC_THRESHOLDS, tune_garbage_collector
from tests.support.webapp import PREFIX, World, make_app

SLOW = PREFIX + "slow-for-test"


def _app_with_a_slow_read(
    world: World, limit: int
) -> tuple[web.Application, dict[str, int], asyncio.Event]:
    app = make_app(world, max_concurrent_requests=limit)
    seen = {"now": 0, "most": 0, "done": 0}
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        await release.wait()
        seen["now"] -= 1
        seen["done"] += 1
        return web.Response(text="ok")

    async def write(request: web.Request) -> web.Response:
        return web.Response(text="written")

    app.router.add_get(SLOW, slow)
    app.router.add_post(SLOW, write)
    return app, seen, release


async def test_reads_beyond_the_bound_wait_their_turn(aiohttp_client: Any) -> None:
    app, seen, release = _app_with_a_slow_read(World(), limit=2)
    client = await aiohttp_client(app)
    reads = [asyncio.ensure_future(client.get(SLOW)) for _ in range(5)]
    for _ in range(200):
        await asyncio.sleep(0.005)
        if seen["now"] == 2:
            break
    await asyncio.sleep(0.05)
    assert seen["most"] == 2
    # Health, metrics and writes are not queued behind the reads.
    assert (await client.get(PREFIX + "metrics")).status == 200
    assert (await client.get(PREFIX + "health")).status in (200, 503)
    write = await asyncio.wait_for(client.post(SLOW), 5)
    assert await write.text() == "written"
    release.set()
    answers = await asyncio.gather(*reads)
    assert [answer.status for answer in answers] == [200] * 5
    assert seen == {"now": 0, "most": 2, "done": 5}


async def test_no_bound_with_zero(aiohttp_client: Any) -> None:
    app, seen, release = _app_with_a_slow_read(World(), limit=0)
    client = await aiohttp_client(app)
    reads = [asyncio.ensure_future(client.get(SLOW)) for _ in range(5)]
    for _ in range(200):
        await asyncio.sleep(0.005)
        if seen["now"] == 5:
            break
    assert seen["most"] == 5
    release.set()
    await asyncio.gather(*reads)


def test_the_collector_is_tuned_once_started() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
