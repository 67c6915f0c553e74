"""Every dependency dies (kill -9) and comes back: the service answers while it is down, and
recovers without losing a grant, orphaning a container or a route, or hiding a session.

One stack of real processes for the module (see ``tests/support/fault_stack.py``): PostgreSQL,
a private Docker engine (never the machine's), JupyterHub with its configurable-http-proxy,
and the service. Each fault is injected once while idle (a few sessions running) and once
during 50 concurrent starts by 50 users. The time from the restart (for the proxy, which the
hub restarts itself: from the kill) until every invariant holds again is printed per fault.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.support.fault_stack import PREFIX, Answer, FaultStack
from tests.support.hub import require_hub
from tests.support.services import ServiceMissing, skip_or_fail

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.docker,
    pytest.mark.proxy,
    pytest.mark.hub,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
]

USERS = 50
IDLE_SESSIONS = 5
# A read must be answered within this while a dependency is down; a start, which does real
# work (create, start, wait for the application) before it needs the proxy, within START_FAST.
FAST = 5.0
START_FAST = 15.0
RECOVERY_WITHIN = 60.0
RECOVERY: dict[str, float] = {}


@dataclass(frozen=True)
class Fault:
    name: str  # the dependency as {svc}health names it ("" for the service itself)
    kill: Callable[[FaultStack], None]
    # None: something else starts it again (the hub restarts its proxy).
    restart: Callable[[FaultStack], None] | None


FAULTS = {
    "proxy": Fault("proxy", FaultStack.kill_proxy, None),
    "hub": Fault("hub", FaultStack.kill_hub, FaultStack.start_hub),
    "service": Fault("", FaultStack.kill_service, FaultStack.start_service),
    "docker": Fault("docker", lambda s: s.docker.kill(), lambda s: s.docker.start()),
    "database": Fault("database", lambda s: s.postgres.kill(), lambda s: s.postgres.start()),
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    require_hub()
    try:
        running = await FaultStack.create(tmp_path_factory.mktemp("faults"), USERS)
    except ServiceMissing as exc:
        skip_or_fail(f"the fault-injection stack: {exc}")
        raise AssertionError("unreachable") from exc
    # The engine killed is the stack's own, never the machine's.
    assert running.docker.url != "unix:///var/run/docker.sock"
    assert "rf-dockerd-" in running.service_environment()["REMOTEAPP_DOCKER_HOST"]
    try:
        yield running
    finally:
        await running.close()
        if RECOVERY:
            print("\nTime to full recovery after kill -9 and restart:")
            for name, seconds in RECOVERY.items():
                print(f"  {name:<20} {seconds:5.1f} s")


def _assert_answered(answer: Answer, within: float, what: str) -> None:
    assert answer.seconds < within, f"{what} took {answer.seconds:.1f} s"
    assert answer.status != 0, f"{what}: no answer ({answer.text})"
    assert "Traceback" not in answer.text, f"{what}: {answer.text[:500]}"


def _assert_api_answer(answer: Answer, within: float, what: str, *ok: int) -> None:
    _assert_answered(answer, within, what)
    if answer.status in ok:
        return
    assert answer.status == 503, f"{what}: {answer.status} {answer.text[:300]}"
    assert answer.is_error_envelope, f"{what}: {answer.text[:300]}"


async def _ensure_idle_sessions(stack: FaultStack) -> None:
    listed = await asyncio.gather(
        *(
            stack.call("GET", PREFIX + "api/v1/containers/", user=user)
            for user in stack.users[:IDLE_SESSIONS]
        )
    )
    missing = [
        user
        for user, answer in zip(stack.users, listed, strict=False)
        if answer.status == 200 and not answer.body["identifiers"]
    ]
    started = await asyncio.gather(*(stack.start_session(user) for user in missing))
    assert all(answer.status == 201 for answer in started), started
    await stack.wait_consistent(RECOVERY_WITHIN)


async def _health_names(stack: FaultStack, dependency: str, base: str) -> Answer | None:
    """``{svc}health`` turns 503 and names the dependency within its cache's lifetime.

    None if it did; else the last answer."""
    deadline = time.monotonic() + FAST
    answer = await stack.health(base)
    while time.monotonic() < deadline:
        answer = await stack.health(base)
        _assert_answered(answer, FAST, "health")
        if answer.status == 503 and dependency in answer.body["down"]:
            return None
        await asyncio.sleep(0.2)
    return answer


async def _kill_and_see_it_named(stack: FaultStack, fault: Fault, base: str) -> float:
    """Kill the dependency and see ``{svc}health`` name it; the time of the kill.

    The hub restarts its proxy on its own clock, at times before any probe could see it gone
    (the proxy is then up again: a new pid, or its API answering though the killed process is
    gone, since the pid file may lag): only then is the kill repeated. A health that does not
    name a dependency that stays down fails at once."""
    answer = None
    for _ in range(3):
        proxy_before = _proxy_pid(stack)
        await asyncio.to_thread(fault.kill, stack)
        killed_at = time.monotonic()
        if not fault.name:
            return killed_at
        answer = await _health_names(stack, fault.name, base)
        if answer is None:
            return killed_at
        restarted_behind_our_back = fault.restart is None and (
            _proxy_pid(stack) != proxy_before or await asyncio.to_thread(_proxy_answers, stack)
        )
        if not restarted_behind_our_back:
            break
        await stack.wait_healthy(RECOVERY_WITHIN)
    assert answer is not None
    raise AssertionError(f"health never named {fault.name}: {answer.status} {answer.text}")


def _proxy_answers(stack: FaultStack) -> bool:
    """Whether something listens on the proxy's API port (the killed proxy is gone by then)."""
    try:
        with socket.create_connection(("127.0.0.1", stack.ports.proxy_api), timeout=2):
            return True
    except OSError:
        return False


def _proxy_pid(stack: FaultStack) -> int | None:
    try:
        return stack.proxy_pid()
    except (OSError, ValueError):  # the hub rewrites its pid file while it restarts the proxy
        return None


async def _recover(stack: FaultStack, fault: Fault, killed_at: float) -> float:
    started = killed_at
    if fault.restart is not None:
        started = time.monotonic()
        await asyncio.to_thread(fault.restart, stack)
    await stack.wait_healthy(RECOVERY_WITHIN)
    await stack.wait_consistent(RECOVERY_WITHIN)
    return time.monotonic() - started


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_fault_while_idle(stack: FaultStack, name: str) -> None:
    fault = FAULTS[name]
    await _ensure_idle_sessions(stack)
    # The proxy down: nothing answers on its public port, so ask the service itself.
    base = stack.service_url if name == "proxy" else stack.public_url
    reader, starter = stack.users[IDLE_SESSIONS], stack.users[IDLE_SESSIONS + 1]

    killed_at = await _kill_and_see_it_named(stack, fault, base)
    if not fault.name:
        # The service down: the proxy answers for it, at once.
        answer = await stack.health(base)
        _assert_answered(answer, FAST, "health")
        assert answer.status == 503
    listing = await stack.call("GET", PREFIX + "api/v1/applications/", user=reader, base=base)
    start = await stack.start_session(starter, base=base)
    if fault.name:
        # Reads may be answered from caches; a start needs every dependency but the hub
        # (whose answer about a token is kept for a while), and the proxy may be back by the
        # time the start adds its route (the hub restarts it within seconds).
        _assert_api_answer(listing, FAST, "listing", 200)
        may_start = name in ("hub", "proxy")
        _assert_api_answer(start, START_FAST, "start", *((201,) if may_start else ()))
    else:
        _assert_answered(listing, FAST, "listing")
        _assert_answered(start, FAST, "start")
        assert (listing.status, start.status) == (503, 503)

    RECOVERY[f"{name} (idle)"] = await _recover(stack, fault, killed_at)
    # After recovery the start works (again).
    await stack.stop_all()
    again = await stack.start_session(starter)
    assert again.status == 201, again
    await stack.wait_consistent(RECOVERY_WITHIN)


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_fault_during_50_concurrent_starts(stack: FaultStack, name: str) -> None:
    fault = FAULTS[name]
    await stack.stop_all()
    await stack.wait_consistent(RECOVERY_WITHIN)
    # Killing the proxy cuts the connections through it: ask the service itself instead.
    base = stack.service_url if name == "proxy" else None
    starts = [asyncio.ensure_future(stack.start_session(u, base=base)) for u in stack.users]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(fault.kill, stack)
    killed_at = time.monotonic()
    answers = await asyncio.gather(*starts)
    # Every start was answered (none hung): started, refused with the usual error, or, with
    # the service itself gone, the proxy's 503.
    for answer in answers:
        assert answer.seconds < 60, answer
        if fault.name == "" and answer.status in (0, 502, 503) and not answer.is_error_envelope:
            continue
        assert answer.status in (201, 500, 503), answer
        if answer.status != 201:
            assert answer.is_error_envelope, answer

    RECOVERY[f"{name} (50 starts)"] = await _recover(stack, fault, killed_at)
    await stack.stop_all()
    await stack.wait_consistent(RECOVERY_WITHIN)
    assert await stack.engine_containers() == []
    assert await stack.our_routes() == {}
