"""50 users start an application at the same moment; then all of them stop it.

Usage: .venv/bin/python bench/concurrent_starts.py [USERS]   (default 50)

Reported: failed starts, failed stops, wall time of each phase, and what leaked afterwards:
containers of the benchmark's realm still on the engine and routes still in the proxy
(targets: 0 failures, 0 leaks).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

from benchsupport import Stack, ensure_session_images, grant, machine, median, proxy, stack

from remoteappmanager.domain.containers import RUNINFO_REALM
from remoteappmanager.domain.sessions import Session


async def timed_start(bench: Stack, user: str) -> tuple[Session, float]:
    began = time.perf_counter()
    session = await bench.sessions.start(grant(user))
    return session, time.perf_counter() - began


async def main(users: int) -> None:
    ensure_session_images()
    print(machine())
    with proxy() as chp:
        async with stack(chp) as bench:
            began = time.perf_counter()
            results = await asyncio.gather(
                *(timed_start(bench, f"user{i:03d}") for i in range(users)),
                return_exceptions=True,
            )
            start_wall = time.perf_counter() - began
            started = [r for r in results if isinstance(r, tuple)]
            failures = Counter(str(r) for r in results if isinstance(r, BaseException))
            latencies = [elapsed for _, elapsed in started]
            served = 0
            for session, _ in started:
                async with bench.http.get(chp.public_url + session.urlpath + "/") as response:
                    served += response.status == 200

            began = time.perf_counter()
            stops = await asyncio.gather(
                *(bench.sessions.stop(s.user, s.url_id) for s, _ in started),
                return_exceptions=True,
            )
            stop_wall = time.perf_counter() - began
            stop_failures = Counter(str(r) for r in stops if isinstance(r, BaseException))

            leaked_containers = len(await bench.runtime.list({RUNINFO_REALM: bench.realm}))
            leaked_routes = len(chp.routes())

    print(f"{users} concurrent starts by {users} users")
    print(f"  started       : {len(started)}/{users} in {start_wall:.1f} s wall")
    if latencies:
        print(f"  start latency : median {median(latencies):.2f} s, max {max(latencies):.2f} s")
    print(f"  served 200 through the proxy: {served}/{len(started)}")
    print(f"  failed starts : {sum(failures.values())}")
    for message, count in failures.items():
        print(f"    {count} x {message}")
    print(
        f"  stopped       : {len(started) - sum(stop_failures.values())} in {stop_wall:.1f} s wall"
    )
    print(f"  failed stops  : {sum(stop_failures.values())}")
    for message, count in stop_failures.items():
        print(f"    {count} x {message}")
    print(f"  leaked containers: {leaked_containers}   leaked routes: {leaked_routes}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
