"""Launch overhead and 50 concurrent starts on Docker Swarm (REMOTEAPP_ENGINE=swarm).

Usage: .venv/bin/python bench/swarm_launch.py [REPETITIONS] [USERS] [PROBE_MAX_INTERVAL]
       (default 10, 50 and the readiness probe's own longest interval)

The engine is made a single-node swarm (advertised on 127.0.0.1) for the run and left
afterwards (``docker_gwbridge`` removed too); an attachable overlay network is created for
it. Application tasks are reachable only on that overlay, so the measuring half of this
script runs in a container on it (the service image, this checkout mounted), with its own
configurable-http-proxy on the container's 127.0.0.1.

1. Launch overhead, alternating: ``Sessions.start`` on ``SwarmRuntime`` until the application
   answers 200 through the proxy, against the same steps by hand with the Docker API:
   service create (same image id, same network, dnsrr, no restart) -> update to one
   replica -> poll the task every 20 ms until it runs -> poll the application on the task's
   overlay address every 20 ms -> one POST to the proxy -> served. Reported: medians and the
   median of the per-pair ratios (target <= 1.10).
2. USERS users start at the same moment, then all stop. Reported: failures, wall times,
   and leaks: swarm services and containers of the realm, proxy routes (target 0 and 0).

Every session reserves 32 MiB and no CPU: with the default limits (2 CPUs, 4 GiB, also
reserved on a swarm) a 2-core node holds a single session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE_IMAGE = "remoteapp-e2e/service:latest"
CHECKOUT = "/opt/remoteapp-checkout"
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"
MEMORY_MB = 32


# ---------------------------------------------------------------------------- on the host
def host(repetitions: int, users: int, probe_max: str) -> int:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support.session_images import WEB_IMAGE, ensure_session_images
    from tests.support.swarm import single_node_swarm

    ensure_session_images()
    suffix = secrets.token_hex(4)
    network = f"remoteapp-bench-overlay-{suffix}"
    realm = f"bench-swarm-{suffix}"
    with single_node_swarm():
        created = _docker("network", "create", "--driver", "overlay", "--attachable", network)
        if created.returncode != 0:
            print(created.stderr, file=sys.stderr)
            return 1
        try:
            run = subprocess.run(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--name",
                    f"remoteapp-bench-swarm-{suffix}",
                    "--network",
                    network,
                    "--volume",
                    "/var/run/docker.sock:/var/run/docker.sock",
                    "--volume",
                    f"{REPO}:{CHECKOUT}:ro",
                    "--env",
                    f"PYTHONPATH={CHECKOUT}/src",
                    "--entrypoint",
                    "/opt/remoteapp/venv/bin/python",
                    SERVICE_IMAGE,
                    f"{CHECKOUT}/bench/swarm_launch.py",
                    "--inside",
                    str(repetitions),
                    str(users),
                    network,
                    realm,
                    WEB_IMAGE,
                    probe_max,
                ],
                check=False,
                timeout=3600,
            )
            return run.returncode
        finally:
            services = _docker("service", "ls", "-q", "--filter", f"label={REALM_LABEL}={realm}")
            if services.stdout.split():
                print(f"  (clean-up removed {len(services.stdout.split())} service(s))")
                _docker("service", "rm", *services.stdout.split())
            deadline = time.monotonic() + 60
            while _docker("network", "rm", network).returncode != 0:
                if time.monotonic() > deadline:
                    print(f"  (network {network} could not be removed)", file=sys.stderr)
                    break
                time.sleep(1)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=300, check=False
    )


# ---------------------------------------------------------------------------- on the overlay
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def inside(
    repetitions: int, users: int, network: str, realm: str, image: str, probe_max: str
) -> None:
    import logging

    import aiodocker
    import aiohttp
    import structlog

    from remoteappmanager.adapters.chp import ChpRouteTable
    from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
    from remoteappmanager.adapters.swarm import SwarmRuntime
    from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
    from remoteappmanager.domain.confinement import Confinement, ResourceLimits
    from remoteappmanager.domain.containers import RUNINFO_NAMESPACE, RUNINFO_REALM
    from remoteappmanager.domain.models import Application, Grant, Policy, User
    from remoteappmanager.domain.naming import new_url_id, urlpath
    from remoteappmanager.domain.sessions import AccessMode, Session
    from remoteappmanager.services.sessions import Sessions

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    token = secrets.token_hex(32)
    public, api = _free_port(), _free_port()
    chp = await asyncio.create_subprocess_exec(
        *[
            "configurable-http-proxy",
            "--ip",
            "127.0.0.1",
            "--port",
            str(public),
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            str(api),
            "--log-level",
            "warn",
        ],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": token},
    )
    public_url, api_url = f"http://127.0.0.1:{public}", f"http://127.0.0.1:{api}"
    limits = ResourceLimits(MEMORY_MB, None, 256)
    runtime = SwarmRuntime(None, network=network, start_timeout=300)
    routes = ChpRouteTable(api_url, token)
    probe = (
        AiohttpReadinessProbe(max_interval=float(probe_max))
        if probe_max
        else AiohttpReadinessProbe()
    )
    sessions = Sessions(
        runtime,
        routes,
        DirectoryWorkspaces(Path("/tmp/bench-workspaces")),
        LocalHostPaths(),
        probe,
        realm=realm,
        access=AccessMode.DIRECT,
        network_timeout=300,
        confinement=Confinement(limits=limits, network=None),
    )
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    docker = aiodocker.Docker()

    async def served(url: str, within: float = 120) -> None:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url, allow_redirects=False) as response:
                    await response.read()
                    if response.status == 200:
                        return
            await asyncio.sleep(0.005)
        raise TimeoutError(url)

    def grant(user: str) -> Grant:
        return Grant(secrets.token_hex(16), User(1, user), Application(1, image), Policy())

    async def by_sessions(user: str) -> float:
        began = time.perf_counter()
        session = await sessions.start(grant(user))
        await served(public_url + session.urlpath + "/")
        elapsed = time.perf_counter() - began
        await sessions.stop(user, session.url_id)
        return elapsed

    image_id = (await docker.images.inspect(image))["Id"]

    async def by_hand(user: str) -> float:
        url_id = new_url_id()
        path = urlpath(user, url_id)
        labels = {RUNINFO_NAMESPACE + "realm": realm}
        spec = {
            "Name": f"{realm}-hand-{url_id[:20]}",
            "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": image_id,
                    "Labels": labels,
                    "Env": [
                        f"JPY_USER={user}",
                        f"JPY_BASE_USER_URL=/user/{user}",
                        f"USER={user}",
                        f"URL_ID={url_id}",
                    ],
                    "Init": True,
                },
                "Resources": {
                    "Limits": {"MemoryBytes": MEMORY_MB << 20, "Pids": 256},
                    "Reservations": {"MemoryBytes": MEMORY_MB << 20},
                },
                "RestartPolicy": {"Condition": "none"},
                "Networks": [{"Target": network}],
            },
            "Mode": {"Replicated": {"Replicas": 0}},
            "EndpointSpec": {"Mode": "dnsrr"},
        }
        began = time.perf_counter()
        created = await docker._query_json("services/create", method="POST", data=json.dumps(spec))
        service_id = created["ID"]
        service = await docker.services.inspect(service_id)
        spec["Mode"] = {"Replicated": {"Replicas": 1}}
        await docker._query_json(
            f"services/{service_id}/update",
            method="POST",
            params={"version": str(service["Version"]["Index"])},
            data=json.dumps(spec),
        )
        address = None
        while address is None:
            for task in await docker.tasks.list(filters={"service": [service_id]}):
                if task["Status"]["State"] == "running":
                    attached = task["NetworksAttachments"][0]["Addresses"][0]
                    address = attached.split("/")[0]
            if address is None:
                await asyncio.sleep(0.02)
        target = f"http://{address}:8888"
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(target + path + "/", allow_redirects=False) as response:
                    if response.status < 500:
                        break
            await asyncio.sleep(0.02)
        async with http.post(
            f"{api_url}/api/routes{path}",
            json={"target": target},
            headers={"Authorization": f"token {token}"},
        ) as response:
            response.raise_for_status()
        await served(public_url + path + "/")
        elapsed = time.perf_counter() - began
        async with http.delete(
            f"{api_url}/api/routes{path}", headers={"Authorization": f"token {token}"}
        ):
            pass
        await runtime.remove(service_id)
        return elapsed

    async def timed_start(user: str) -> tuple[Session, float]:
        began = time.perf_counter()
        session = await sessions.start(grant(user))
        return session, time.perf_counter() - began

    try:
        print(f"{socket.gethostname()} on {os.cpu_count()} cores, swarm of one node")
        if probe_max:
            print(f"readiness probe: polls at most {probe_max} s apart")
        # One untimed round each: image metadata cache, the network's first task, pools.
        await by_sessions("warmup")
        await by_hand("warmup")
        ours: list[float] = []
        hand: list[float] = []
        ratios: list[float] = []
        for i in range(repetitions):
            user = f"user{secrets.token_hex(3)}"
            if i % 2 == 0:
                a = await by_sessions(user)
                b = await by_hand(user)
            else:
                b = await by_hand(user)
                a = await by_sessions(user)
            ours.append(a)
            hand.append(b)
            ratios.append(a / b)
            print(f"  {i + 1:3d}: sessions {a * 1000:7.1f} ms   by hand {b * 1000:7.1f} ms")
        print(f"swarm launch overhead, {repetitions} alternating repetitions")
        print(f"  median Sessions.start -> served : {statistics.median(ours) * 1000:7.1f} ms")
        print(f"  median by hand        -> served : {statistics.median(hand) * 1000:7.1f} ms")
        print(f"  median ratio (target <= 1.10)   : {statistics.median(ratios):7.3f}")
        print(
            "  ratio of medians                : "
            f"{statistics.median(ours) / statistics.median(hand):7.3f}"
        )

        began = time.perf_counter()
        results = await asyncio.gather(
            *(timed_start(f"user{i:03d}") for i in range(users)), return_exceptions=True
        )
        start_wall = time.perf_counter() - began
        started = [r for r in results if isinstance(r, tuple)]
        failures = Counter(str(r)[:200] for r in results if isinstance(r, BaseException))
        answered = 0
        for session, _ in started:
            async with http.get(public_url + session.urlpath + "/") as response:
                answered += response.status == 200
        began = time.perf_counter()
        stops = await asyncio.gather(
            *(sessions.stop(s.user, s.url_id) for s, _ in started), return_exceptions=True
        )
        stop_wall = time.perf_counter() - began
        stop_failures = Counter(str(r)[:200] for r in stops if isinstance(r, BaseException))
        leaked_services = len(await runtime.list({RUNINFO_REALM: realm}))
        # A stop returns once the swarm has let the task go; the node removes its container
        # a moment later. Waited for (bounded), and said how long it took.
        began = time.perf_counter()
        while True:
            leaked_containers = len(
                await docker.containers.list(
                    all=True, filters={"label": [f"{RUNINFO_NAMESPACE}realm={realm}"]}
                )
            )
            if not leaked_containers or time.perf_counter() - began > 60:
                break
            await asyncio.sleep(0.2)
        settled = time.perf_counter() - began
        async with http.get(
            f"{api_url}/api/routes", headers={"Authorization": f"token {token}"}
        ) as response:
            leaked_routes = len(await response.json())
        latencies = [elapsed for _, elapsed in started]
        print(f"{users} concurrent starts by {users} users on the swarm")
        print(
            f"  started       : {len(started)}/{users} in {start_wall:.1f} s wall"
            + (
                f" (median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s)"
                if latencies
                else ""
            )
        )
        print(f"  served 200    : {answered}/{len(started)}")
        print(f"  failed starts : {sum(failures.values())} {dict(failures) or ''}")
        print(
            f"  stopped       : {len(started) - sum(stop_failures.values())} in {stop_wall:.1f} s"
        )
        print(f"  failed stops  : {sum(stop_failures.values())} {dict(stop_failures) or ''}")
        print(
            f"  leaked        : {leaked_services} services, {leaked_containers} containers, "
            f"{leaked_routes} routes (containers gone {settled:.1f} s after the last stop)"
        )
    finally:
        await http.close()
        await probe.close()
        await routes.close()
        await runtime.close()
        await docker.close()
        chp.terminate()
        await chp.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        reps, count, net, realm_name, app_image, longest = sys.argv[2:8]
        asyncio.run(inside(int(reps), int(count), net, realm_name, app_image, longest))
    else:
        sys.exit(
            host(
                int(sys.argv[1]) if len(sys.argv) > 1 else 10,
                int(sys.argv[2]) if len(sys.argv) > 2 else 50,
                sys.argv[3] if len(sys.argv) > 3 else "",
            )
        )
