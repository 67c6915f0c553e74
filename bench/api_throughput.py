"""Throughput of `GET {svc}api/v1/applications/`: 200 signed-in users with 5 grants each.

The service runs in a process of its own, wired by ``bootstrap.build`` exactly as in
production (SQLite database, image metadata cache, shared container listing, JSON logs at
INFO written to /dev/null), on 127.0.0.1 through aiohttp's server (uvloop when installed).
Only the outside systems are stand-ins: the hub (API tokens of an in-memory identity
provider), the proxy, and a Docker engine that answers from memory after a realistic delay
(``inspect_image`` 3 ms, ``list`` 15 ms, create/start 50 ms). Half the users have one
application running. The users are a client in another process (``closed_loop``): one
keep-alive connection each, all opened first, each request with its user's token; a
``WARM_UP`` of load comes before the measurement and is not counted.

    .venv/bin/python bench/api_throughput.py [USERS] [SECONDS] [RATE]

Default 200 users, 15 s. Without RATE the users send back to back (closed loop: the maximum
throughput; latency is then USERS / throughput by Little's law). With RATE (req/s) each user
waits USERS / RATE seconds after every answer before asking again, so that the users together
ask about RATE times a second: people reloading a page, not a flood.

    .venv/bin/python bench/api_throughput.py --compare [USERS] [SECONDS] [ROUNDS]

runs two services side by side on the same database, one as configured by default and one
"untuned" (no bound on concurrent reads, ``max_concurrent_requests = 0``, and Python's default
garbage collector thresholds, nothing frozen), and loads them in turn, closed loop, ROUNDS
times (default 200 users, 10 s, 3 rounds). It prints throughput, latency p50/p99 and the event
loop's lag p50/p99/worst (from ``remoteapp_event_loop_lag_seconds``, read when the client
starts measuring and at the end) of each, the worst lag of the warm-up apart, then medians.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import multiprocessing
import multiprocessing.connection
import os
import secrets
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fakeservice import serving  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tools import cpu_seconds  # noqa: E402

from remoteappmanager import bootstrap  # noqa: E402
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider  # noqa: E402
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime  # noqa: E402
from remoteappmanager.domain.containers import ContainerInfo, ContainerSpec  # noqa: E402
from remoteappmanager.domain.labels import ImageMetadata  # noqa: E402
from remoteappmanager.domain.models import Policy  # noqa: E402
from remoteappmanager.domain.sessions import StartStep  # noqa: E402
from remoteappmanager.services import catalogue  # noqa: E402
from remoteappmanager.settings import Settings  # noqa: E402
from remoteappmanager.web.admission import tune_garbage_collector  # noqa: E402
from remoteappmanager.web.logs import configure_logging  # noqa: E402

PREFIX = "/services/remoteapp/"
APPLICATIONS = PREFIX + "api/v1/applications/"
GRANTS_PER_USER = 5
WARM_UP = 3.0
NS = "eu.simphony-project.docker."
IMAGES = [f"bench/app-{n}:latest" for n in range(GRANTS_PER_USER)]
# A 128x128 PNG icon is typically a few kB; every listing carries five of them.
ICON = base64.b64encode(os.urandom(3000)).decode()


class SlowRuntime(InMemoryRuntime):
    """The in-memory engine, answering after the delays of a real local engine."""

    async def inspect_image(self, image: str) -> ImageMetadata:
        await asyncio.sleep(0.003)
        return await super().inspect_image(image)

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        await asyncio.sleep(0.015)
        return await super().list(labels)

    async def create(self, spec: ContainerSpec) -> str:
        await asyncio.sleep(0.05)
        return await super().create(spec)

    async def start(
        self, container_id: str, progress: Callable[[StartStep], None] | None = None
    ) -> ContainerInfo:
        await asyncio.sleep(0.05)
        return await super().start(container_id, progress)


def user_name(n: int) -> str:
    return f"user{n:03d}"


async def seed(database_url: str, users: int) -> None:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        for image in IMAGES:
            await catalogue.create_application(uow, image)
        for n in range(users):
            await catalogue.create_user(uow, user_name(n))
            for k, image in enumerate(IMAGES):
                policy = Policy(allow_home=k % 2 == 0, allow_startup_data=k == 0)
                await catalogue.grant_access(uow, image, user_name(n), policy)


# ------------------------------------------------------------------------------ the service
def serve(
    conn: multiprocessing.connection.Connection, database_url: str, users: int, tuned: bool = True
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    asyncio.run(_serve(conn, database_url, users, tuned))


async def _serve(
    conn: multiprocessing.connection.Connection, database_url: str, users: int, tuned: bool
) -> None:
    port = free_port()
    settings = Settings(
        database_url=database_url,
        configproxy_auth_token="bench",
        jupyterhub_api_token="bench",
        realm=f"bench-{secrets.token_hex(4)}",
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{port}",
        log_format="json",
        # Untuned: every request is let in at once (as before admission control).
        max_concurrent_requests=Settings.model_fields["max_concurrent_requests"].default
        if tuned
        else 0,
    )
    configure_logging(settings.log_format, settings.log_level)
    identity = InMemoryIdentityProvider()
    runtime = SlowRuntime()
    for n, image in enumerate(IMAGES):
        runtime.add_image(
            image,
            {
                NS + "ui_name": f"Application {n}",
                NS + "description": "A benchmark application " * 4,
                NS + "icon_128": ICON,
                NS + "type": "vncapp",
                NS + "env.x11-width": "",
                NS + "env.x11-height": "",
                NS + "env.startupdata": "",
            },
        )
    async with serving(settings, identity, runtime, port) as deps:
        if tuned:
            # As ``serve`` does once the service has started.
            tune_garbage_collector()
        assert deps.applications is not None
        assert deps.sessions is not None
        tokens = []
        for n in range(users):
            identity.add_user(user_name(n))
            tokens.append(identity.issue_token(user_name(n)))
            if n % 2 == 0:
                first = (await deps.applications.list_for(user_name(n)))[0]
                await deps.sessions.start_for(user_name(n), first.mapping_id)
        conn.send((f"http://127.0.0.1:{port}", tokens))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


# ------------------------------------------------------------------------------ the load
# The users are driven by the small client below rather than by wrk, which this benchmark used
# before: wrk counts from its own start, when it opens every connection at once, and its
# percentiles cannot leave that out; on this machine that start alone puts a few hundred
# requests at 200-450 ms into a run, which the service never saw (its own timing of the
# same requests stayed under 150 ms). The client opens every connection first, warms up, and
# times only what it sends after; with raw sockets and one selector it costs about as much
# CPU as wrk. (wrk stays the load of ``replicas.py``, whose figure is throughput.)
def closed_loop(
    report: multiprocessing.connection.Connection,
    base: str,
    tokens: list[str],
    warm_up: float,
    seconds: float,
    think: float,
) -> None:
    """One keep-alive connection per token, each asking for the listing again as soon as
    (or ``think`` seconds after) its answer is in. Says "measuring" on ``report`` once the
    warm-up is over, then sends (requests, errors, p50 ms, p99 ms, max ms) of the requests
    sent after the warm-up and answered within ``seconds``."""
    host, port = base.removeprefix("http://").split(":")
    users: dict[socket.socket, _User] = {}
    selector = selectors.DefaultSelector()
    for token in tokens:
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        request = (
            f"GET {APPLICATIONS} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: token {token}\r\n\r\n"
        ).encode()
        users[sock] = _User(request)
        selector.register(sock, selectors.EVENT_READ)
    latencies: list[float] = []
    errors = 0
    waiting: list[tuple[float, int, socket.socket]] = []  # (when, tie-break, whose) to send
    started = time.perf_counter()
    measure_from = started + warm_up
    stop_at = measure_from + seconds
    for sock, user in users.items():
        user.send(sock)
    measuring = False
    while (now := time.perf_counter()) < stop_at:
        if not measuring and now >= measure_from:
            measuring = True
            report.send("measuring")
        while waiting and waiting[0][0] <= now:
            _when, _n, sock = heapq.heappop(waiting)
            users[sock].send(sock)
        timeout = min(0.05, waiting[0][0] - now) if waiting else 0.05
        for key, _events in selector.select(max(0.0, timeout)):
            sock = cast(socket.socket, key.fileobj)
            user = users[sock]
            status = user.receive(sock)
            if status is None:
                continue
            done = time.perf_counter()
            if user.sent_at >= measure_from and done < stop_at:
                latencies.append(done - user.sent_at)
                errors += status != 200
            if think:
                heapq.heappush(waiting, (done + think, sock.fileno(), sock))
            else:
                user.send(sock)
    for sock in users:
        sock.close()
    latencies.sort()
    count = len(latencies)
    report.send(
        (
            count,
            errors,
            latencies[count // 2] * 1000,
            latencies[min(count - 1, int(count * 0.99))] * 1000,
            latencies[-1] * 1000,
        )
    )


class _User:
    """One user's connection: the request it repeats, and the answer being read."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.sent_at = 0.0
        self.buffer = b""

    def send(self, sock: socket.socket) -> None:
        self.sent_at = time.perf_counter()
        sock.sendall(self.request)

    def receive(self, sock: socket.socket) -> int | None:
        """The status of the answer once it is whole, else None."""
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the service closed a connection")
        self.buffer += data
        head, separator, body = self.buffer.partition(b"\r\n\r\n")
        if not separator:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return None
        self.buffer = body[length:]
        return int(head.split(b" ", 2)[1])


_WRK_SCRIPT = """
tokens = {%(tokens)s}
counter = 0
%(delay)srequest = function()
  counter = counter + 1
  local token = tokens[(counter %% #tokens) + 1]
  return wrk.format("GET", "%(path)s", {["Authorization"] = "token " .. token})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk(
    base: str, tokens: list[str], seconds: float, connections: int, think_ms: int = 0
) -> tuple[int, int, float, float, float]:
    """(requests, errors, p50 ms, p99 ms, max ms) of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            _WRK_SCRIPT
            % {
                "tokens": ", ".join(f'"{token}"' for token in tokens),
                "path": APPLICATIONS,
                # Only when users think: wrk then sends every next request from a timer.
                "delay": f"delay = function()\n  return {think_ms}\nend\n" if think_ms else "",
            }
        )
    try:
        result = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    requests, errors, _duration, p50, p99, most = (int(part) for part in line.split()[1:])
    return requests, errors, p50 / 1000, p99 / 1000, most / 1000


def compare(users: int, seconds: float, rounds: int) -> None:
    """Untuned and tuned services side by side, alternating, on the same machine."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'remoteappmanager.db'}"
        print(f"seeding {users} users x {GRANTS_PER_USER} grants ...", flush=True)
        asyncio.run(seed(database_url, users))
        servers = {}
        try:
            for arm, tuned in (("untuned", False), ("tuned", True)):
                parent, child = multiprocessing.Pipe()
                process = multiprocessing.get_context("spawn").Process(
                    target=serve, args=(child, database_url, users, tuned)
                )
                process.start()
                servers[arm] = (process, parent, *parent.recv())
            results: dict[str, list[tuple[float, ...]]] = {arm: [] for arm in servers}
            for round_ in range(rounds):
                for arm, (_process, _conn, base, tokens) in servers.items():
                    used = {other: cpu_seconds(servers[other][0].pid) for other in servers}
                    run = measured_run(base, tokens, seconds)
                    used = {o: cpu_seconds(servers[o][0].pid) - used[o] for o in servers}
                    rate = run.requests / seconds
                    results[arm].append(
                        (rate, run.p50, run.p99, run.most, run.errors, *run.lag, run.lag_warming)
                    )
                    print(
                        f"round {round_ + 1} {arm:8}: {rate:6.0f} req/s, p50 {run.p50:.1f} ms, "
                        f"p99 {run.p99:.1f} ms (p99/p50 {run.p99 / run.p50:.1f}), max "
                        f"{run.most:.0f} ms, errors {run.errors}; loop lag p50 <= "
                        f"{run.lag[0]:g} ms, p99 <= {run.lag[1]:g} ms, worst <= {run.lag[2]:g} "
                        f"ms; warming up, worst <= {run.lag_warming:g} ms; CPU of the services: "
                        + ", ".join(
                            f"{o} {100 * u / (WARM_UP + seconds):.0f} %" for o, u in used.items()
                        ),
                        flush=True,
                    )
        finally:
            for process, conn, *_ in servers.values():
                conn.send("stop")
                process.join(15)
                if process.is_alive():
                    process.kill()
    print(f"\nmedians over {rounds} rounds, closed loop, {users} users, {seconds:g} s each:")
    print(f"{'':9}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'p99/p50':>8}"
          f"{'lag p50':>9}{'lag p99':>9}{'lag max':>9}{'warming':>9}")  # fmt: skip
    for arm, rows in results.items():
        rate, p50, p99, _most, _errors, lag50, lag99, worst, warming = (
            statistics.median(column) for column in zip(*rows, strict=True)
        )
        print(
            f"{arm:9}{rate:7.0f}{p50:8.1f}{p99:8.1f}{p99 / p50:8.1f}{lag50:9g}{lag99:9g}"
            f"{worst:9g}{warming:9g}"
        )
    print(
        f"(lag in ms, to the histogram's bucket bounds, after a {WARM_UP:g} s warm-up; "
        f"'warming': the worst lag in the warm-up, while the {users} connections opened and "
        "the caches filled)"
    )
    print("targets: p99/p50 <= 3 and worst loop lag <= 20 ms, for the tuned service")


@dataclass(frozen=True)
class MeasuredRun:
    """One measured run of the users: the client's figures, and the loop lag during the
    warm-up (worst, ms: connections opening, caches filling) and after (p50, p99, worst)."""

    requests: int
    errors: int
    p50: float
    p99: float
    most: float
    lag: tuple[float, ...]
    lag_warming: float


def measured_run(base: str, tokens: list[str], seconds: float, think: float = 0.0) -> MeasuredRun:
    """The users in a process of their own for ``WARM_UP + seconds``; the service's loop-lag
    histogram is read before, when the client starts measuring, and after."""
    report, child = multiprocessing.Pipe()
    client = multiprocessing.get_context("spawn").Process(
        target=closed_loop, args=(child, base, tokens, WARM_UP, seconds, think)
    )
    before = loop_lag(base)
    client.start()
    try:
        if not report.poll(WARM_UP + 60) or report.recv() != "measuring":
            raise RuntimeError("the client never started measuring")
        measuring = loop_lag(base)
        if not report.poll(seconds + 60):
            raise RuntimeError("the client never reported")
        requests, errors, p50, p99, most = report.recv()
    finally:
        client.join(30)
        if client.is_alive():
            client.kill()
    after = loop_lag(base)
    return MeasuredRun(
        requests,
        errors,
        p50,
        p99,
        most,
        lag_quantiles(measuring, after),
        lag_quantiles(before, measuring)[2],
    )


def lag_quantiles(before: dict[float, float], after: dict[float, float]) -> tuple[float, ...]:
    """The loop lag's p50, p99 and worst during the load, in ms, as the histogram's upper
    bucket bounds (so "<= this")."""
    new = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = new[float("inf")]
    bounds = sorted(new)

    def quantile(q: float) -> float:
        bound = next(bound for bound in bounds if new[bound] >= q * total)
        return bound * 1000

    return quantile(0.5), quantile(0.99), quantile(1.0)


def main() -> None:
    if "--compare" in sys.argv:
        args = [arg for arg in sys.argv[1:] if arg != "--compare"]
        users = int(args[0]) if args else 200
        seconds = float(args[1]) if len(args) > 1 else 10.0
        compare(users, seconds, int(args[2]) if len(args) > 2 else 3)
        return
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else None
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        database_url = f"sqlite+aiosqlite:///{Path(tmp) / 'remoteappmanager.db'}"
        print(f"seeding {users} users x {GRANTS_PER_USER} grants ...", flush=True)
        asyncio.run(seed(database_url, users))
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(child, database_url, users)
        )
        server.start()
        try:
            base, tokens = parent.recv()
            think = users / rate if rate else 0.0
            print(
                f"serving at {base}; {users} users, {think * 1000:.0f} ms between an answer and "
                f"the next request, for {WARM_UP:g} s (warm-up) + {seconds:g} s"
            )
            run = measured_run(base, tokens, seconds, think)
        finally:
            parent.send("stop")
            server.join(15)
            if server.is_alive():
                server.kill()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"requests: {run.requests} in {seconds:g} s, errors: {run.errors}")
    print(f"throughput: {run.requests / seconds:.0f} req/s")
    print(f"latency: p50 {run.p50:.1f} ms, p99 {run.p99:.1f} ms, max {run.most:.1f} ms")
    print(
        f"event loop lag: p50 <= {run.lag[0]:g} ms, p99 <= {run.lag[1]:g} ms, worst <= "
        f"{run.lag[2]:g} ms; during the warm-up, worst <= {run.lag_warming:g} ms"
    )


def loop_lag(base: str) -> dict[float, float]:
    """The service's loop-lag histogram now: cumulative count per bucket bound (seconds)."""
    with urllib.request.urlopen(base + PREFIX + "metrics", timeout=10) as response:
        text = response.read().decode()
    buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name == "remoteapp_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[float(sample.labels["le"])] = sample.value
    return buckets


if __name__ == "__main__":
    main()
