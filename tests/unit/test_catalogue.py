"""The catalogue use cases over the in-memory unit of work: behaviour and transactions."""

from __future__ import annotations

import dataclasses

import pytest

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths
from remoteappmanager.domain.errors import Exists, InvalidRequest, NotFound, Unavailable
from remoteappmanager.domain.models import Policy, Volume
from remoteappmanager.domain.volumes import VolumeRules
from remoteappmanager.services import catalogue

IMAGE = "simphony/paraview:5.9"
OTHER_IMAGE = "simphony/jupyter:1"

# Grants may mount host folders under /data (none exists on this fake host).
DATA_VOLUMES = catalogue.VolumeGuard(VolumeRules.of(["/data"]), InMemoryHostPaths())


@pytest.fixture
def database() -> InMemoryDatabase:
    return InMemoryDatabase()


@pytest.fixture
async def populated(database: InMemoryDatabase) -> InMemoryDatabase:
    for name in ("alice", "bob"):
        await catalogue.create_user(database.unit_of_work, name)
    for image in (IMAGE, OTHER_IMAGE):
        await catalogue.create_application(database.unit_of_work, image)
    return database


# ------------------------------------------------------------------------------ users
async def test_created_users_are_listed_in_creation_order(database: InMemoryDatabase) -> None:
    alice = await catalogue.create_user(database.unit_of_work, "alice")
    bob = await catalogue.create_user(database.unit_of_work, "bob")

    assert [user.name for user in await catalogue.list_users(database.unit_of_work)] == [
        "alice",
        "bob",
    ]
    assert alice.id != bob.id


async def test_a_duplicate_user_is_refused_and_commits_nothing(
    database: InMemoryDatabase,
) -> None:
    await catalogue.create_user(database.unit_of_work, "alice")
    commits = database.commits

    with pytest.raises(Exists, match="alice"):
        await catalogue.create_user(database.unit_of_work, "alice")

    assert database.commits == commits
    assert len(await catalogue.list_users(database.unit_of_work)) == 1


@pytest.mark.parametrize("name", ["", " alice", "a/b", "x" * 256, "tab\there"])
async def test_malformed_user_names_are_refused(database: InMemoryDatabase, name: str) -> None:
    with pytest.raises(InvalidRequest):
        await catalogue.create_user(database.unit_of_work, name)
    assert await catalogue.list_users(database.unit_of_work) == []


async def test_removing_a_user_by_name_or_id_removes_their_grants(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    bobs = await catalogue.grant_access(uow, IMAGE, "bob", Policy())

    await catalogue.remove_user(uow, "alice")

    assert [user.name for user in await catalogue.list_users(uow)] == ["bob"]
    assert await catalogue.list_grants(uow) == [bobs]
    await catalogue.remove_user(uow, bobs.user.id)
    assert await catalogue.list_grants(uow) == []


async def test_removing_an_unknown_user_is_not_found(database: InMemoryDatabase) -> None:
    with pytest.raises(NotFound, match="carol"):
        await catalogue.remove_user(database.unit_of_work, "carol")
    with pytest.raises(NotFound):
        await catalogue.remove_user(database.unit_of_work, 42)


async def test_users_with_grants_lists_everyone_even_without_grants(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    first = await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    second = await catalogue.grant_access(uow, OTHER_IMAGE, "alice", Policy(allow_home=True))

    listing = await catalogue.list_users_with_grants(uow)

    assert [(entry.user.name, entry.grants) for entry in listing] == [
        ("alice", (first, second)),
        ("bob", ()),
    ]


# ------------------------------------------------------------------------------ applications
async def test_applications_are_registered_once(database: InMemoryDatabase) -> None:
    created = await catalogue.create_application(database.unit_of_work, IMAGE)

    with pytest.raises(Exists, match="paraview"):
        await catalogue.create_application(database.unit_of_work, IMAGE)

    assert await catalogue.list_applications(database.unit_of_work) == [created]


@pytest.mark.parametrize("image", ["", "UPPER/case", "bad image", "a:b:c"])
async def test_malformed_image_names_are_refused(database: InMemoryDatabase, image: str) -> None:
    with pytest.raises(InvalidRequest):
        await catalogue.create_application(database.unit_of_work, image)
    assert await catalogue.list_applications(database.unit_of_work) == []


async def test_removing_an_application_removes_its_grants_only(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    kept = await catalogue.grant_access(uow, OTHER_IMAGE, "alice", Policy())

    await catalogue.remove_application(uow, IMAGE)

    assert [app.image for app in await catalogue.list_applications(uow)] == [OTHER_IMAGE]
    assert await catalogue.list_grants(uow) == [kept]
    with pytest.raises(NotFound, match="paraview"):
        await catalogue.remove_application(uow, IMAGE)


async def test_verify_image_asks_the_engine() -> None:
    runtime = InMemoryRuntime()
    runtime.add_image(IMAGE)

    await catalogue.verify_image(runtime, IMAGE)
    with pytest.raises(NotFound, match="not on the Docker engine"):
        await catalogue.verify_image(runtime, OTHER_IMAGE)
    runtime.available = False
    with pytest.raises(Unavailable):
        await catalogue.verify_image(runtime, IMAGE)


# ------------------------------------------------------------------------------ grants
async def test_granting_the_same_policy_twice_gives_the_same_mapping_id(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    policy = Policy(allow_home=True, volume=Volume.parse("/data:/data:ro"), app_license="L")

    first = await catalogue.grant_access(uow, IMAGE, "alice", policy, volumes=DATA_VOLUMES)
    again = await catalogue.grant_access(
        uow, IMAGE, "alice", dataclasses.replace(policy), volumes=DATA_VOLUMES
    )
    other = await catalogue.grant_access(uow, IMAGE, "alice", Policy())

    assert again.mapping_id == first.mapping_id
    assert other.mapping_id != first.mapping_id
    assert len(first.mapping_id) == 32
    int(first.mapping_id, 16)
    assert first.policy == policy
    assert (first.user.name, first.application.image) == ("alice", IMAGE)
    assert await catalogue.get_grant(uow, first.mapping_id) == first


async def test_grants_can_name_users_and_applications_by_id(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    by_name = await catalogue.grant_access(uow, IMAGE, "bob", Policy())

    by_id = await catalogue.grant_access(uow, by_name.application.id, by_name.user.id, Policy())

    assert by_id == by_name


async def test_granting_to_unknown_users_or_images_changes_nothing(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    commits = populated.commits

    with pytest.raises(NotFound, match="carol"):
        await catalogue.grant_access(uow, IMAGE, "carol", Policy())
    with pytest.raises(NotFound, match="unknown/image"):
        await catalogue.grant_access(uow, "unknown/image", "alice", Policy())

    assert populated.commits == commits
    assert await catalogue.list_grants(uow) == []


async def test_revoking_one_policy_keeps_the_others(populated: InMemoryDatabase) -> None:
    uow = populated.unit_of_work
    home = await catalogue.grant_access(uow, IMAGE, "alice", Policy(allow_home=True))
    view = await catalogue.grant_access(uow, IMAGE, "alice", Policy(allow_view=True))

    assert await catalogue.revoke_access(uow, IMAGE, "alice", Policy(allow_home=True)) == 1

    assert await catalogue.list_grants(uow) == [view]
    with pytest.raises(NotFound, match="no grant"):
        await catalogue.revoke_access(uow, IMAGE, "alice", Policy(allow_home=True))
    with pytest.raises(NotFound):
        await catalogue.get_grant(uow, home.mapping_id)


async def test_revoking_all_policies_counts_what_went(populated: InMemoryDatabase) -> None:
    uow = populated.unit_of_work
    await catalogue.grant_access(uow, IMAGE, "alice", Policy(allow_home=True))
    await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    others = await catalogue.grant_access(uow, OTHER_IMAGE, "alice", Policy())

    assert await catalogue.revoke_access(uow, IMAGE, "alice", catalogue.ALL_POLICIES) == 2
    assert await catalogue.revoke_access(uow, IMAGE, "alice", catalogue.ALL_POLICIES) == 0
    assert await catalogue.list_grants(uow) == [others]


async def test_a_hub_group_is_granted_and_revoked_as_a_user_is(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    staff = catalogue.HubGroup("staff")
    home = await catalogue.grant_access(uow, IMAGE, staff, Policy(allow_home=True))
    assert await catalogue.grant_access(uow, IMAGE, staff, Policy(allow_home=True)) == home
    view = await catalogue.grant_access(uow, IMAGE, staff, Policy(allow_view=True))
    others = await catalogue.grant_access(uow, OTHER_IMAGE, staff, Policy())
    alices = await catalogue.grant_access(uow, IMAGE, "alice", Policy(allow_home=True))
    assert (home.group, home.application.image) == ("staff", IMAGE)

    assert await catalogue.revoke_access(uow, IMAGE, staff, Policy(allow_home=True)) == 1
    with pytest.raises(NotFound, match="group 'staff' has no grant"):
        await catalogue.revoke_access(uow, IMAGE, staff, Policy(allow_home=True))
    assert await catalogue.list_group_grants(uow, "staff") == [view, others]
    assert await catalogue.revoke_access(uow, IMAGE, staff, catalogue.ALL_POLICIES) == 1
    assert await catalogue.revoke_access(uow, IMAGE, staff, catalogue.ALL_POLICIES) == 0
    assert await catalogue.list_group_grants(uow) == [others]
    assert await catalogue.list_grants(uow) == [alices]


async def test_a_malformed_group_or_unknown_image_writes_nothing(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    commits = populated.commits
    with pytest.raises(InvalidRequest):
        await catalogue.grant_access(uow, IMAGE, catalogue.HubGroup("a b/c"), Policy())
    with pytest.raises(InvalidRequest):
        await catalogue.revoke_access(uow, IMAGE, catalogue.HubGroup(""), "all")
    with pytest.raises(NotFound):
        await catalogue.grant_access(uow, "x/y", catalogue.HubGroup("staff"), Policy())
    assert populated.commits == commits
    assert await catalogue.list_group_grants(uow) == []


async def test_revoking_for_unknown_users_or_images_is_not_found(
    populated: InMemoryDatabase,
) -> None:
    with pytest.raises(NotFound):
        await catalogue.revoke_access(populated.unit_of_work, IMAGE, "carol", "all")
    with pytest.raises(NotFound):
        await catalogue.revoke_access(populated.unit_of_work, "x/y", "alice", Policy())


async def test_grants_are_revoked_and_listed_by_mapping_id_and_user(
    populated: InMemoryDatabase,
) -> None:
    uow = populated.unit_of_work
    alices = await catalogue.grant_access(uow, IMAGE, "alice", Policy())
    bobs = await catalogue.grant_access(uow, IMAGE, "bob", Policy())

    assert await catalogue.list_grants(uow, alices.user.id) == [alices]
    assert await catalogue.list_grants(uow) == [alices, bobs]

    await catalogue.revoke_grant(uow, alices.mapping_id)

    assert await catalogue.list_grants(uow) == [bobs]
    with pytest.raises(NotFound):
        await catalogue.revoke_grant(uow, alices.mapping_id)
