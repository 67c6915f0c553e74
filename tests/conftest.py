"""Fixtures shared by every tier: real services started on demand, one per test session.
A test module's ``EVENT_LOOPS`` names the event loops its tests run on (default asyncio)."""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.services import (
    PostgresCluster,
    Proxy,
    ServiceMissing,
    docker_socket_problem,
    running_proxy,
    skip_or_fail,
    start_postgres,
)
from tests.support.swarm import single_node_swarm

_database_names = itertools.count()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    names = getattr(getattr(item, "module", None), "EVENT_LOOPS", ("asyncio",))
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    for name in names:
        if name == "asyncio":
            factories[name] = asyncio.new_event_loop
        else:
            # The service runs on uvloop when it is installed; so must its tests.
            factories[name] = importlib.import_module(name).new_event_loop
    return factories


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole session (skipped locally if absent)."""
    try:
        cluster = start_postgres()
    except ServiceMissing as exc:
        skip_or_fail(f"PostgreSQL: {exc}")
        raise AssertionError("unreachable") from exc
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to a fresh, empty database: each test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'remoteappmanager.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(
        f"test_{next(_database_names)}_{tmp_path.name[-8:].lower()}".replace("-", "_")
    )


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster, tmp_path: Path) -> str:
    """A fresh empty PostgreSQL database (for tests that are about PostgreSQL only)."""
    return postgres_cluster.create_database(f"pg_{next(_database_names)}")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Require a reachable Docker engine (skipped locally if absent, an error in CI)."""
    problem = docker_socket_problem()
    if problem:
        skip_or_fail(problem)


@pytest.fixture(scope="session")
def swarm_engine(docker_engine: None) -> Iterator[str]:
    """The engine as a single-node swarm for the rest of the session; left at its end."""
    try:
        with single_node_swarm() as node:
            yield node
    except ServiceMissing as exc:
        skip_or_fail(f"Docker Swarm: {exc}")


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A real configurable-http-proxy on free 127.0.0.1 ports, stopped after the test."""
    try:
        with running_proxy() as running:
            yield running
    except ServiceMissing as exc:
        skip_or_fail(f"configurable-http-proxy: {exc}")
