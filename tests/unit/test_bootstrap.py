"""``bootstrap.build``: overrides replace ports, never the wiring of the services."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_shared_state import (
    InMemoryLeaderElection,
    InMemorySharedState,
)
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import StopReason
from remoteappmanager.services import catalogue
from remoteappmanager.settings import SettingsError
from remoteappmanager.web.keys import GATE
from tests.support.webapp import World, make_app, make_settings

IMAGE = "remoteapp-test/built:latest"


async def _unavailable() -> None:
    raise RuntimeError("down")


def test_the_proxy_token_is_required_when_no_route_table_is_given() -> None:
    settings = make_settings(configproxy_auth_token=None)
    with pytest.raises(SettingsError, match=r"^CONFIGPROXY_AUTH_TOKEN: required"):
        bootstrap.build(settings, identity=World().hub)


async def test_a_sql_database_shares_login_sessions_and_the_lead(tmp_path: Path) -> None:
    world = World()
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalogue.db'}"
    await bootstrap.upgrade_database(url)
    built = bootstrap.build(
        make_settings(database_url=url, configproxy_auth_token="p" * 32),
        identity=world.hub,
        runtime=world.runtime,
        routes=world.routes,
        probe=world.probe,
        workspaces=world.workspaces,
        host_paths=world.host_paths,
    )
    async with contextlib.AsyncExitStack() as opened:
        for resource in built.resources:  # opened and closed as the application does
            await opened.enter_async_context(resource())
        assert built.login_sessions.persistent
        assert await built.leadership.campaign_once()


async def test_another_database_keeps_login_sessions_in_this_process() -> None:
    built = World().build(make_settings())
    assert not built.login_sessions.persistent
    assert await built.leadership.campaign_once()  # alone, it leads


async def test_a_shared_election_is_used_as_given() -> None:
    state = InMemorySharedState()
    first = World().build(make_settings(), election=InMemoryLeaderElection(state))
    second = World().build(make_settings(), election=InMemoryLeaderElection(state))
    assert await first.leadership.campaign_once()
    assert not await second.leadership.campaign_once()


def test_named_health_checks_replace_those_of_the_same_name_only() -> None:
    built = World().build(make_settings(), health_checks={"proxy": _unavailable})
    assert set(built.health_checks) == {"database", "docker", "proxy"}
    assert built.health_checks["proxy"] is _unavailable


def test_the_gate_exists_in_gated_mode_only() -> None:
    assert World().build(make_settings()).gate_access is not None
    assert World().build(make_settings(container_access="direct")).gate_access is None
    assert GATE not in make_app(World(), container_access="direct")


async def test_a_stop_is_counted_and_audited_through_the_one_wiring() -> None:
    world = World()
    world.runtime.add_image(IMAGE, {"eu.simphony-project.docker.type": "webapp"})
    built = world.build(make_settings())
    await catalogue.create_user(world.database.unit_of_work, "alice")
    await catalogue.create_application(world.database.unit_of_work, IMAGE)
    grant = await catalogue.grant_access(world.database.unit_of_work, IMAGE, "alice", Policy())
    session = await built.sessions.start(grant)
    await built.sessions.stop("alice", session.url_id)
    await built.audit.flush()

    stop = await built.stop_log.stop_of("alice", session.url_id)
    assert stop is not None
    assert stop.reason is StopReason.USER
    assert [(e.action.value, e.target) for e in world.events.events][-1:] == [
        ("stop", session.url_id)
    ]
    metrics = built.metrics.exposition().decode()
    assert 'remoteapp_session_stops_total{reason="user"} 1.0' in metrics
