"""The admin listings on a large realm: 1,000,000 audit events, 10,000 users, 50,000 grants.

Fills a SQLite file (and, with --postgres, a throw-away PostgreSQL cluster) through the event
store's batched insert and bulk inserts of the catalogue, then asks the admin endpoints through
the real aiohttp application (production wiring, in-memory engine and hub) one request at a
time, and prints p50 and p99 per endpoint. No assertion: the figures go in docs/benchmarks.md.

    .venv/bin/python bench/admin_lists.py [EVENTS] [USERS] [GRANTS] [--postgres]
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import logging  # noqa: E402

import structlog  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from remoteappmanager import bootstrap  # noqa: E402
from remoteappmanager.adapters.db.models import (  # noqa: E402
    AccountingRow,
    ApplicationRow,
    PolicyRow,
    UserRow,
)
from remoteappmanager.adapters.db.repositories import SqlDatabase  # noqa: E402
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider  # noqa: E402
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe  # noqa: E402
from remoteappmanager.adapters.memory_runtime import (  # noqa: E402
    InMemoryRouteTable,
    InMemoryRuntime,
)
from remoteappmanager.adapters.memory_workspaces import (  # noqa: E402
    InMemoryHostPaths,
    InMemoryWorkspaces,
)
from remoteappmanager.domain.audit import AuditAction, NewEvent  # noqa: E402
from remoteappmanager.settings import Settings  # noqa: E402
from remoteappmanager.web.app import create_app  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

PREFIX = "/services/remoteapp/"
ADMIN = PREFIX + "api/v1/admin/"
EVENT_BATCH = 20_000
ROW_BATCH = 10_000
APPLICATIONS = 50
REQUESTS = 60
WARM_UP = 3
ACTIONS = list(AuditAction)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def fill(url: str, events: int, users: int, grants: int) -> None:
    database = SqlDatabase(url)
    try:
        async with database.engine.begin() as connection:
            for start in range(1, users + 1, ROW_BATCH):
                rows = [
                    {"id": n, "name": f"user{n:06d}"}
                    for n in range(start, min(start + ROW_BATCH, users + 1))
                ]
                await connection.execute(insert(UserRow), rows)
            await connection.execute(
                insert(ApplicationRow),
                [{"id": n, "image": f"bench/app{n}:1"} for n in range(1, APPLICATIONS + 1)],
            )
            await connection.execute(
                insert(PolicyRow),
                [
                    {"id": 1, "allow_home": True, "allow_view": False},
                    {"id": 2, "allow_home": False, "allow_view": True},
                ],
            )
            pairs = (
                (1 + n % users, 1 + (n // users) % APPLICATIONS, 1 + (n // (users * APPLICATIONS)))
                for n in range(grants)
            )
            batch: list[dict[str, object]] = []
            for user_id, application_id, policy_id in pairs:
                batch.append(
                    {
                        "id": secrets.token_hex(16),
                        "user_id": user_id,
                        "application_id": application_id,
                        "application_policy_id": policy_id,
                    }
                )
                if len(batch) == ROW_BATCH:
                    await connection.execute(insert(AccountingRow), batch)
                    batch = []
            if batch:
                await connection.execute(insert(AccountingRow), batch)
        store = database.events()
        now = datetime.now(UTC)
        # Spread over the retention year, oldest first, as a service would have written them.
        step = timedelta(days=360) / max(events, 1)
        for start in range(0, events, EVENT_BATCH):
            await store.append(
                [
                    NewEvent.of(
                        now - (events - n) * step,
                        f"user{1 + n % users:06d}",
                        ACTIONS[n % len(ACTIONS)],
                        secrets.token_hex(8),
                        {"image": f"bench/app{1 + n % APPLICATIONS}:1"},
                    )
                    for n in range(start, min(start + EVENT_BATCH, events))
                ]
            )
    finally:
        await database.close()


async def measure(url: str, workdir: Path, users: int) -> list[tuple[str, float, float, int]]:
    hub = InMemoryIdentityProvider()
    hub.add_user("root", admin=True)
    settings = Settings(
        database_url=url,
        configproxy_auth_token="proxy-token-" + "0" * 32,
        jupyterhub_api_token="service-token-" + "0" * 32,
        jupyterhub_service_prefix=PREFIX,
        jupyterhub_base_url="/",
        gate_url="http://127.0.0.1:0",
        workspace_root=workdir / "workspaces",
    )
    deps = bootstrap.build(
        settings,
        identity=hub,
        runtime=InMemoryRuntime(),
        routes=InMemoryRouteTable(),
        probe=InMemoryReadinessProbe(),
        workspaces=InMemoryWorkspaces(),
        host_paths=InMemoryHostPaths(set()),
    )
    headers = {"Authorization": f"token {hub.issue_token('root')}"}
    middle = f"user{users // 2:06d}"
    since = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    cases = [
        ("events/ (first page)", "events/", {}),
        ("events/ ?limit=1000", "events/", {"limit": "1000"}),
        ("events/ ?offset=100000", "events/", {"offset": "100000"}),
        ("events/ ?actor=one user", "events/", {"actor": middle}),
        ("events/ ?action=grant", "events/", {"action": "grant"}),
        ("events/ ?since=30 days", "events/", {"since": since}),
        ("events/ ?format=csv&limit=1000", "events/", {"format": "csv", "limit": "1000"}),
        ("users/ (every one)", "users/", {}),
        ("users/ ?limit=50&offset=5000", "users/", {"limit": "50", "offset": "5000"}),
        ("users/ ?name=part&limit=50", "users/", {"name": middle[:-1], "limit": "50"}),
        ("accounting/ ?limit=100&offset=40000", "accounting/", {"limit": "100", "offset": "40000"}),
        ("accounting/ ?filter=one user", "accounting/", {"filter": f'{{"user_id": {users // 2}}}'}),
        ("containers/ ?limit=50", "containers/", {"limit": "50"}),
        ("stats/", "stats/", {}),
    ]
    results = []
    async with TestClient(TestServer(create_app(deps), host="127.0.0.1")) as client:
        for name, path, params in cases:
            timings: list[float] = []
            size = 0
            for attempt in range(WARM_UP + REQUESTS):
                began = time.perf_counter()
                async with client.get(ADMIN + path, params=params, headers=headers) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{name}: {answer.status} {body[:200]!r}")
                if attempt >= WARM_UP:
                    timings.append((time.perf_counter() - began) * 1000)
                size = len(body)
            results.append((name, statistics.median(timings), _percentile(timings, 0.99), size))
    return results


def report(label: str, fill_s: float, results: list[tuple[str, float, float, int]]) -> None:
    print(f"\n{label} (filled in {fill_s:.0f} s); {REQUESTS} requests each, one at a time")
    print(f"{'endpoint':34} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>10}")
    for name, p50, p99, size in results:
        print(f"{name:34} {p50:8.1f} {p99:8.1f} {size:10d}")


async def main(events: int, users: int, grants: int, postgres: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="admin-lists-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        await bootstrap.upgrade_database(url)
        began = time.perf_counter()
        await fill(url, events, users, grants)
        filled = time.perf_counter() - began
        report(
            f"SQLite: {events:,} events, {users:,} users, {grants:,} grants",
            filled,
            await measure(url, workdir, users),
        )
        if postgres:
            from tests.support.services import start_postgres

            cluster = start_postgres()
            try:
                pg_url = cluster.create_database("bench")
                await bootstrap.upgrade_database(pg_url)
                began = time.perf_counter()
                await fill(pg_url, events, users, grants)
                filled = time.perf_counter() - began
                report(
                    f"PostgreSQL: {events:,} events, {users:,} users, {grants:,} grants",
                    filled,
                    await measure(pg_url, workdir, users),
                )
            finally:
                cluster.stop()


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    numbers = [int(a) for a in arguments] + [1_000_000, 10_000, 50_000][len(arguments) :]
    asyncio.run(main(*numbers[:3], postgres="--postgres" in sys.argv))
