"""The access service: admin decisions, sign-in provisioning, demo policies, PKCE."""

from __future__ import annotations

from typing import Any

import pytest

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import Policy, Volume, VolumeMode
from remoteappmanager.domain.oauth import new_pkce_verifier, pkce_challenge
from remoteappmanager.ports.identity import HubUser
from remoteappmanager.services.access import AccessService, demo_policy

ACCESS = frozenset({"access:services!service=remoteapp"})


def _hub_user(name: str, **fields: Any) -> HubUser:
    """A user model as the hub gives it for a token that may use this service."""
    return HubUser(name, scopes=fields.pop("scopes", ACCESS), **fields)


DEMO = {
    "demo/webapp:latest": {"allow_home": True},
    "demo/vncapp:1": {"volume": "/data:/data:ro", "app_license": "ABC"},
}


async def _users(database: InMemoryDatabase) -> list[str]:
    async with database.unit_of_work() as uow:
        return [user.name for user in await uow.users.list()]


async def _grants(database: InMemoryDatabase, name: str) -> dict[str, Policy]:
    async with database.unit_of_work() as uow:
        user = await uow.users.get_by_name(name)
        return {g.application.image: g.policy for g in await uow.grants.list_for_user(user.id)}


# ------------------------------------------------------------------------------ admin
def test_hub_admins_are_admins() -> None:
    access = AccessService(InMemoryDatabase().unit_of_work)
    assert access.identify(_hub_user("root", admin=True)).admin
    assert not access.identify(_hub_user("alice")).admin


def test_members_of_the_admin_group_are_admins() -> None:
    access = AccessService(InMemoryDatabase().unit_of_work, admin_group="ops")
    assert access.identify(_hub_user("bob", groups=frozenset({"ops", "x"}))).admin
    assert not access.identify(_hub_user("carol", groups=frozenset({"x"}))).admin


def test_without_an_admin_group_groups_do_not_matter() -> None:
    access = AccessService(InMemoryDatabase().unit_of_work, admin_group=None)
    assert not access.identify(_hub_user("bob", groups=frozenset({""}))).admin


# ------------------------------------------------------------------------------ sign-in
async def test_unknown_user_is_not_created_by_default() -> None:
    database = InMemoryDatabase()
    access = AccessService(database.unit_of_work, demo_applications=DEMO)
    user = await access.sign_in(_hub_user("alice"))
    assert user.name == "alice"
    assert await _users(database) == []


async def test_auto_user_creation_creates_and_grants_the_demo_applications() -> None:
    database = InMemoryDatabase()
    access = AccessService(database.unit_of_work, auto_user_creation=True, demo_applications=DEMO)
    await access.sign_in(_hub_user("alice"))
    assert await _users(database) == ["alice"]
    assert await _grants(database, "alice") == {
        "demo/webapp:latest": Policy(allow_home=True),
        "demo/vncapp:1": Policy(app_license="ABC", volume=Volume("/data", "/data", VolumeMode.RO)),
    }


async def test_sign_in_is_idempotent() -> None:
    database = InMemoryDatabase()
    access = AccessService(database.unit_of_work, auto_user_creation=True, demo_applications=DEMO)
    for _ in range(3):
        await access.sign_in(_hub_user("alice"))
    assert await _users(database) == ["alice"]
    async with database.unit_of_work() as uow:
        assert len(await uow.grants.list_all()) == 2
        assert len(await uow.applications.list()) == 2


async def test_known_users_get_demo_grants_without_auto_creation() -> None:
    database = InMemoryDatabase()
    async with database.unit_of_work() as uow:
        await uow.users.add("alice")
        await uow.applications.add("demo/webapp:latest")
        await uow.commit()
    access = AccessService(database.unit_of_work, demo_applications=DEMO)
    await access.sign_in(_hub_user("alice"))
    assert set(await _grants(database, "alice")) == set(DEMO)
    await access.sign_in(_hub_user("bob"))
    assert await _users(database) == ["alice"]


async def test_without_provisioning_sign_in_does_not_touch_the_database() -> None:
    database = InMemoryDatabase()
    access = AccessService(database.unit_of_work)
    user = await access.sign_in(_hub_user("root", admin=True))
    assert user.admin
    assert database.commits == 0


async def test_hub_names_we_cannot_store_are_refused() -> None:
    access = AccessService(InMemoryDatabase().unit_of_work, auto_user_creation=True)
    with pytest.raises(InvalidRequest):
        await access.sign_in(_hub_user(" padded "))


# ------------------------------------------------------------------------------ demo policies
def test_demo_policy_options() -> None:
    assert demo_policy("i", {}) == Policy()
    assert demo_policy("i", {"allow_view": True, "allow_startup_data": True}) == Policy(
        allow_view=True, allow_startup_data=True
    )
    assert demo_policy("i", {"volume": "/a:/b:rw"}).volume == Volume("/a", "/b", VolumeMode.RW)


@pytest.mark.parametrize(
    "overrides",
    [
        {"allow_home": "yes"},
        {"volume": "/a:/b"},
        {"volume": "relative:/b:ro"},
        {"app_license": 3},
        {"allow_everything": True},
    ],
)
def test_bad_demo_policies_are_refused_naming_the_image(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match="demo/app"):
        AccessService(InMemoryDatabase().unit_of_work, demo_applications={"demo/app": overrides})


def test_bad_demo_image_names_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        AccessService(InMemoryDatabase().unit_of_work, demo_applications={"Not An Image": {}})


# ------------------------------------------------------------------------------ PKCE
def test_pkce_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_verifiers_are_long_and_fresh() -> None:
    verifiers = {new_pkce_verifier() for _ in range(100)}
    assert len(verifiers) == 100
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
