"""The admin listings on a large realm: 1,000,000 audit events, 10,000 users, 50,000 grants.

Fills a SQLite file (and, with --postgres, a throw-away PostgreSQL cluster) through the event
store's batched insert and bulk inserts of the catalogue, then asks the admin endpoints through
the real aiohttp application (production wiring, in-memory engine and hub) one request at a
time, and prints p50 and p99 per endpoint. No assertion: the figures go in docs/benchmarks.md.

The event listings are asked twice, request by request in turn, of two applications on the
same database: one whose store counts every match (``total`` exact however many match, as the
listing did before its count was bounded) and the production one (counting stops
``COUNT_AHEAD`` events past the page), so that both columns see the same load.
``--events`` measures the event listings only.

    .venv/bin/python bench/admin_lists.py [EVENTS] [USERS] [GRANTS] [--postgres] [--events]
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
from remoteappmanager.domain.audit import (  # noqa: E402
    AuditAction,
    EventPage,
    EventQuery,
    NewEvent,
)
from remoteappmanager.ports.audit import EventStore  # noqa: E402
from remoteappmanager.services.audit import AuditTrail  # noqa: E402
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


# Past any trail's size: the count goes over every match.
EVERY_MATCH = 2**60


class EveryMatchCountedOrNot:
    """An event store whose listings count every match while ``every_match`` is set, as they
    did before the bound, and up to the bound otherwise."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.every_match = False

    async def append(self, events: list[NewEvent]) -> None:
        await self._store.append(events)

    async def query(self, query: EventQuery) -> EventPage:
        if self.every_match:
            query = dataclasses.replace(query, count_ahead=EVERY_MATCH)
        return await self._store.query(query)

    async def prune(self, before: datetime, limit: int) -> int:
        return await self._store.prune(before, limit)


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


Result = tuple[str, float, float, int]


async def measure(
    url: str, workdir: Path, users: int, events_only: bool
) -> tuple[list[Result], list[tuple[str, Result, Result]]]:
    """The other listings' figures, and the event listings' before and after the bound."""
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
    events_database = SqlDatabase(url)
    store = EveryMatchCountedOrNot(events_database.events())
    deps = dataclasses.replace(deps, audit=AuditTrail(store))
    headers = {"Authorization": f"token {hub.issue_token('root')}"}
    middle = f"user{users // 2:06d}"
    since = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    event_cases = [
        ("events/ (first page)", "events/", {}),
        ("events/ ?limit=50 (admin page)", "events/", {"limit": "50"}),
        ("events/ ?limit=1000", "events/", {"limit": "1000"}),
        ("events/ ?offset=100000", "events/", {"offset": "100000"}),
        ("events/ ?actor=one user", "events/", {"actor": middle}),
        ("events/ ?action=grant", "events/", {"action": "grant"}),
        ("events/ ?since=30 days", "events/", {"since": since}),
        ("events/ ?format=csv&limit=1000", "events/", {"format": "csv", "limit": "1000"}),
    ]
    cases = [
        ("users/ (every one)", "users/", {}),
        ("users/ ?limit=50&offset=5000", "users/", {"limit": "50", "offset": "5000"}),
        ("users/ ?name=part&limit=50", "users/", {"name": middle[:-1], "limit": "50"}),
        ("accounting/ ?limit=100&offset=40000", "accounting/", {"limit": "100", "offset": "40000"}),
        ("accounting/ ?filter=one user", "accounting/", {"filter": f'{{"user_id": {users // 2}}}'}),
        ("containers/ ?limit=50", "containers/", {"limit": "50"}),
        ("stats/", "stats/", {}),
    ]

    async def timed(client: TestClient[Any, Any], name: str, path: str, params: Any) -> Any:
        began = time.perf_counter()
        async with client.get(ADMIN + path, params=params, headers=headers) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{name}: {answer.status} {body[:200]!r}")
        return (time.perf_counter() - began) * 1000, len(body)

    def result(name: str, timings: list[float], size: int) -> Result:
        return (name, statistics.median(timings), _percentile(timings, 0.99), size)

    results: list[Result] = []
    compared: list[tuple[str, Result, Result]] = []
    try:
        async with TestClient(TestServer(create_app(deps), host="127.0.0.1")) as client:
            for name, path, params in event_cases:
                was: list[float] = []
                now: list[float] = []
                sizes = [0, 0]
                for attempt in range(WARM_UP + REQUESTS):
                    store.every_match = True
                    was_ms, sizes[0] = await timed(client, name, path, params)
                    store.every_match = False
                    now_ms, sizes[1] = await timed(client, name, path, params)
                    if attempt >= WARM_UP:
                        was.append(was_ms)
                        now.append(now_ms)
                compared.append((name, result(name, was, sizes[0]), result(name, now, sizes[1])))
            for name, path, params in [] if events_only else cases:
                timings: list[float] = []
                size = 0
                for attempt in range(WARM_UP + REQUESTS):
                    elapsed, size = await timed(client, name, path, params)
                    if attempt >= WARM_UP:
                        timings.append(elapsed)
                results.append(result(name, timings, size))
    finally:
        await events_database.close()
    return results, compared


def report(
    label: str,
    fill_s: float,
    measured: tuple[list[Result], list[tuple[str, Result, Result]]],
) -> None:
    results, compared = measured
    print(f"\n{label} (filled in {fill_s:.0f} s); {REQUESTS} requests each, one at a time")
    print("event listings: every match counted (before) | counted up to the bound (after)")
    print(
        f"{'endpoint':34} {'p50 before':>11} {'p99 before':>11} {'p50 after':>10} {'p99 after':>10}"
    )
    for name, was, now in compared:
        print(f"{name:34} {was[1]:11.1f} {was[2]:11.1f} {now[1]:10.1f} {now[2]:10.1f}")
    if results:
        print(f"\n{'endpoint':34} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>10}")
    for name, p50, p99, size in results:
        print(f"{name:34} {p50:8.1f} {p99:8.1f} {size:10d}")


async def main(events: int, users: int, grants: int, postgres: bool, events_only: bool) -> None:
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
            await measure(url, workdir, users, events_only),
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
                    await measure(pg_url, workdir, users, events_only),
                )
            finally:
                cluster.stop()


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    numbers = [int(a) for a in arguments] + [1_000_000, 10_000, 50_000][len(arguments) :]
    asyncio.run(
        main(*numbers[:3], postgres="--postgres" in sys.argv, events_only="--events" in sys.argv)
    )
