"""Two replicas of the web application on one (fake) database: a browser signed in through one
is signed in on the other, and signing out through either signs it out of both."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from remoteappmanager.adapters.memory_shared_state import (
    InMemoryLeaderElection,
    InMemoryLoginSessionRecords,
    InMemorySharedState,
)
from remoteappmanager.web.auth import SESSION_COOKIE, XSRF_COOKIE
from remoteappmanager.web.keys import DEPS, LOGIN_SESSIONS
from tests.support.session_world import wait_until
from tests.support.webapp import PREFIX, World, cookie, make_app, replace_cookie, sign_in

WHOAMI = PREFIX + "api/v1/user"


async def _pair(world: World, aiohttp_client: Any) -> tuple[TestClient[Any, Any], ...]:
    state = InMemorySharedState()
    return tuple(
        [
            await aiohttp_client(make_app(world, login_sessions=InMemoryLoginSessionRecords(state)))
            for _ in range(2)
        ]
    )


def _carry_cookies(source: TestClient[Any, Any], target: TestClient[Any, Any]) -> None:
    """What a load balancer does: the browser's next request goes to the other replica."""
    for name in (SESSION_COOKIE, XSRF_COOKIE):
        value = cookie(source, name)
        assert value is not None
        replace_cookie(target, name, value)


async def test_a_browser_signed_in_through_one_replica_is_signed_in_on_the_other(
    aiohttp_client: Any,
) -> None:
    world = World()
    world.hub.add_user("alice")
    a, b = await _pair(world, aiohttp_client)
    await sign_in(a, world, "alice")
    _carry_cookies(a, b)

    answer = await b.get(WHOAMI)

    assert answer.status == 200
    assert (await answer.json())["name"] == "alice"


async def test_signing_out_through_one_replica_signs_out_of_both_within_seconds(
    aiohttp_client: Any,
) -> None:
    world = World()
    world.hub.add_user("alice")
    a, b = await _pair(world, aiohttp_client)
    await sign_in(a, world, "alice")
    _carry_cookies(a, b)
    assert (await b.get(WHOAMI)).status == 200  # b has it cached now
    ended_on_b: list[str] = []
    b.app[LOGIN_SESSIONS].on_end(ended_on_b.append)

    page = await a.get(PREFIX + "logout")
    token = cookie(a, XSRF_COOKIE)
    assert page.status == 200
    signed_out = await a.post(
        PREFIX + "logout", data={XSRF_COOKIE: token or ""}, allow_redirects=False
    )
    assert signed_out.status == 302

    # b's periodic check (every second) drops it and tells its gate.
    await wait_until(lambda: ended_on_b, within=3.0)
    assert b.app[LOGIN_SESSIONS].get(ended_on_b[0]) is None
    assert (await b.get(WHOAMI)).status == 401


async def test_health_and_metrics_say_whether_this_replica_leads(aiohttp_client: Any) -> None:
    world = World()
    state = InMemorySharedState()
    clients = []
    for _ in range(2):
        app = make_app(world, election=InMemoryLeaderElection(state))
        clients.append((await aiohttp_client(app), app[DEPS].leadership))
    assert await clients[0][1].campaign_once()
    assert not await clients[1][1].campaign_once()

    for (client, _leadership), leading in zip(clients, (True, False), strict=True):
        health = await client.get(PREFIX + "health")
        assert (await health.json())["leader"] is leading
        metrics = await (await client.get(PREFIX + "metrics")).text()
        assert f"remoteapp_leader {1.0 if leading else 0.0}" in metrics
