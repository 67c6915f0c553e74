"""Throughput of `GET {svc}api/v1/applications/` with two service replicas against one.

The replicas are service processes wired by ``bootstrap.build`` as in production,
sharing one PostgreSQL database (a throwaway cluster), behind HAProxy (Debian's, round
robin, the configuration of ``tests/support/replicas.py``). As in ``api_throughput.py`` the
hub, the proxy and the Docker engine are stand-ins inside each process (the engine answers
after a realistic delay); every replica knows the same users' API tokens, and half the users
have an application running in each replica's stand-in engine. 200 users with 5 grants each
send back to back through ``wrk`` (one thread). One run measures, side by side:

1. one replica behind HAProxy,
2. two replicas behind HAProxy,

alternated over two rounds, after a warm-up each, and prints the throughputs, their ratio per
round, and the replicas' CPU time per request (from ``/proc``): when it stays the same with
two replicas, what bounds the ratio is the CPU the machine has left, not the replicas.

    .venv/bin/python bench/replicas.py [USERS] [SECONDS]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from api_throughput import (  # noqa: E402
    ICON,
    IMAGES,
    NS,
    PREFIX,
    SlowRuntime,
    seed,
    user_name,
    wrk,
)
from fakeservice import serving  # noqa: E402
from tests.support.replicas import haproxy_config, require_haproxy  # noqa: E402
from tests.support.services import free_port, start_postgres, wait_for_port  # noqa: E402
from tools import debian_tool  # noqa: E402

from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider  # noqa: E402
from remoteappmanager.settings import Settings  # noqa: E402
from remoteappmanager.web.logs import configure_logging  # noqa: E402

WARM_UP = 3.0
ROUNDS = 2


class KnownTokens(InMemoryIdentityProvider):
    """The stand-in hub, told the tokens another replica's stand-in issued (the real hub is
    one for every replica)."""

    def accept(self, token: str, name: str) -> None:
        self._tokens[token] = (name, self.default_scopes(name))


def serve(
    conn: multiprocessing.connection.Connection,
    database_url: str,
    users: int,
    tokens: list[str] | None,
    realm: str,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    asyncio.run(_serve(conn, database_url, users, tokens, realm))


async def _serve(
    conn: multiprocessing.connection.Connection,
    database_url: str,
    users: int,
    tokens: list[str] | None,
    realm: str,
) -> None:
    port = free_port()
    settings = Settings(
        database_url=database_url,
        configproxy_auth_token="bench",
        jupyterhub_api_token="bench",
        realm=realm,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_service_url=f"http://127.0.0.1:{port}",
        gate_url=f"http://127.0.0.1:{free_port()}",
        log_format="json",
    )
    configure_logging(settings.log_format, settings.log_level)
    identity = KnownTokens()
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
        assert deps.applications is not None
        assert deps.sessions is not None
        issued = []
        for n in range(users):
            identity.add_user(user_name(n))
            if tokens is None:
                issued.append(identity.issue_token(user_name(n)))
            else:
                identity.accept(tokens[n], user_name(n))
            if n % 2 == 0:
                first = (await deps.applications.list_for(user_name(n)))[0]
                await deps.sessions.start_for(user_name(n), first.mapping_id)
        conn.send((port, issued or tokens))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)


def start_replica(
    database_url: str, users: int, tokens: list[str] | None, realm: str
) -> tuple[multiprocessing.Process, multiprocessing.connection.Connection, int, list[str]]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(child, database_url, users, tokens, realm)
    )
    process.start()
    port, known = parent.recv()
    return process, parent, port, known


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (Linux ``/proc``)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(
    haproxy: str,
    tmp: Path,
    ports: list[int],
    tokens: list[str],
    users: int,
    seconds: float,
    pids: list[int],
) -> tuple[int, int, float, float, float, float]:
    """(requests, errors, p50, p99, max, replica CPU seconds per 1,000 requests)."""
    front = free_port()
    config = tmp / f"haproxy-{len(ports)}.cfg"
    # The gates' frontend and backend are not used here; any free ports do.
    config.write_text(
        haproxy_config(
            service_port=front,
            gate_port=free_port(),
            replicas=[(port, port) for port in ports],
        )
    )
    process = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(front, timeout=10, process=process)  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{front}"
        wrk(base, tokens, WARM_UP, users)
        before = cpu_seconds(pids)
        requests, errors, p50, p99, most = wrk(base, tokens, seconds, users)
        used = cpu_seconds(pids) - before
        return requests, errors, p50, p99, most, used / max(requests, 1) * 1000
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    haproxy = require_haproxy()
    if not debian_tool("wrk", "wrk"):
        sys.exit("this benchmark needs wrk")
    load = os.getloadavg()[0]
    cluster = start_postgres()
    replicas = []
    try:
        database_url = cluster.create_database(f"bench_{secrets.token_hex(4)}")
        print(f"seeding {users} users x {len(IMAGES)} grants in PostgreSQL ...", flush=True)
        asyncio.run(seed(database_url, users))
        realm = f"bench-{secrets.token_hex(4)}"
        first = start_replica(database_url, users, None, realm)
        replicas.append(first)
        tokens = first[3]
        replicas.append(start_replica(database_url, users, tokens, realm))
        ports = [replica[2] for replica in replicas]
        pids = [replica[0].pid or 0 for replica in replicas]
        runs: dict[int, list[tuple[int, int, float, float, float, float]]] = {1: [], 2: []}
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
            # Alternated, so that the machine's other load weighs on both alike.
            for _round in range(ROUNDS):
                for count in (1, 2):
                    runs[count].append(
                        measure(haproxy, Path(tmp), ports[:count], tokens, users, seconds, pids)
                    )
    finally:
        for process, conn, _port, _tokens in replicas:
            conn.send("stop")
            process.join(15)
            if process.is_alive():
                process.kill()
        cluster.stop()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"load: wrk, 1 thread, {users} connections, {seconds:g} s after {WARM_UP:g} s warm-up")
    print(f"load average before the runs: {load:.1f}")
    header = f"{'round':>5} {'replicas':>8} {'req/s':>8} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + f" {'CPU ms/req':>10}")
    for index in range(ROUNDS):
        for count in (1, 2):
            requests, errors, p50, p99, _most, cpu = runs[count][index]
            print(
                f"{index + 1:>5} {count:>8} {requests / seconds:>8.0f} {errors:>7} {p50:>8.1f}"
                f" {p99:>8.1f} {cpu:>10.2f}"
            )
    ratios = [two[0] / max(one[0], 1) for one, two in zip(runs[1], runs[2], strict=True)]
    print("two replicas / one, per round: " + ", ".join(f"{ratio:.2f}x" for ratio in ratios))


if __name__ == "__main__":
    main()
