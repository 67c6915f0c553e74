"""Soak: thousands of start/stop cycles and hundreds of thousands of API requests in one run.

Usage: .venv/bin/python bench/soak.py [CYCLES] [REQUESTS] [CONCURRENCY] [MAX_MINUTES]
       (defaults 2000, 200000, 10, no limit)

The whole product as separate processes, as the fault-injection suite runs it
(``tests/support/fault_stack.py``): PostgreSQL, a private Docker engine (never the machine's),
JupyterHub with its configurable-http-proxy, and the service. CONCURRENCY users each start
their application, fetch it through the proxy and stop it, over and over, until CYCLES
cycles are done; meanwhile other clients send REQUESTS API requests (listings of
applications and containers, health) through the proxy, CONCURRENCY at a time.

Every 100 cycles a line shows the progress and the service's memory and descriptors; with
MAX_MINUTES the run ends after that long even if the counts are not reached (and says so).

Reported: the service's resident memory and open file descriptors after a warm-up and at the
end (targets: RSS growth < 10 MB, descriptors back to where they were), failed cycles and
requests, and what is left afterwards: containers of the realm on the engine and our routes
in the proxy (target: 0 and 0).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchsupport import machine
from tests.support.fault_stack import PREFIX, FaultStack

WARM_UP_CYCLES = 50
WARM_UP_REQUESTS = 5_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


class Counts:
    def __init__(self, deadline: float = float("inf")) -> None:
        self.cycles = 0
        self.requests = 0
        self.failures: Counter[str] = Counter()
        self.deadline = deadline

    def go_on(self, todo: list[int]) -> bool:
        return bool(todo) and time.monotonic() < self.deadline


async def cycles(stack: FaultStack, user: str, todo: list[int], counts: Counts) -> None:
    while counts.go_on(todo):
        todo.pop()
        started = await stack.start_session(user)
        if started.status != 201:
            counts.failures[f"start {started.status}"] += 1
            continue
        listing = await stack.call("GET", PREFIX + "api/v1/containers/", user=user)
        for url_id, container in listing.body["items"].items():
            page = await stack.call("GET", container["urlpath"] + "/", user=user)
            if page.status not in (200, 404):
                counts.failures[f"reach {page.status}"] += 1
            stopped = await stack.call("DELETE", f"{PREFIX}api/v1/containers/{url_id}/", user=user)
            if stopped.status != 204:
                counts.failures[f"stop {stopped.status}"] += 1
        counts.cycles += 1
        if counts.cycles % 100 == 0 and stack.service is not None:
            pid = stack.service.pid
            print(
                f"  {counts.cycles:5d} cycles, {counts.requests:6d} requests: service RSS "
                f"{rss_kib(pid) / 1024:.1f} MiB, {open_fds(pid)} descriptors",
                flush=True,
            )


async def requests(stack: FaultStack, users: list[str], todo: list[int], counts: Counts) -> None:
    paths = (
        PREFIX + "api/v1/applications/",
        PREFIX + "api/v1/containers/",
        PREFIX + "health",
    )
    turn = 0
    while counts.go_on(todo):
        todo.pop()
        turn += 1
        answer = await stack.call("GET", paths[turn % 3], user=users[turn % len(users)])
        if answer.status != 200:
            counts.failures[f"request {answer.status}"] += 1
        counts.requests += 1


async def phase(
    stack: FaultStack, cycle_count: int, request_count: int, concurrency: int, counts: Counts
) -> float:
    began = time.perf_counter()
    cycle_todo = list(range(cycle_count))
    request_todo = list(range(request_count))
    workers = [
        *(cycles(stack, stack.users[i], cycle_todo, counts) for i in range(concurrency)),
        *(
            requests(stack, stack.users[concurrency:], request_todo, counts)
            for _ in range(concurrency)
        ),
    ]
    await asyncio.gather(*workers)
    return time.perf_counter() - began


async def main(cycle_count: int, request_count: int, concurrency: int, max_minutes: float) -> None:
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = await FaultStack.create(Path(tmp), 2 * concurrency)
        try:
            assert stack.service is not None
            pid = stack.service.pid
            counts = Counts()
            await phase(stack, WARM_UP_CYCLES, WARM_UP_REQUESTS, concurrency, counts)
            await asyncio.sleep(2)
            rss_before, fds_before = rss_kib(pid), open_fds(pid)
            print(f"after warm-up ({counts.cycles} cycles, {counts.requests} requests):")
            print(f"  service RSS {rss_before / 1024:.1f} MiB, {fds_before} open descriptors")

            counts = Counts(time.monotonic() + max_minutes * 60)
            wall = await phase(stack, cycle_count, request_count, concurrency, counts)
            await asyncio.sleep(2)
            rss_after, fds_after = rss_kib(pid), open_fds(pid)
            containers = await stack.engine_containers()
            routes = await stack.our_routes()
        finally:
            await stack.close()
    print(f"soak: {counts.cycles} start/stop cycles and {counts.requests} API requests")
    if counts.cycles < cycle_count or counts.requests < request_count:
        print(f"  (stopped after {max_minutes:g} minutes, before {cycle_count} / {request_count})")
    print(f"  wall time        : {wall:.0f} s")
    print(f"  cycles per second: {counts.cycles / wall:.1f}")
    print(f"  requests/second  : {counts.requests / wall:.0f} (alongside the cycles)")
    print(f"  failures         : {dict(counts.failures) or 0}")
    print(
        f"  service RSS      : {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB "
        f"(growth {(rss_after - rss_before) / 1024:+.1f} MiB; target < 10)"
    )
    print(f"  open descriptors : {fds_before} -> {fds_after}")
    print(f"  left on engine   : {len(containers)} containers (target 0)")
    print(f"  left in proxy    : {len(routes)} routes (target 0)")


if __name__ == "__main__":
    arguments = [float(value) for value in sys.argv[1:5]]
    defaults = [2000, 200_000, 10, float("inf")]
    cycle_count, request_count, concurrency, max_minutes = arguments + defaults[len(arguments) :]
    asyncio.run(main(int(cycle_count), int(request_count), int(concurrency), max_minutes))
