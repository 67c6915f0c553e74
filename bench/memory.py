"""Memory: the service's RSS with N signed-in users, each with one running session, against
the original design's one Python process per user.

The service runs in a process of its own, wired by ``bootstrap.build`` as in
production (SQLite catalogue, login-session store, identity cache, sessions, listing caches,
the gate), with in-memory stand-ins for the hub, the proxy and the Docker engine (the
containers are fakes: their memory is the engine's, not ours). In that process every user
signs in through the browser flow (page → authorize → ``oauth_callback``), loads the user page
(which mints the XSRF token), starts its application through ``POST api/v1/containers/`` and
lists ``api/v1/applications/``. The clients live in the same process and are closed after each
user, so the figure is, if anything, a little high.

The comparison: one Python process of the original's per-user shape (tornado's web server,
JupyterHub's service-auth module, SQLAlchemy, requests and traitlets imported, one tornado
application listening), measured the same way (VmRSS), times N.

    .venv/bin/python bench/memory.py [USERS ...] [--profile DIR]   (default 1000 10000 50000)

Each size runs in a fresh service process; the table gives the per-user cost and the service's
RSS for each, and the cost's ratio to the smallest size's (flat costs give ratios near 1).
``--profile DIR`` runs the signed-in loop under cProfile and writes the 30 most expensive
functions (own time, then cumulative) to ``DIR/memory-<USERS>.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import multiprocessing
import multiprocessing.connection
import os
import pstats
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from fakeservice import serving  # noqa: E402
from tests.support.services import free_port  # noqa: E402

from remoteappmanager import bootstrap  # noqa: E402
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider  # noqa: E402
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime  # noqa: E402
from remoteappmanager.domain.models import Policy  # noqa: E402
from remoteappmanager.services import catalogue  # noqa: E402
from remoteappmanager.settings import Settings  # noqa: E402
from remoteappmanager.web.logs import configure_logging  # noqa: E402

PREFIX = "/services/remoteapp/"
IMAGE = "bench/desktop:latest"
NS = "eu.simphony-project.docker."
TARGET_MB = 250.0
LARGE_TARGET_MB = 600.0
SEED_BATCH = 1000
XSRF_META = re.compile(r'<meta name="xsrf-token" content="([^"]+)"')

# What one per-user process of the original design had loaded and running.
PER_USER_PROCESS = """
import os, tornado.web, tornado.httpserver, tornado.ioloop, sqlalchemy.orm, requests, traitlets
import jupyterhub.services.auth
app = tornado.web.Application([(r"/", tornado.web.RequestHandler)])
server = tornado.httpserver.HTTPServer(app)
server.listen(0, "127.0.0.1")
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
"""


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def user_name(n: int) -> str:
    return f"scientist{n:04d}"


async def seed(database_url: str, users: int) -> None:
    await bootstrap.upgrade_database(database_url)
    async with bootstrap.build_database(database_url) as database:
        uow = database.unit_of_work
        application = await catalogue.create_application(uow, IMAGE)
        # Many users per transaction: one commit per user would make seeding 50,000 users
        # take longer than the measurement.
        for first in range(0, users, SEED_BATCH):
            async with uow() as work:
                for n in range(first, min(users, first + SEED_BATCH)):
                    user = await work.users.add(user_name(n))
                    await work.grants.grant(user, application, Policy(allow_home=True))
                await work.commit()


async def sign_in_and_start(base: str, identity: InMemoryIdentityProvider, name: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar) as client:
        async with client.get(PREFIX, allow_redirects=False) as response:
            location = response.headers["Location"]
        query = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
        code = identity.approve(name, query["code_challenge"])
        params = {"code": code, "state": query["state"]}
        async with client.get(PREFIX + "oauth_callback", params=params, allow_redirects=False):
            pass
        async with client.get(PREFIX) as response:
            match = XSRF_META.search(await response.text())
            assert match, "the user page carries its XSRF token"
        async with client.get(PREFIX + "api/v1/applications/") as response:
            mapping_id = (await response.json())["identifiers"][0]
        async with client.post(
            PREFIX + "api/v1/containers/",
            json={"mapping_id": mapping_id},
            headers={"X-XSRFToken": match.group(1), "Origin": base},
        ) as response:
            assert response.status == 201, await response.text()
        async with client.get(PREFIX + "api/v1/applications/") as response:
            listed = await response.json()
            assert listed["items"][mapping_id]["container"] is not None


async def measure(
    conn: multiprocessing.connection.Connection, users: int, profile: str | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="remoteapp-memory-") as tmp:
        database_url = f"sqlite+aiosqlite:///{tmp}/catalogue.db"
        await seed(database_url, users)
        port = free_port()
        settings = Settings(
            database_url=database_url,
            configproxy_auth_token="bench",
            jupyterhub_api_token="bench",
            realm=f"bench-{secrets.token_hex(4)}",
            jupyterhub_service_prefix=PREFIX,
            jupyterhub_service_url=f"http://127.0.0.1:{port}",
            gate_url=f"http://127.0.0.1:{free_port()}",
            workspace_root=Path(tmp) / "workspaces",
            log_format="json",
            log_level="WARNING",
        )
        configure_logging(settings.log_format, settings.log_level)
        identity = InMemoryIdentityProvider()
        runtime = InMemoryRuntime()
        runtime.add_image(
            IMAGE,
            {NS + "ui_name": "Desktop", NS + "type": "vncapp", NS + "env.x11-width": ""},
        )
        async with serving(settings, identity, runtime, port) as deps:
            base = f"http://127.0.0.1:{port}"
            for n in range(users):
                identity.add_user(user_name(n))
            gc.collect()
            empty = rss_kib()
            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            for n in range(users):
                await sign_in_and_start(base, identity, user_name(n))
            if profiler is not None:
                profiler.disable()
            took = time.perf_counter() - started
            if profiler is not None and profile:
                write_profile(profiler, Path(profile) / f"memory-{users}.txt", users, took)
            assert deps.sessions is not None
            running = len(await deps.sessions.list_all())
            gc.collect()
            full = rss_kib()
            conn.send((empty, full, running, took))


def write_profile(profiler: cProfile.Profile, path: Path, users: int, took: float) -> None:
    out = io.StringIO()
    out.write(f"{users} users: sign-in + page + start + list, {took / users * 1000:.1f} ms/user\n")
    for order in ("tottime", "cumulative"):
        out.write(f"\n=== top 30 by {order} ===\n")
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())


def service(conn: multiprocessing.connection.Connection, users: int, profile: str | None) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(measure(conn, users, profile))


def per_user_process_kib() -> int:
    result = subprocess.run(
        [sys.executable, "-c", PER_USER_PROCESS],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return int(result.stdout.strip())


def run(users: int, profile: str | None) -> tuple[int, int, int, float]:
    parent, child = multiprocessing.Pipe()
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=service, args=(child, users, profile))
    process.start()
    empty, full, running, took = parent.recv()
    process.join()
    return empty, full, running, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("users", nargs="*", type=int, default=[1000, 10000, 50000])
    parser.add_argument("--profile", metavar="DIR", help="write cProfile summaries here")
    args = parser.parse_args()
    sizes = sorted(set(args.users))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    results: list[tuple[int, int, int, int, float]] = []
    for users in sizes:
        empty, full, running, took = run(users, args.profile)
        results.append((users, empty, full, running, took))
        print(
            f"  {users} users: {took / users * 1000:.2f} ms/user, RSS {full / 1024:.1f} MB "
            f"({running} sessions running)",
            flush=True,
        )
    base_cost = results[0][4] / results[0][0]
    print()
    print("| users | sessions | ms per user | ratio to smallest | RSS (MB) | KiB per user |")
    print("|---:|---:|---:|---:|---:|---:|")
    for users, empty, full, running, took in results:
        cost = took / users
        print(
            f"| {users:,} | {running:,} | {cost * 1000:.2f} | {cost / base_cost:.2f}x "
            f"| {full / 1024:.1f} | {(full - empty) / users:.1f} |"
        )
    largest_users, _, largest_full, _, _ = results[-1]
    target = TARGET_MB if largest_users <= 1000 else LARGE_TARGET_MB
    verdict = "met" if largest_full / 1024 <= target else "NOT met"
    print(f"service RSS with {largest_users:,} users: target <= {target:.0f} MB: {verdict}")
    one = per_user_process_kib()
    one_mb = one / 1024
    print(f"one per-user process of the original design: {one_mb:.1f} MB")
    for users, _, full, _, _ in results:
        print(
            f"original design for {users:,} users: {one_mb * users / 1024:.1f} GB; "
            f"ratio original / ours = {one * users / full:.0f}x"
        )


if __name__ == "__main__":
    main()
