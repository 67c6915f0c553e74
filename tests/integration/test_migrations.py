"""The migrations on real SQLite and PostgreSQL: schema, models agreement, enforced constraints."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.db.engine import create_engine
from remoteappmanager.adapters.db.models import metadata
from remoteappmanager.adapters.db.repositories import SqlDatabase
from remoteappmanager.adapters.db.shared_state import (
    SqlControlStates,
    SqlLoginSessionRecords,
    SqlStartClaims,
)
from remoteappmanager.domain.audit import EventQuery, NewEvent
from remoteappmanager.domain.errors import Exists, Unavailable
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.shares import ControlState, ShareKind, ShareMode
from remoteappmanager.ports.login_sessions import StoredLoginSession
from tests.support.database import execute
from tests.support.services import REPO, PostgresCluster

TABLES = {
    "user",
    "application",
    "application_policy",
    "accounting",
    "catalogue_version",
    "session_activity",
    "session_stop",
    "event",
    "login_session",
    "start_claim",
    "session_share",
    "group_grant",
    "share_control",
}


async def _inspect(url: str, look: object) -> object:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


GRANT_ID = "b" * 32


async def _upgrade_seeded(
    url: str,
    revision: str,
    *,
    policy: str = "allow_home",
    policy_values: str = "true",
    catalogue_version: int | None = None,
) -> None:
    """Take ``url`` to ``revision``, write there the rows every upgrade test starts from
    (user alice, application app:1, one policy ``policy`` = ``policy_values``, the grant
    ``GRANT_ID`` of it to alice, and the catalogue's version when given), upgrade to head and
    check that they are all still there."""
    await migrate.upgrade(url, revision)
    await execute(url, "INSERT INTO \"user\" (name) VALUES ('alice')")
    await execute(url, "INSERT INTO application (image) VALUES ('app:1')")
    await execute(url, f"INSERT INTO application_policy ({policy}) VALUES ({policy_values})")
    await execute(
        url,
        "INSERT INTO accounting (id, user_id, application_id, application_policy_id) "
        f"VALUES ('{GRANT_ID}', 1, 1, 1)",
    )
    if catalogue_version is not None:
        await execute(url, f"UPDATE catalogue_version SET version = {catalogue_version}")

    assert (await migrate.upgrade(url)).at_head

    assert await execute(url, 'SELECT name FROM "user"') == [("alice",)]
    assert await execute(url, "SELECT image FROM application") == [("app:1",)]
    assert await execute(url, "SELECT id, user_id FROM accounting") == [(GRANT_ID, 1)]
    if catalogue_version is not None:
        assert await execute(url, "SELECT version FROM catalogue_version") == [(catalogue_version,)]


# ------------------------------------------------------------------------------ schema
async def test_upgrade_takes_an_empty_database_to_head(empty_database_url: str) -> None:
    before = await migrate.status(empty_database_url)
    assert before.current is None
    assert not before.at_head
    assert await migrate.current(empty_database_url) is None

    after = await migrate.upgrade(empty_database_url)

    assert after.current == migrate.head() == "0009"
    assert after.at_head
    assert await migrate.check(empty_database_url)
    assert await _inspect(empty_database_url, _table_names) == TABLES | {"alembic_version"}


async def test_models_and_migrations_agree(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    assert await _inspect(empty_database_url, _differences) == []


async def test_downgrade_to_base_and_back_again(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    await execute(empty_database_url, "INSERT INTO \"user\" (name) VALUES ('alice')")

    down = await migrate.downgrade(empty_database_url, "base")

    assert down.current is None
    assert not (await _inspect(empty_database_url, _table_names)) & TABLES  # type: ignore[operator]
    up = await migrate.upgrade(empty_database_url)
    assert up.at_head
    assert await _inspect(empty_database_url, _differences) == []
    assert await execute(empty_database_url, 'SELECT count(*) FROM "user"') == [(0,)]


@pytest.mark.parametrize("revision", ["0001", "0002", "0003", "0004", "0005", "0006", "0007"])
async def test_a_grant_written_at_any_revision_survives_upgrade_and_downgrade(
    empty_database_url: str, revision: str
) -> None:
    await _upgrade_seeded(empty_database_url, revision)

    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
    finally:
        await database.close()
    assert (grant.mapping_id, grant.user.name, grant.application.image) == (
        GRANT_ID,
        "alice",
        "app:1",
    )
    assert grant.policy == Policy(allow_home=True)
    assert (await migrate.downgrade(empty_database_url, revision)).current == revision
    assert await execute(empty_database_url, "SELECT id, user_id FROM accounting") == [
        (GRANT_ID, 1)
    ]


async def test_the_catalogue_version_keeps_existing_rows_and_starts_at_zero(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(empty_database_url, "0001")

    assert await execute(empty_database_url, "SELECT id, version FROM catalogue_version") == [
        (1, 0)
    ]
    # The service reads the upgraded catalogue as it is, and a change moves the version.
    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
            assert (grant.user.name, grant.application.image) == ("alice", "app:1")
            assert await work.catalogue_version() == 0
            await work.users.add("bob")
            await work.commit()
        async with database.unit_of_work() as work:
            assert await work.catalogue_version() == 1
    finally:
        await database.close()
    # A second row is refused: there is one version.
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url, "INSERT INTO catalogue_version (id, version) VALUES (2, 0)"
        )

    down = await migrate.downgrade(empty_database_url, "0001")
    assert down.current == "0001"
    assert await execute(empty_database_url, 'SELECT count(*) FROM "user"') == [(2,)]


async def test_placement_keeps_every_policy_and_grant_and_starts_empty(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(
        empty_database_url,
        "0006",
        policy="allow_home, volume_source, volume_target, volume_mode",
        policy_values="true, '/srv/data', '/data', 'ro'",
    )

    assert await execute(
        empty_database_url,
        "SELECT id, allow_home, volume_source, placement FROM application_policy",
    ) == [(1, True, "/srv/data", None)]
    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
            assert grant.mapping_id == GRANT_ID
            assert grant.policy.placement == ()
            assert grant.policy.allow_home
            # The same policy with a placement is another policy; the old grant stays.
            placed = replace(grant.policy, placement=("node.labels.gpu==true",))
            other = await work.grants.grant(grant.user, grant.application, placed)
            await work.commit()
        async with database.unit_of_work() as work:
            assert (await work.grants.get(other.mapping_id)).policy == placed
            assert len(await work.grants.list_all()) == 2
    finally:
        await database.close()

    down = await migrate.downgrade(empty_database_url, "0006")
    assert down.current == "0006"
    assert await execute(empty_database_url, "SELECT count(*) FROM accounting") == [(2,)]


async def test_limits_and_timeouts_keep_existing_policies_and_grants(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(
        empty_database_url,
        "0002",
        policy="app_license, allow_home",
        policy_values="'LIC', true",
    )

    # The old policy is there, with no limits of its own and no timeouts.
    assert await execute(
        empty_database_url,
        "SELECT app_license, memory_limit_mb, cpu_limit, pids_limit, idle_timeout_s, "
        "max_lifetime_s FROM application_policy",
    ) == [("LIC", None, None, None, None, None)]
    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
            assert grant.mapping_id == GRANT_ID
            assert grant.policy == Policy(app_license="LIC", allow_home=True)
            # The same content with a limit is another policy, and another grant.
            limited = await work.grants.grant(
                grant.user, grant.application, replace(grant.policy, memory_limit_mb=128)
            )
            assert limited.mapping_id != grant.mapping_id
            assert limited.policy.memory_limit_mb == 128
            await work.commit()
    finally:
        await database.close()

    down = await migrate.downgrade(empty_database_url, "0002")
    assert down.current == "0002"
    rows = await execute(empty_database_url, "SELECT id FROM accounting")
    assert sorted(rows) == sorted([(GRANT_ID,), (limited.mapping_id,)])


async def test_the_audit_trail_arrives_empty_and_keeps_the_catalogue(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(empty_database_url, "0003", catalogue_version=7)

    assert await execute(empty_database_url, "SELECT count(*) FROM event") == [(0,)]
    database = SqlDatabase(empty_database_url)
    try:
        events = database.events()
        await events.append([NewEvent.of(datetime.now(UTC), "alice", "login", "alice")])
        page = await events.query(EventQuery())
        assert [(e.actor, e.action.value) for e in page.events] == [("alice", "login")]
    finally:
        await database.close()

    down = await migrate.downgrade(empty_database_url, "0003")
    assert down.current == "0003"
    assert "event" not in await _inspect(empty_database_url, _table_names)  # type: ignore[operator]
    assert await execute(empty_database_url, 'SELECT name FROM "user"') == [("alice",)]


async def test_shared_login_sessions_and_claims_arrive_empty_and_keep_the_catalogue(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(empty_database_url, "0005", catalogue_version=7)

    assert await execute(empty_database_url, "SELECT count(*) FROM login_session") == [(0,)]
    assert await execute(empty_database_url, "SELECT count(*) FROM start_claim") == [(0,)]
    # The new tables work at once, beside the catalogue read as it was.
    database = SqlDatabase(empty_database_url)
    records = SqlLoginSessionRecords(database.engine, database.location)
    claims = SqlStartClaims(database.engine, database.location)
    try:
        stored = StoredLoginSession("k" * 64, "alice", b"sealed", 100.0, 100.0)
        assert await records.add(stored, keep_per_user=5) == []
        assert await records.get("k" * 64) == stored
        assert await claims.claim("alice", GRANT_ID, holder="one", now=1.0, until=50.0)
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
            assert grant.user.name == "alice"
    finally:
        await database.close()
    # Two rows for one session key, or two claims on one grant, are refused.
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO login_session (key, user_name, sealed_token, created, last_seen) "
            "VALUES ('" + "k" * 64 + "', 'bob', 'x', 1, 1)",
        )
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO start_claim (user_name, mapping_id, holder, until) "
            "VALUES ('alice', '" + GRANT_ID + "', 'two', 60)",
        )

    down = await migrate.downgrade(empty_database_url, "0005")
    assert down.current == "0005"
    assert await execute(empty_database_url, "SELECT id FROM accounting") == [(GRANT_ID,)]
    tables = await _inspect(empty_database_url, _table_names)
    assert isinstance(tables, set)
    assert not tables & {"login_session", "start_claim"}


async def test_session_shares_arrive_empty_and_keep_the_catalogue(
    empty_database_url: str,
) -> None:
    await _upgrade_seeded(
        empty_database_url,
        "0004",
        policy="allow_view",
        policy_values="true",
        catalogue_version=7,
    )

    assert await execute(empty_database_url, "SELECT count(*) FROM session_share") == [(0,)]
    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            (grant,) = await work.grants.list_all()
            assert grant.policy.allow_view
            share = await work.shares.put(
                "u" * 26, ShareKind.USER, "bob", ShareMode.VIEW, datetime(2026, 12, 4, tzinfo=UTC)
            )
            await work.commit()
        async with database.unit_of_work() as work:
            assert list(await work.shares.list_for("u" * 26)) == [share]
            assert await work.catalogue_version() == 7
    finally:
        await database.close()
    # The database itself refuses a share that names nobody, or a mode it does not know.
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO session_share (url_id, kind, subject, mode, created_at) "
            "VALUES ('x', 'user', '', 'view', CURRENT_TIMESTAMP)",
        )
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO session_share (url_id, kind, subject, mode, created_at) "
            "VALUES ('x', 'link', '', 'drive', CURRENT_TIMESTAMP)",
        )

    down = await migrate.downgrade(empty_database_url, "0004")
    assert down.current == "0004"
    tables = await _inspect(empty_database_url, _table_names)
    assert "session_share" not in tables  # type: ignore[operator]
    assert await execute(empty_database_url, "SELECT count(*) FROM accounting") == [(1,)]


async def test_constraints_carry_the_naming_convention(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    def names(connection: Connection) -> dict[str, set[str]]:
        inspector = inspect(connection)
        return {
            "unique": {
                constraint["name"] or ""
                for table in TABLES
                for constraint in inspector.get_unique_constraints(table)
            },
            "check": {
                constraint["name"] or ""
                for constraint in inspector.get_check_constraints("application_policy")
            },
            "foreign": {
                constraint["name"] or "" for constraint in inspector.get_foreign_keys("accounting")
            },
        }

    assert await _inspect(empty_database_url, names) == {
        "unique": {
            "uq_user_name",
            "uq_application_image",
            "uq_accounting_user_id_application_id_application_policy_id",
            "uq_session_share_url_id_kind_subject",
            "uq_group_grant_group_name_application_id_application_policy_id",
        },
        "check": {
            "ck_application_policy_volume_mode",
            "ck_application_policy_volume_all_or_none",
        },
        "foreign": {
            "fk_accounting_user_id_user",
            "fk_accounting_application_id_application",
            "fk_accounting_application_policy_id_application_policy",
        },
    }


# ------------------------------------------------------------------------------ constraints
_POLICY = (
    "INSERT INTO application_policy (id, allow_home, allow_view, allow_common, "
    "allow_startup_data, volume_source, volume_target, volume_mode) "
)


@pytest.mark.parametrize(
    "values",
    [
        "VALUES (1, false, false, false, false, '/a', '/b', 'rx')",
        "VALUES (1, false, false, false, false, '/a', NULL, NULL)",
        "VALUES (1, false, false, false, false, NULL, NULL, 'ro')",
        "VALUES (1, false, false, false, false, '/a', '/b', NULL)",
    ],
)
async def test_malformed_volumes_are_refused_by_the_database(
    empty_database_url: str, values: str
) -> None:
    await migrate.upgrade(empty_database_url)

    with pytest.raises(IntegrityError):
        await execute(empty_database_url, _POLICY + values)

    await execute(
        empty_database_url, _POLICY + "VALUES (1, true, false, false, false, NULL, NULL, NULL)"
    )
    await execute(
        empty_database_url, _POLICY + "VALUES (2, true, false, false, false, '/a', '/b', 'rw')"
    )


async def _one_grant(url: str) -> None:
    await execute(
        url,
        "INSERT INTO \"user\" (id, name) VALUES (1, 'alice'), (2, 'bob')",
        "INSERT INTO application (id, image) VALUES (1, 'simphony/app:1')",
        "INSERT INTO application_policy (id) VALUES (1)",
        "INSERT INTO accounting (id, user_id, application_id, application_policy_id) "
        "VALUES ('" + "a" * 32 + "', 1, 1, 1), ('" + "b" * 32 + "', 2, 1, 1)",
    )


@pytest.mark.parametrize(
    ("parent", "remaining"),
    [('"user" WHERE id = 1', 1), ("application", 0), ("application_policy", 0)],
)
async def test_deleting_a_parent_cascades_to_grants(
    empty_database_url: str, parent: str, remaining: int
) -> None:
    await migrate.upgrade(empty_database_url)
    await _one_grant(empty_database_url)

    await execute(empty_database_url, f"DELETE FROM {parent}")

    assert await execute(empty_database_url, "SELECT count(*) FROM accounting") == [(remaining,)]


async def test_the_same_grant_cannot_be_recorded_twice(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    await _one_grant(empty_database_url)

    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO accounting (id, user_id, application_id, application_policy_id) "
            "VALUES ('" + "c" * 32 + "', 1, 1, 1)",
        )
    with pytest.raises(IntegrityError):
        await execute(empty_database_url, "INSERT INTO \"user\" (name) VALUES ('alice')")


async def test_grants_must_point_at_existing_rows(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO accounting (id, user_id, application_id, application_policy_id) "
            "VALUES ('" + "d" * 32 + "', 7, 7, 7)",
        )


# ------------------------------------------------------------------------------ initialise
async def test_initialise_refuses_a_database_that_holds_the_schema(
    empty_database_url: str,
) -> None:
    assert (await migrate.initialise(empty_database_url)).at_head
    await execute(empty_database_url, "INSERT INTO \"user\" (name) VALUES ('alice')")

    with pytest.raises(Exists, match="refusing to overwrite"):
        await migrate.initialise(empty_database_url)

    assert await execute(empty_database_url, 'SELECT name FROM "user"') == [("alice",)]


async def test_initialise_refuses_a_sqlite_file_with_foreign_tables(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    await execute(url, "CREATE TABLE notes (body TEXT)")

    with pytest.raises(Exists, match="notes"):
        await migrate.initialise(url)


async def test_looking_at_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"

    status = await migrate.status(f"sqlite+aiosqlite:///{path}")

    assert (status.exists, status.current, status.at_head) == (False, None, False)
    assert not path.exists()


async def test_a_failed_initialise_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / "remote.db"

    with pytest.raises(Unavailable, match="does not exist"):
        await migrate.initialise(f"sqlite+aiosqlite:///{path}")

    assert not path.parent.exists()


async def test_an_unknown_recorded_revision_is_reported(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    await execute(empty_database_url, "UPDATE alembic_version SET version_num = '9999'")

    status = await migrate.status(empty_database_url)

    assert (status.current, status.known, status.at_head) == ("9999", False, False)


# ------------------------------------------------------------------------------ failures
async def test_an_unreachable_postgresql_is_unavailable_without_the_password(
    postgres_cluster: PostgresCluster,
) -> None:
    from tests.support.services import free_port

    url = f"postgresql+asyncpg://admin:hunter2@127.0.0.1:{free_port()}/remoteapp"

    with pytest.raises(Unavailable) as raised:
        await migrate.status(url)

    message = str(raised.value)
    assert "unreachable" in message
    assert "connection refused" in message
    assert "hunter2" not in message


async def test_a_missing_postgresql_database_is_unavailable(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.url.rsplit("/", 1)[0] + "/no_such_database"

    with pytest.raises(Unavailable, match='"no_such_database" does not exist'):
        await migrate.upgrade(url)


# ------------------------------------------------------------------------------ packaging
def test_the_scripts_come_from_the_source_checkout_here() -> None:
    assert migrate.scripts_dir() == REPO / "migrations"


async def test_migrating_leaves_the_callers_logging_alone(tmp_path: Path) -> None:
    ours = logging.getLogger("remoteappmanager.test")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    await migrate.upgrade(f"sqlite+aiosqlite:///{tmp_path / 'logging.db'}")

    assert root.handlers == handlers
    assert root.level == level
    assert not ours.disabled


def test_the_developers_alembic_ini_works(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "-x", f"url={url}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    upgraded = subprocess.run(
        [*alembic, "upgrade", "head"], capture_output=True, text=True, env=env, timeout=120
    )
    checked = subprocess.run(
        [*alembic, "check"], capture_output=True, text=True, env=env, timeout=120
    )

    assert upgraded.returncode == 0, upgraded.stderr
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr


async def test_group_grants_arrive_empty_and_keep_every_grant(empty_database_url: str) -> None:
    await _upgrade_seeded(empty_database_url, "0007")

    assert await execute(empty_database_url, "SELECT count(*) FROM group_grant") == [(0,)]
    database = SqlDatabase(empty_database_url)
    try:
        async with database.unit_of_work() as work:
            app = await work.applications.get(1)
            granted = await work.grants.grant_group("physics", app, Policy(allow_home=True))
            await work.commit()
        async with database.unit_of_work() as work:
            assert [g.mapping_id for g in await work.grants.list_groups()] == [granted.mapping_id]
            assert len(await work.grants.list_all()) == 1
    finally:
        await database.close()

    down = await migrate.downgrade(empty_database_url, "0007")
    assert down.current == "0007"
    assert "group_grant" not in await _inspect(empty_database_url, _table_names)  # type: ignore[operator]
    assert await execute(empty_database_url, "SELECT id FROM accounting") == [(GRANT_ID,)]


async def test_control_states_arrive_empty_and_keep_shares_and_grants(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url, "0008")
    await execute(empty_database_url, "INSERT INTO \"user\" (name) VALUES ('alice')")
    await execute(empty_database_url, "INSERT INTO application (image) VALUES ('app:1')")
    await execute(empty_database_url, "INSERT INTO application_policy (allow_view) VALUES (true)")
    await execute(
        empty_database_url,
        "INSERT INTO accounting (id, user_id, application_id, application_policy_id) "
        "VALUES ('" + "d" * 32 + "', 1, 1, 1)",
    )
    await execute(
        empty_database_url,
        "INSERT INTO session_share (url_id, kind, subject, mode, created_at) "
        "VALUES ('" + "u" * 26 + "', 'user', 'bob', 'view', '2026-12-04 10:00:00')",
    )

    assert (await migrate.upgrade(empty_database_url)).at_head

    assert await execute(empty_database_url, "SELECT id, user_id FROM accounting") == [
        ("d" * 32, 1)
    ]
    assert await execute(empty_database_url, "SELECT url_id, subject FROM session_share") == [
        ("u" * 26, "bob")
    ]
    assert await execute(empty_database_url, "SELECT count(*) FROM share_control") == [(0,)]
    database = SqlDatabase(empty_database_url)
    try:
        controls = SqlControlStates(database.engine, database.location)
        given = ControlState(controller="bob", requests=("carol",))
        assert await controls.put("u" * 26, given, version=0)
        assert await controls.get("u" * 26) == (1, given)
        async with database.unit_of_work() as work:
            (share,) = await work.shares.list_for("u" * 26)
            assert (share.subject, share.mode) == ("bob", ShareMode.VIEW)
    finally:
        await database.close()
    # One state per session.
    with pytest.raises(IntegrityError):
        await execute(
            empty_database_url,
            "INSERT INTO share_control (url_id, version, owner_holds, everyone, requests) "
            "VALUES ('" + "u" * 26 + "', 5, false, true, '[]')",
        )

    down = await migrate.downgrade(empty_database_url, "0008")
    assert down.current == "0008"
    assert "share_control" not in await _inspect(empty_database_url, _table_names)  # type: ignore[operator]
    assert await execute(empty_database_url, "SELECT subject FROM session_share") == [("bob",)]
