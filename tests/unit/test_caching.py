"""The one cache: lifetimes on an injected clock, single flight, stale answers, refusals."""

from __future__ import annotations

import asyncio

import pytest

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.errors import Unauthorized, Unavailable
from tests.support.webapp import FakeClock


class Source:
    """A slow, countable origin of values."""

    def __init__(self) -> None:
        self.calls = 0
        self.value = "v1"
        self.error: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_fresh_entry_is_answered_without_loading(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10, maxsize=4, clock=clock)
    source = Source()
    assert await cache.get("k", source.load) == "v1"
    source.value = "v2"
    clock.advance(9.9)
    assert await cache.get("k", source.load) == "v1"
    assert (source.calls, cache.loads) == (1, 1)
    clock.advance(0.1)
    assert await cache.get("k", source.load) == "v2"
    assert source.calls == 2


async def test_concurrent_misses_share_one_load(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10, maxsize=4, clock=clock)
    source = Source()
    source.gate.clear()
    waiters = [asyncio.create_task(cache.get("k", source.load)) for _ in range(50)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiters) == ["v1"] * 50
    assert source.calls == 1


async def test_a_caller_giving_up_does_not_cancel_the_others_load(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10, maxsize=4, clock=clock)
    source = Source()
    source.gate.clear()
    impatient = asyncio.create_task(cache.get("k", source.load))
    patient = asyncio.create_task(cache.get("k", source.load))
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.sleep(0)
    source.gate.set()
    assert await patient == "v1"
    assert impatient.cancelled()
    assert cache.peek("k") == "v1"


async def test_the_lifetime_may_depend_on_the_value(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(
        ttl=60, maxsize=4, clock=clock, ttl_of=lambda v: 5 if v == "missing" else 60
    )
    source = Source()
    source.value = "missing"
    await cache.get("k", source.load)
    clock.advance(5)
    source.value = "found"
    assert await cache.get("k", source.load) == "found"
    clock.advance(59)
    assert await cache.get("k", source.load) == "found"
    assert source.calls == 2


async def test_a_stale_entry_is_answered_while_one_load_refreshes_it(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10, stale=10, maxsize=4, clock=clock)
    source = Source()
    await cache.get("k", source.load)
    clock.advance(15)
    source.value = "v2"
    source.gate.clear()
    # Every caller gets the stale answer at once; one refresh runs behind them.
    assert [await cache.get("k", source.load) for _ in range(5)] == ["v1"] * 5
    await asyncio.sleep(0)
    assert (cache.loads, source.calls) == (2, 2)
    source.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k", source.load) == "v2"
    clock.advance(20)  # past ttl + stale: the caller waits for a load
    source.value = "v3"
    assert await cache.get("k", source.load) == "v3"


async def test_a_failed_refresh_keeps_the_stale_answer_until_it_runs_out(
    clock: FakeClock,
) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=10, stale=10, maxsize=4, clock=clock)
    source = Source()
    await cache.get("k", source.load)
    clock.advance(12)
    source.error = Unavailable("down")
    assert await cache.get("k", source.load) == "v1"
    await asyncio.sleep(0.01)
    assert await cache.get("k", source.load) == "v1"
    clock.advance(10)
    with pytest.raises(Unavailable):
        await cache.get("k", source.load)


async def test_refusals_are_remembered_and_other_errors_are_not(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(
        ttl=30, maxsize=4, clock=clock, refusals=(Unauthorized,), refusal_ttl=10
    )
    source = Source()
    source.error = Unavailable("down")
    with pytest.raises(Unavailable):
        await cache.get("k", source.load)
    with pytest.raises(Unavailable):
        await cache.get("k", source.load)
    assert source.calls == 2
    source.error = Unauthorized("no")
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await cache.get("k", source.load)
    assert (source.calls, cache.refusals_answered, cache.refusals) == (3, 4, 1)
    clock.advance(10)
    source.error = None
    assert await cache.get("k", source.load) == "v1"


async def test_the_least_recently_used_go_first(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=30, maxsize=2, clock=clock)
    source = Source()
    await cache.get("a", source.load)
    await cache.get("b", source.load)
    await cache.get("a", source.load)  # a is used again: b is now the oldest
    await cache.get("c", source.load)
    assert (cache.peek("a"), cache.peek("b"), cache.peek("c"), len(cache)) == ("v1", None, "v1", 2)


async def test_a_discarded_key_does_not_keep_the_load_under_way(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=30, maxsize=4, clock=clock)
    source = Source()
    source.gate.clear()
    waiter = asyncio.create_task(cache.get("k", source.load))
    await asyncio.sleep(0)
    cache.discard("k")  # e.g. the data changed while it was being read
    source.gate.set()
    assert await waiter == "v1"  # the caller gets its answer ...
    assert cache.peek("k") is None  # ... the cache does not keep it
    source.value = "v2"
    assert await cache.get("k", source.load) == "v2"


async def test_discard_keys_forgets_the_keys_chosen_and_their_refusals(clock: FakeClock) -> None:
    cache: TtlCache[tuple[str, str], str] = TtlCache(
        ttl=30, maxsize=8, clock=clock, refusals=(Unauthorized,), refusal_ttl=30
    )
    cache.put(("alice", "a1"), "x")
    cache.put(("alice", "b1"), "y")
    cache.put(("bob", "a1"), "z")
    source = Source()
    source.error = Unauthorized("no")
    with pytest.raises(Unauthorized):
        await cache.get(("carol", "a1"), source.load)
    cache.discard_keys(lambda key: key[1] == "a1")
    assert (cache.peek(("alice", "a1")), cache.peek(("bob", "a1"))) == (None, None)
    assert (cache.peek(("alice", "b1")), cache.refusals) == ("y", 0)
    source.error = None
    assert await cache.get(("carol", "a1"), source.load) == "v1"


async def test_put_replaces_and_clear_forgets(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=30, maxsize=4, clock=clock)
    cache.put("k", "mine")
    source = Source()
    assert await cache.get("k", source.load) == "mine"
    cache.clear()
    assert await cache.get("k", source.load) == "v1"


async def test_close_cancels_the_loads_under_way(clock: FakeClock) -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=30, maxsize=4, clock=clock)
    source = Source()
    source.gate.clear()
    waiter = asyncio.create_task(cache.get("k", source.load))
    await asyncio.sleep(0)
    await cache.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(cache) == 0


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        TtlCache(ttl=1, maxsize=0)
    with pytest.raises(ValueError, match="negative"):
        TtlCache(ttl=-1, maxsize=1)
