"""The repository ports' contract, asserted alike on the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.domain.errors import Exists, NotFound
from remoteappmanager.domain.models import Application, Policy, User, Volume
from remoteappmanager.domain.sessions import StopReason, StopRecord
from remoteappmanager.domain.shares import ShareKind, ShareMode
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from tests.support.database import execute
from tests.support.services import PostgresCluster

IMAGE = "simphony/paraview:5.9"
OTHER_IMAGE = "simphony/jupyter:1"
FULL_POLICY = Policy(
    app_license="licence text, with spaces",
    allow_home=True,
    allow_view=True,
    allow_common=True,
    volume=Volume.parse("/srv/data:/data:rw"),
    allow_startup_data=True,
    placement=("engine.labels.zone!=eu-1", "node.labels.gpu==true"),
)
MAPPING_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def uow(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UnitOfWorkFactory]:
    """A unit-of-work factory over an empty catalogue, for each implementation of the ports."""
    if request.param == "memory":
        yield InMemoryDatabase().unit_of_work
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"contract_{uuid.uuid4().hex[:12]}")
    await migrate.upgrade(url)
    database = SqlDatabase(url)
    try:
        yield database.unit_of_work
    finally:
        await database.close()


async def _seed(uow: UnitOfWorkFactory) -> tuple[User, User, Application, Application]:
    async with uow() as work:
        alice = await work.users.add("alice")
        bob = await work.users.add("bob")
        app = await work.applications.add(IMAGE)
        other = await work.applications.add(OTHER_IMAGE)
        await work.commit()
    return alice, bob, app, other


# ------------------------------------------------------------------------------ users
async def test_users_are_added_found_and_listed_by_id(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        alice = await work.users.add("alice")
        bob = await work.users.add("bob")
        await work.commit()

    async with uow() as work:
        assert await work.users.get(alice.id) == alice
        assert await work.users.get_by_name("bob") == bob
        assert list(await work.users.list()) == [alice, bob]
    assert alice.name == "alice"
    assert alice.id < bob.id


async def test_a_taken_user_name_is_exists_and_the_work_goes_on(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        await work.users.add("alice")
        with pytest.raises(Exists, match="alice"):
            await work.users.add("alice")
        await work.users.add("bob")
        await work.commit()

    async with uow() as work:
        assert [user.name for user in await work.users.list()] == ["alice", "bob"]


async def test_unknown_users_are_not_found(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        with pytest.raises(NotFound):
            await work.users.get(12345)
        with pytest.raises(NotFound, match="carol"):
            await work.users.get_by_name("carol")
        with pytest.raises(NotFound):
            await work.users.remove(12345)


async def test_removing_a_user_removes_their_grants_only(uow: UnitOfWorkFactory) -> None:
    alice, bob, app, _ = await _seed(uow)
    async with uow() as work:
        await work.grants.grant(alice, app, Policy())
        bobs = await work.grants.grant(bob, app, Policy())
        await work.commit()

    async with uow() as work:
        await work.users.remove(alice.id)
        await work.commit()

    async with uow() as work:
        assert list(await work.users.list()) == [bob]
        assert list(await work.grants.list_all()) == [bobs]
        assert list(await work.grants.list_for_user(alice.id)) == []


# ------------------------------------------------------------------------------ applications
async def test_applications_are_added_found_and_listed_by_id(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        first = await work.applications.add(IMAGE)
        second = await work.applications.add(OTHER_IMAGE)
        with pytest.raises(Exists, match="paraview"):
            await work.applications.add(IMAGE)
        await work.commit()

    async with uow() as work:
        assert await work.applications.get(first.id) == first
        assert await work.applications.get_by_image(OTHER_IMAGE) == second
        assert list(await work.applications.list()) == [first, second]
        with pytest.raises(NotFound):
            await work.applications.get(12345)
        with pytest.raises(NotFound, match="nothing/here"):
            await work.applications.get_by_image("nothing/here")
        with pytest.raises(NotFound):
            await work.applications.remove(12345)


async def test_removing_an_application_removes_its_grants(uow: UnitOfWorkFactory) -> None:
    alice, _, app, other = await _seed(uow)
    async with uow() as work:
        await work.grants.grant(alice, app, Policy())
        kept = await work.grants.grant(alice, other, Policy())
        await work.applications.remove(app.id)
        await work.commit()

    async with uow() as work:
        assert list(await work.applications.list()) == [other]
        assert list(await work.grants.list_for_user(alice.id)) == [kept]


# ------------------------------------------------------------------------------ grants
async def test_a_grant_round_trips_its_policy(uow: UnitOfWorkFactory) -> None:
    alice, _, app, _ = await _seed(uow)
    async with uow() as work:
        granted = await work.grants.grant(alice, app, FULL_POLICY)
        await work.commit()

    assert MAPPING_ID.match(granted.mapping_id)
    assert (granted.user, granted.application, granted.policy) == (alice, app, FULL_POLICY)
    async with uow() as work:
        assert await work.grants.get(granted.mapping_id) == granted


async def test_an_identical_grant_returns_the_same_mapping_id(uow: UnitOfWorkFactory) -> None:
    alice, bob, app, _ = await _seed(uow)
    async with uow() as work:
        first = await work.grants.grant(alice, app, FULL_POLICY)
        await work.commit()

    async with uow() as work:
        again = await work.grants.grant(alice, app, FULL_POLICY)
        licence_only = await work.grants.grant(alice, app, Policy(app_license="x"))
        default = await work.grants.grant(alice, app, Policy())
        default_again = await work.grants.grant(alice, app, Policy())
        bobs = await work.grants.grant(bob, app, FULL_POLICY)
        gpu = await work.grants.grant(alice, app, Policy(placement=("node.labels.gpu==true",)))
        gpu_again = await work.grants.grant(
            alice, app, Policy(placement=("node.labels.gpu==true",))
        )
        await work.commit()

    assert again == first
    assert default_again == default
    # Differing only in placement: another policy, another grant.
    assert gpu_again == gpu
    assert gpu.policy.placement == ("node.labels.gpu==true",)
    ids = {
        first.mapping_id,
        licence_only.mapping_id,
        default.mapping_id,
        bobs.mapping_id,
        gpu.mapping_id,
    }
    assert len(ids) == 5
    async with uow() as work:
        assert len(await work.grants.list_for(alice.id, app.id)) == 4


async def test_grants_are_listed_per_user_and_application(uow: UnitOfWorkFactory) -> None:
    alice, bob, app, other = await _seed(uow)
    async with uow() as work:
        a1 = await work.grants.grant(alice, app, Policy())
        a2 = await work.grants.grant(alice, other, Policy())
        b1 = await work.grants.grant(bob, app, Policy(allow_view=True))
        await work.commit()

    async with uow() as work:
        assert list(await work.grants.list_for_user(alice.id)) == [a1, a2]
        assert list(await work.grants.list_for(alice.id, other.id)) == [a2]
        assert list(await work.grants.list_for(bob.id, other.id)) == []
        assert list(await work.grants.list_all()) == [a1, a2, b1]
        assert list(await work.grants.list_for_user(12345)) == []


async def test_granting_to_someone_unknown_is_not_found(uow: UnitOfWorkFactory) -> None:
    alice, _, app, _ = await _seed(uow)
    async with uow() as work:
        with pytest.raises(NotFound):
            await work.grants.grant(User(id=12345, name="ghost"), app, Policy())
        with pytest.raises(NotFound):
            await work.grants.grant(alice, Application(id=12345, image="ghost/app"), Policy())


async def test_the_policies_of_many_grants_come_in_one_lookup(uow: UnitOfWorkFactory) -> None:
    alice, bob, app, other = await _seed(uow)
    async with uow() as work:
        home = await work.grants.grant(alice, app, Policy(allow_home=True))
        full = await work.grants.grant(bob, other, FULL_POLICY)
        physics = await work.grants.grant_group("physics", app, Policy(allow_view=True))
        revoked = await work.grants.grant(bob, app, Policy())
        await work.grants.revoke(revoked.mapping_id)
        await work.commit()

    async with uow() as work:
        wanted = [home.mapping_id, full.mapping_id, physics.mapping_id, revoked.mapping_id]
        assert dict(await work.grants.policies_of([*wanted, "0" * 32, "not an id"])) == {
            home.mapping_id: Policy(allow_home=True),
            full.mapping_id: FULL_POLICY,
            physics.mapping_id: Policy(allow_view=True),
        }
        assert dict(await work.grants.policies_of([])) == {}
        assert dict(await work.grants.policies_of({home.mapping_id})) == {
            home.mapping_id: Policy(allow_home=True)
        }


async def test_a_lookup_of_policies_costs_one_query_per_thousand_ids(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'queries.db'}"
    await migrate.upgrade(url)
    selects: list[str] = []
    database = SqlDatabase(url, observe=lambda _kind, verb, _took, _outcome: selects.append(verb))
    try:
        alice, _bob, app, _other = await _seed(database.unit_of_work)
        async with database.unit_of_work() as work:
            granted = [
                await work.grants.grant(alice, app, Policy(memory_limit_mb=64 + n))
                for n in range(30)
            ]
            await work.commit()
        ids = [grant.mapping_id for grant in granted] + [f"{n:032x}" for n in range(1500)]
        async with database.unit_of_work() as work:
            selects.clear()
            found = await work.grants.policies_of(ids)
            assert selects.count("select") == 2
        assert {found[g.mapping_id].memory_limit_mb for g in granted} == {64 + n for n in range(30)}
    finally:
        await database.close()


async def test_grants_are_revoked_one_by_one(uow: UnitOfWorkFactory) -> None:
    alice, _, app, other = await _seed(uow)
    async with uow() as work:
        home = await work.grants.grant(alice, app, Policy(allow_home=True))
        view = await work.grants.grant(alice, app, Policy(allow_view=True))
        kept = await work.grants.grant(alice, other, Policy())
        await work.commit()

    async with uow() as work:
        await work.grants.revoke(home.mapping_id)
        with pytest.raises(NotFound):
            await work.grants.revoke(home.mapping_id)
        with pytest.raises(NotFound):
            await work.grants.get(home.mapping_id)
        assert list(await work.grants.list_for(alice.id, app.id)) == [view]
        await work.grants.revoke(view.mapping_id)
        assert list(await work.grants.list_for(alice.id, app.id)) == []
        await work.commit()

    async with uow() as work:
        assert list(await work.grants.list_all()) == [kept]


# ------------------------------------------------------------------------------ unit of work
async def test_nothing_is_kept_without_commit(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        await work.users.add("alice")
        async with uow() as other:
            assert list(await other.users.list()) == []

    async with uow() as work:
        assert list(await work.users.list()) == []


async def test_an_error_rolls_back_what_was_not_committed(uow: UnitOfWorkFactory) -> None:
    async def add_then_fail() -> None:
        async with uow() as work:
            await work.users.add("alice")
            await work.commit()
            await work.users.add("bob")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await add_then_fail()

    async with uow() as work:
        assert [user.name for user in await work.users.list()] == ["alice"]


async def test_rollback_discards_the_work_since_the_last_commit(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        await work.users.add("alice")
        await work.commit()
        await work.users.add("bob")
        await work.rollback()
        await work.users.add("carol")
        await work.commit()

    async with uow() as work:
        assert [user.name for user in await work.users.list()] == ["alice", "carol"]


async def test_repositories_are_refused_outside_the_block(uow: UnitOfWorkFactory) -> None:
    work = uow()
    with pytest.raises(RuntimeError):
        _ = work.users
    async with work:
        pass
    with pytest.raises(RuntimeError):
        await work.commit()


# ------------------------------------------------------------------------------ SQL only
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_identical_policies_are_stored_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'policies.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"policies_{uuid.uuid4().hex[:12]}")
    await migrate.upgrade(url)
    database = SqlDatabase(url)
    try:
        alice, bob, app, other = await _seed(database.unit_of_work)
        async with database.unit_of_work() as work:
            for user in (alice, bob):
                for application in (app, other):
                    await work.grants.grant(user, application, FULL_POLICY)
                    await work.grants.grant(user, application, Policy())
            await work.commit()
    finally:
        await database.close()

    assert await execute(url, "SELECT count(*) FROM application_policy") == [(2,)]
    assert await execute(url, "SELECT count(*) FROM accounting") == [(8,)]


# ------------------------------------------------------------------------------ version
async def _version(uow: UnitOfWorkFactory) -> int:
    async with uow() as work:
        return await work.catalogue_version()


async def test_every_committed_change_moves_the_catalogue_version(uow: UnitOfWorkFactory) -> None:
    seen = [await _version(uow)]

    async def moved() -> bool:
        seen.append(await _version(uow))
        return seen[-1] != seen[-2]

    alice, _bob, app, _other = await _seed(uow)
    assert await moved()
    async with uow() as work:
        grant = await work.grants.grant(alice, app, FULL_POLICY)
        await work.commit()
    assert await moved()
    async with uow() as work:
        await work.grants.revoke(grant.mapping_id)
        await work.commit()
    assert await moved()
    async with uow() as work:
        await work.grants.grant(alice, app, Policy())
        await work.commit()
    assert await moved()
    async with uow() as work:
        await work.grants.grant_group("staff", app, Policy())
        await work.commit()
    assert await moved()
    async with uow() as work:
        await work.applications.remove(app.id)
        await work.users.remove(alice.id)
        await work.commit()
    assert await moved()


async def test_reads_and_uncommitted_work_leave_the_version_alone(uow: UnitOfWorkFactory) -> None:
    alice, _bob, app, _other = await _seed(uow)
    before = await _version(uow)
    async with uow() as work:
        await work.users.list()
        await work.grants.list_all()
        await work.commit()
    async with uow() as work:
        await work.grants.grant(alice, app, FULL_POLICY)
        await work.users.add("carol")
        # Not committed: rolled back on leaving the block.
    async with uow() as work:
        await work.users.add("dave")
        await work.rollback()
        await work.commit()
    assert await _version(uow) == before


# ------------------------------------------------------------------------------ session records
URL_A, URL_B = "a" * 32, "b" * 32
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


async def test_limits_and_timeouts_are_part_of_a_policy(uow: UnitOfWorkFactory) -> None:
    alice, _bob, app, _other = await _seed(uow)
    limited = Policy(
        memory_limit_mb=128, cpu_limit=0.5, pids_limit=64, idle_timeout_s=20, max_lifetime_s=30
    )
    async with uow() as work:
        plain = await work.grants.grant(alice, app, Policy())
        first = await work.grants.grant(alice, app, limited)
        again = await work.grants.grant(alice, app, replace(limited))
        other = await work.grants.grant(alice, app, replace(limited, cpu_limit=0.25))
        await work.commit()
    assert first.mapping_id == again.mapping_id
    assert len({plain.mapping_id, first.mapping_id, other.mapping_id}) == 3
    async with uow() as work:
        assert (await work.grants.get(first.mapping_id)).policy == limited
        assert (await work.grants.get(other.mapping_id)).policy.cpu_limit == 0.25


async def test_inputs_keep_the_latest_time_per_session(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        version = await work.catalogue_version()
        await work.session_records.record_inputs({URL_A: T0, URL_B: T0})
        await work.commit()
    async with uow() as work:
        await work.session_records.record_inputs(
            {URL_A: T0 + timedelta(seconds=30), URL_B: T0 - timedelta(seconds=30)}
        )
        await work.commit()
    async with uow() as work:
        assert await work.session_records.last_inputs([URL_A, URL_B, "c" * 32]) == {
            URL_A: T0 + timedelta(seconds=30),
            URL_B: T0,
        }
        assert await work.session_records.last_inputs([]) == {}
        # Session records are not catalogue changes.
        assert await work.catalogue_version() == version


async def test_stops_are_kept_per_user_newest_first_and_pruned(uow: UnitOfWorkFactory) -> None:
    old = StopRecord(URL_A, "alice", "1" * 32, StopReason.IDLE, T0)
    new = StopRecord(URL_B, "alice", "2" * 32, StopReason.OOM, T0 + timedelta(hours=1))
    theirs = StopRecord("c" * 32, "bob", "3" * 32, StopReason.ADMIN, T0)
    async with uow() as work:
        await work.session_records.record_inputs({URL_A: T0})
        for record in (old, new, theirs):
            await work.session_records.record_stop(record)
        await work.commit()
    async with uow() as work:
        records = work.session_records
        assert list(await records.stops_for_user("alice", T0)) == [new, old]
        assert list(await records.stops_for_user("alice", T0 + timedelta(minutes=1))) == [new]
        assert await records.stop_of(URL_B) == new
        assert await records.stop_of("d" * 32) is None
        # A stopped session's input time is forgotten.
        assert await records.last_inputs([URL_A]) == {}
        assert await records.prune(T0 + timedelta(minutes=1)) == 2
        await work.commit()
    async with uow() as work:
        assert await work.session_records.stop_of(URL_A) is None
        assert await work.session_records.stop_of(URL_B) == new


async def test_session_records_roll_back_with_the_unit_of_work(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        await work.session_records.record_inputs({URL_A: T0})
    async with uow() as work:
        assert await work.session_records.last_inputs([URL_A]) == {}


# ------------------------------------------------------------------------------ paging
async def test_users_are_paged_and_matched_by_part_of_their_name(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        for name in ("alice", "bob", "Alicia", "carol", "mal_ice", "100%"):
            await work.users.add(name)
        await work.commit()

    async with uow() as work:
        total, page = await work.users.page(limit=2, offset=1)
        assert total == 6
        assert [user.name for user in page] == ["bob", "Alicia"]
        total, found = await work.users.page(contains="ALI", limit=10)
        assert (total, [user.name for user in found]) == (2, ["alice", "Alicia"])
        # LIKE's wildcards are plain characters here.
        assert [u.name for u in (await work.users.page(contains="_", limit=10))[1]] == ["mal_ice"]
        assert [u.name for u in (await work.users.page(contains="%", limit=10))[1]] == ["100%"]
        assert (await work.users.page(contains="zzz", limit=10)) == (0, [])


async def test_every_grant_is_paged_in_the_listing_order(uow: UnitOfWorkFactory) -> None:
    alice, bob, app, other = await _seed(uow)
    async with uow() as work:
        for user in (alice, bob):
            for application in (app, other):
                await work.grants.grant(user, application, Policy())
        await work.commit()

    async with uow() as work:
        every = list(await work.grants.list_all())
        total, first = await work.grants.page_all(limit=3)
        _, rest = await work.grants.page_all(limit=3, offset=3)

    assert total == 4
    assert list(first) + list(rest) == every


# ------------------------------------------------------------------------------ shares
URL_ID = "a" * 26
OTHER_URL_ID = "b" * 26
WHEN = datetime(2026, 12, 4, 19, 30, tzinfo=UTC)


async def test_shares_are_put_found_listed_by_id_and_removed(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        bob = await work.shares.put(URL_ID, ShareKind.USER, "bob", ShareMode.VIEW, WHEN)
        team = await work.shares.put(URL_ID, ShareKind.GROUP, "team", ShareMode.CONTROL, WHEN)
        link = await work.shares.put(URL_ID, ShareKind.LINK, "", ShareMode.VIEW, WHEN)
        elsewhere = await work.shares.put(OTHER_URL_ID, ShareKind.USER, "bob", ShareMode.VIEW, WHEN)
        await work.commit()

    assert (bob.url_id, bob.kind, bob.subject, bob.mode) == (
        URL_ID,
        ShareKind.USER,
        "bob",
        ShareMode.VIEW,
    )
    assert bob.created_at == WHEN
    assert bob.id < team.id < link.id
    async with uow() as work:
        assert list(await work.shares.list_for(URL_ID)) == [bob, team, link]
        assert await work.shares.get(team.id) == team
        await work.shares.remove(team.id)
        with pytest.raises(NotFound):
            await work.shares.remove(team.id)
        await work.commit()
    async with uow() as work:
        assert list(await work.shares.list_for(URL_ID)) == [bob, link]
        with pytest.raises(NotFound):
            await work.shares.get(team.id)
        assert await work.shares.remove_all(URL_ID) == 2
        await work.commit()
    async with uow() as work:
        assert list(await work.shares.list_for(URL_ID)) == []
        assert list(await work.shares.list_for(OTHER_URL_ID)) == [elsewhere]


async def test_sharing_again_changes_the_mode_of_the_same_share(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        first = await work.shares.put(URL_ID, ShareKind.LINK, "", ShareMode.VIEW, WHEN)
        await work.commit()
    later = datetime(2026, 12, 5, tzinfo=UTC)
    async with uow() as work:
        again = await work.shares.put(URL_ID, ShareKind.LINK, "", ShareMode.CONTROL, later)
        await work.commit()
    assert (again.id, again.created_at, again.mode) == (first.id, WHEN, ShareMode.CONTROL)
    async with uow() as work:
        assert list(await work.shares.list_for(URL_ID)) == [again]


async def test_shares_are_not_catalogue_changes_and_roll_back(uow: UnitOfWorkFactory) -> None:
    before = await _version(uow)
    async with uow() as work:
        await work.shares.put(URL_ID, ShareKind.USER, "bob", ShareMode.VIEW, WHEN)
        # Not committed.
    async with uow() as work:
        assert list(await work.shares.list_for(URL_ID)) == []
        share = await work.shares.put(URL_ID, ShareKind.USER, "bob", ShareMode.VIEW, WHEN)
        await work.commit()
    async with uow() as work:
        await work.shares.remove(share.id)
        await work.commit()
    assert await _version(uow) == before


# ------------------------------------------------------------------------ group grants
async def test_a_group_grant_is_idempotent_listed_by_group_and_revoked(
    uow: UnitOfWorkFactory,
) -> None:
    alice, _bob, app, other = await _seed(uow)
    async with uow() as work:
        physics = await work.grants.grant_group("physics", app, FULL_POLICY)
        again = await work.grants.grant_group("physics", app, FULL_POLICY)
        chemistry = await work.grants.grant_group("chemistry", other, Policy())
        await work.commit()
    assert again == physics
    assert MAPPING_ID.match(physics.mapping_id)
    assert (physics.group, physics.application, physics.policy) == ("physics", app, FULL_POLICY)

    async with uow() as work:
        assert await work.grants.get_group(physics.mapping_id) == physics
        assert list(await work.grants.list_groups()) == [chemistry, physics]
        assert list(await work.grants.list_groups({"physics", "nobody"})) == [physics]
        assert list(await work.grants.list_groups(set())) == []
        # Group grants are no user's grants: the users' listings do not show them.
        assert list(await work.grants.list_all()) == []
        assert list(await work.grants.list_for_user(alice.id)) == []
        with pytest.raises(NotFound):
            await work.grants.get(physics.mapping_id)

    async with uow() as work:
        assert await work.grants.revoke_group(physics.mapping_id) == physics
        await work.commit()
    async with uow() as work:
        assert list(await work.grants.list_groups()) == [chemistry]
        with pytest.raises(NotFound):
            await work.grants.get_group(physics.mapping_id)
        with pytest.raises(NotFound):
            await work.grants.revoke_group(physics.mapping_id)


async def test_a_group_grant_goes_with_its_application_and_moves_the_version(
    uow: UnitOfWorkFactory,
) -> None:
    _alice, _bob, app, other = await _seed(uow)
    async with uow() as work:
        before = await work.catalogue_version()
        await work.grants.grant_group("physics", app, Policy())
        kept = await work.grants.grant_group("physics", other, Policy())
        await work.commit()
    async with uow() as work:
        assert await work.catalogue_version() != before
        await work.applications.remove(app.id)
        await work.commit()
    async with uow() as work:
        assert list(await work.grants.list_groups()) == [kept]
        with pytest.raises(NotFound):
            await work.grants.grant_group("physics", app, Policy())
