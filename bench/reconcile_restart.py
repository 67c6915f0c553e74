"""A proxy restart with 200 running applications: how long until every route is back?

Usage: .venv/bin/python bench/reconcile_restart.py [CONTAINERS]   (default 200)

Starts CONTAINERS applications (20 at a time, not timed), restarts the proxy (it forgets every
route), then times one reconciliation pass and checks that every route is back and serves.
Also times a pass with nothing to do. Target: all routes back in < 2 s. Every container is
removed at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time

from benchsupport import Stack, ensure_session_images, grant, machine, proxy, stack

from remoteappmanager.domain.sessions import Session

SETUP_CONCURRENCY = 20


async def start_many(bench: Stack, count: int) -> list[Session]:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int) -> Session:
        async with gate:
            return await bench.sessions.start(grant(f"user{i:03d}"))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def stop_all(bench: Stack, sessions: list[Session]) -> None:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(session: Session) -> None:
        async with gate:
            await bench.sessions.stop(session.user, session.url_id)

    await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)


async def main(count: int) -> None:
    ensure_session_images()
    print(machine())
    with proxy() as chp:
        async with stack(chp) as bench:
            began = time.perf_counter()
            sessions = await start_many(bench, count)
            setup_time = time.perf_counter() - began
            print(f"  set-up: {len(sessions)} applications running in {setup_time:.1f} s")

            began = time.perf_counter()
            idle = await bench.reconciler.reconcile_once()
            idle_time = time.perf_counter() - began
            assert not idle.changed

            await asyncio.to_thread(chp.restart)
            lost = len(chp.routes())

            began = time.perf_counter()
            report = await bench.reconciler.reconcile_once()
            repair_time = time.perf_counter() - began
            back = set(await asyncio.to_thread(chp.routes))
            expected = {s.urlpath for s in sessions}

            served = 0
            for session in sessions:
                async with bench.http.get(chp.public_url + session.urlpath + "/") as response:
                    served += response.status == 200

            await stop_all(bench, sessions)

    print(f"reconcile after a proxy restart, {count} running containers")
    print(f"  routes left after the restart : {lost}")
    added, errors = len(report.routes_added), len(report.errors)
    print(f"  routes re-added by one pass   : {added} ({errors} errors)")
    print(f"  every route back              : {back == expected}")
    print(f"  time until all routes back    : {repair_time:.3f} s (target < 2 s)")
    print(f"  served 200 through the proxy  : {served}/{count}")
    print(f"  a pass with nothing to do     : {idle_time * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
