"""The applications query: image metadata caching, and the shared container listing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from remoteappmanager.adapters.memory_db import InMemoryDatabase, InMemoryUnitOfWork
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.domain.containers import ContainerInfo
from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.services import catalogue
from remoteappmanager.services.applications import (
    IMAGE_MISSING,
    Applications,
    CatalogueWatch,
    ImageMetadataCache,
    ImageState,
)
from remoteappmanager.services.sessions import Sessions
from tests.support.session_world import IMAGE, IMAGE_LABELS, REALM, make_world


class CountingRuntime(InMemoryRuntime):
    """Counts engine calls, and makes each take a moment so that requests overlap."""

    def __init__(self) -> None:
        super().__init__(image_cache_ttl=0)
        self.inspections = 0
        self.listings = 0

    async def inspect_image(self, image: str) -> ImageMetadata:
        self.inspections += 1
        await asyncio.sleep(0.01)
        return await super().inspect_image(image)

    async def list(self, labels: Mapping[str, str]) -> Sequence[ContainerInfo]:
        self.listings += 1
        await asyncio.sleep(0.01)
        return await super().list(labels)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_lookups_of_one_image_cost_one_engine_call() -> None:
    runtime = CountingRuntime()
    runtime.add_image(IMAGE, IMAGE_LABELS)
    clock = Clock()
    cache = ImageMetadataCache(runtime, ttl=60, missing_ttl=5, clock=clock)
    found = await asyncio.gather(*(cache.get(IMAGE) for _ in range(200)))
    assert {state.metadata.ui_name for state in found if state.metadata} == {"Test desktop"}
    assert runtime.inspections == 1
    clock.now = 59
    await cache.get(IMAGE)
    assert runtime.inspections == 1
    clock.now = 61
    await cache.get(IMAGE)
    assert runtime.inspections == 2


async def test_a_missing_image_is_remembered_briefly() -> None:
    runtime = CountingRuntime()
    clock = Clock()
    cache = ImageMetadataCache(runtime, ttl=60, missing_ttl=5, clock=clock)
    missing = ImageState(None, IMAGE_MISSING)
    assert await cache.get(IMAGE) == missing
    assert await cache.get(IMAGE) == missing
    assert runtime.inspections == 1
    runtime.add_image(IMAGE, IMAGE_LABELS)
    clock.now = 6
    found = (await cache.get(IMAGE)).metadata
    assert found is not None
    assert found.ui_name == "Test desktop"


async def test_an_unreachable_engine_is_not_remembered() -> None:
    runtime = CountingRuntime()
    runtime.add_image(IMAGE, IMAGE_LABELS)
    cache = ImageMetadataCache(runtime, clock=Clock())
    runtime.available = False
    with pytest.raises(Unavailable):
        await cache.get(IMAGE)
    runtime.available = True
    assert (await cache.get(IMAGE)).available


async def test_listings_share_one_engine_call_and_see_our_own_changes_at_once() -> None:
    world = make_world()
    runtime = CountingRuntime()
    runtime.add_image(IMAGE, IMAGE_LABELS)
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        watch_interval=0.01,
        unit_of_work=world.database.unit_of_work,
        listing_ttl=1.0,
    )
    uow = world.database.unit_of_work
    await catalogue.create_user(uow, "alice")
    await catalogue.create_application(uow, IMAGE)
    grant = await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    applications = Applications(uow, sessions, ImageMetadataCache(runtime))

    listed = await asyncio.gather(*(applications.list_for("alice") for _ in range(100)))
    assert all(entry[0].session is None for entry in listed)
    assert runtime.listings == 1
    assert runtime.inspections == 1

    session = await sessions.start_for("alice", grant.mapping_id)
    (entry,) = await applications.list_for("alice")
    assert entry.session is not None
    assert entry.session.url_id == session.url_id
    await sessions.stop("alice", session.url_id)
    (entry,) = await applications.list_for("alice")
    assert entry.session is None
    assert await applications.list_for("nobody") == []


# ------------------------------------------------------------------------------ freshness
class CountingDatabase(InMemoryDatabase):
    """Counts the catalogue-version reads; can be made unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.version_reads = 0
        self.down = False

    def unit_of_work(self) -> InMemoryUnitOfWork:
        database = self

        class Counting(InMemoryUnitOfWork):
            async def catalogue_version(self) -> int:
                database.version_reads += 1
                await asyncio.sleep(0.01)
                if database.down:
                    raise Unavailable("database unavailable: connection refused")
                return await super().catalogue_version()

        return Counting(self)


async def test_the_watch_reads_the_version_at_most_once_a_second_and_once_at_a_time() -> None:
    database = CountingDatabase()
    clock = Clock()
    watch = CatalogueWatch(database.unit_of_work, interval=1.0, clock=clock)
    assert await watch.changed() is False  # the first look only records the version
    await catalogue.create_user(database.unit_of_work, "alice")
    assert await watch.changed() is False  # within the interval: not even asked
    assert database.version_reads == 1

    clock.now = 1.0
    answers = await asyncio.gather(*(watch.changed() for _ in range(100)))
    assert answers == [True] * 100
    assert database.version_reads == 2
    clock.now = 2.5
    assert await watch.changed() is False  # nothing new
    assert database.version_reads == 3


async def test_an_unreadable_version_counts_as_no_change_and_is_retried_later() -> None:
    database = CountingDatabase()
    clock = Clock()
    watch = CatalogueWatch(database.unit_of_work, interval=1.0, clock=clock)
    await watch.changed()
    await catalogue.create_user(database.unit_of_work, "alice")
    database.down = True
    clock.now = 1.0
    assert await watch.changed() is False
    database.down = False
    clock.now = 1.5
    assert await watch.changed() is False
    clock.now = 2.0
    assert await watch.changed() is True


async def test_a_change_made_elsewhere_shows_within_a_second_despite_the_grants_cache() -> None:
    world = make_world()
    database = CountingDatabase()
    uow = database.unit_of_work
    clock = Clock()
    await catalogue.create_user(uow, "alice")
    await catalogue.create_application(uow, IMAGE)
    first = await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, IMAGE_LABELS)
    sessions = Sessions(
        runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        unit_of_work=uow,
    )
    applications = Applications(
        uow, sessions, ImageMetadataCache(runtime, clock=clock), grants_ttl=10.0, clock=clock
    )
    assert [a.mapping_id for a in await applications.list_for("alice")] == [first.mapping_id]

    # Another process grants, and nobody tells this one.
    second = await catalogue.grant_access(uow, IMAGE, "alice", Policy(allow_home=True))
    clock.now = 0.5
    assert [a.mapping_id for a in await applications.list_for("alice")] == [first.mapping_id]
    clock.now = 1.0
    listed = {a.mapping_id for a in await applications.list_for("alice")}
    assert listed == {first.mapping_id, second.mapping_id}

    # A revocation elsewhere, likewise.
    await catalogue.revoke_grant(uow, first.mapping_id)
    clock.now = 2.0
    assert [a.mapping_id for a in await applications.list_for("alice")] == [second.mapping_id]
