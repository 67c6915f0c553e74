"""`remoteappdb` end to end through click, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from remoteappmanager import bootstrap
from remoteappmanager.adapters.db import migrate
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.cli.remoteappdb import main
from remoteappmanager.domain.models import Policy, Volume
from tests.support.database import (
    CURRENT_REVISION,
    NEXT_REVISION,
    cli_url,
    execute,
    migrations_one_step_ahead,
)
from tests.support.services import PostgresCluster, free_port

IMAGE = "simphony/paraview:5.9"
ERROR = "remoteappdb: error: "


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("REMOTEAPP_", "CONFIGPROXY_", "DOCKER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke remoteappdb; a Python exception other than an exit is a test failure."""
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(*args: str, code: int = 1, env: dict[str, str] | None = None) -> str:
    """The one stderr line of a refused command (asserting the exit code and no stdout)."""
    result = run(*args, env=env)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR)
    return lines[0].removeprefix(ERROR)


@pytest.fixture
def db(empty_database_url: str) -> str:
    """An initialised database, named as an operator would type it."""
    url = cli_url(empty_database_url)
    assert "created the" in ok(url, "init")
    return url


# ------------------------------------------------------------------------------ round trip
def test_the_full_round_trip(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", "/srv")
    user_id = ok(db, "user", "create", "alice").strip()
    assert user_id.isdigit()
    assert ok(db, "app", "create", IMAGE, "--no-verify").strip().isdigit()

    grant = ["app", "grant", IMAGE, "alice", "--allow-home", "--volume", "/srv/d:/data:ro"]
    mapping_id = ok(db, *grant).strip()
    assert re.fullmatch(r"[0-9a-f]{32}", mapping_id)
    assert ok(db, *grant).strip() == mapping_id
    other_id = ok(db, "app", "grant", IMAGE, "alice").strip()
    assert other_id != mapping_id

    table = ok(db, "user", "list", "--show-apps")
    assert table.splitlines()[0].split() == ["ID", "NAME", "IMAGE", "MAPPING_ID", "POLICY"]
    rows = [line.split() for line in table.splitlines()[2:]]
    assert [user_id, "alice", IMAGE, mapping_id, "home,volume=/srv/d:/data:ro"] in rows
    plain = ok(db, "user", "list", "--show-apps", "--no-decoration").splitlines()
    assert f"{user_id} alice {IMAGE} {mapping_id} home,volume=/srv/d:/data:ro" in plain
    assert f"{user_id} alice {IMAGE} {other_id} -" in plain

    assert ok(db, "app", "revoke", IMAGE, "alice", *grant[4:]) == "revoked 1 grant\n"
    assert mapping_id not in ok(db, "user", "list", "--show-apps")
    assert ok(db, "app", "revoke", IMAGE, "alice", "--revoke-all") == "revoked 1 grant\n"
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == f"{user_id} alice - - -\n"

    ok(db, "app", "remove", IMAGE)
    ok(db, "user", "remove", "alice")
    assert ok(db, "user", "list", "--no-decoration") == ""
    assert ok(db, "app", "list", "--no-decoration") == ""
    assert ok(db, "app", "list").splitlines() == ["ID  IMAGE", "--  -----"]


def test_placement_is_repeatable_and_makes_another_policy(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    plain = ok(db, "app", "grant", IMAGE, "alice").strip()
    gpu = ["--placement", "node.labels.gpu==true", "--placement", "node.role!=manager"]
    placed = ok(db, "app", "grant", IMAGE, "alice", *gpu).strip()
    assert placed != plain
    # The same constraints in another order: the same policy, the same grant.
    assert ok(db, "app", "grant", IMAGE, "alice", *gpu[2:], *gpu[:2]).strip() == placed

    listed = ok(db, "user", "list", "--show-apps", "--no-decoration").splitlines()
    assert (
        f"1 alice {IMAGE} {placed} placement=node.labels.gpu==true,placement=node.role!=manager"
        in listed
    )

    assert "is not <key>==<value>" in refused(
        db, "app", "grant", IMAGE, "alice", "--placement", "node.labels.gpu=true"
    )
    assert ok(db, "app", "revoke", IMAGE, "alice", *gpu) == "revoked 1 grant\n"
    assert placed not in ok(db, "user", "list", "--show-apps")
    assert plain in ok(db, "user", "list", "--show-apps")


def test_on_a_swarm_only_shared_storage_is_granted(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMOTEAPP_ENGINE", "swarm")
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", "/srv,/scratch")
    monkeypatch.setenv("REMOTEAPP_SWARM_SHARED_ROOTS", "/srv")
    monkeypatch.setenv("REMOTEAPP_WORKSPACE_ROOT", "/srv/workspaces")
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")

    local = ["app", "grant", IMAGE, "alice", "--volume", "/scratch/d:/data:ro"]
    assert "not on storage that every swarm node shares" in refused(db, *local)
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"
    assert ok(db, "app", "grant", IMAGE, "alice", "--volume", "/srv/d:/data:ro").strip()


def test_limits_and_timeouts_make_policies_of_their_own(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    limits = ["--memory-limit-mb", "128", "--cpu-limit", "0.5", "--pids-limit", "64"]
    timeouts = ["--idle-timeout", "600", "--max-lifetime", "3600"]
    plain = ok(db, "app", "grant", IMAGE, "alice").strip()
    limited = ok(db, "app", "grant", IMAGE, "alice", *limits, *timeouts).strip()
    assert limited != plain
    assert ok(db, "app", "grant", IMAGE, "alice", *limits, *timeouts).strip() == limited

    rows = ok(db, "user", "list", "--show-apps", "--no-decoration").splitlines()
    assert (
        f"1 alice {IMAGE} {limited} memory_mb=128,cpus=0.5,pids=64,idle_s=600,lifetime_s=3600"
    ) in rows
    assert f"1 alice {IMAGE} {plain} -" in rows

    # Out of bounds: a usage error naming the option, nothing written.
    for bad in (["--memory-limit-mb", "5"], ["--cpu-limit", "0"], ["--idle-timeout", "-1"]):
        result = run(db, "app", "grant", IMAGE, "alice", *bad)
        assert result.exit_code == 2
        assert f"Invalid value for '{bad[0]}'" in result.stderr
    assert len(ok(db, "user", "list", "--show-apps", "--no-decoration").splitlines()) == 2
    assert ok(db, "app", "revoke", IMAGE, "alice", *limits, *timeouts) == "revoked 1 grant\n"
    assert "--revoke-all cannot" in refused(
        db, "app", "revoke", IMAGE, "alice", "--revoke-all", "--pids-limit", "3", code=2
    )


def test_changes_are_audited_as_the_os_account_without_the_licence(
    db: str, empty_database_url: str
) -> None:
    account = pwd.getpwuid(os.getuid()).pw_name
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    mapping_id = ok(db, "app", "grant", IMAGE, "alice", "--app-license", "LIC-7f3a-secret").strip()
    ok(db, "app", "revoke", IMAGE, "alice", "--revoke-all")
    ok(db, "app", "remove", IMAGE)
    ok(db, "user", "remove", "alice")
    refused(db, "user", "remove", "alice")  # a failed change records nothing

    rows = asyncio.run(
        execute(empty_database_url, "SELECT actor, action, target, detail FROM event ORDER BY id")
    )

    assert [(actor, action, target) for actor, action, target, _ in rows] == [
        (account, "user_create", "alice"),
        (account, "app_create", IMAGE),
        (account, "grant", mapping_id),
        (account, "revoke", mapping_id),
        (account, "app_delete", IMAGE),
        (account, "user_delete", "alice"),
    ]
    assert all("LIC-7f3a" not in str(detail) for *_, detail in rows)


def test_lists_are_tables_or_plain_lines(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "user", "create", "bob")
    ok(db, "app", "create", IMAGE, "--no-verify")

    assert ok(db, "user", "list").splitlines()[2:] == ["1   alice", "2   bob"]
    assert ok(db, "user", "list", "--no-decoration").splitlines() == ["1 alice", "2 bob"]
    assert ok(db, "app", "list", "--no-decoration").splitlines() == [f"1 {IMAGE}"]


def test_removing_a_user_removes_their_grants(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    mapping_id = ok(db, "app", "grant", IMAGE, "alice").strip()

    ok(db, "user", "remove", "alice")
    ok(db, "user", "create", "alice")

    assert mapping_id not in ok(db, "user", "list", "--show-apps")


# ------------------------------------------------------------------------------ naming the database
def test_the_database_defaults_to_the_settings(tmp_path: Path) -> None:
    env = {"REMOTEAPP_DATABASE_URL": str(tmp_path / "from-env.db")}

    assert run("init", env=env).exit_code == 0
    assert run("user", "create", "alice", env=env).exit_code == 0

    assert (tmp_path / "from-env.db").exists()
    assert ok(str(tmp_path / "from-env.db"), "user", "list", "--no-decoration") == "1 alice\n"


def test_without_anything_the_database_is_in_the_working_directory(tmp_path: Path) -> None:
    ok("init")
    ok("user", "create", "alice")

    assert (tmp_path / "remoteappmanager.db").exists()


def test_sqlite_urls_work_as_well_as_paths(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'url.db'}"
    ok(url, "init")
    ok(url, "user", "create", "alice")

    assert ok(str(tmp_path / "url.db"), "user", "list", "--no-decoration") == "1 alice\n"


def test_help_shows_the_optional_database() -> None:
    assert ok("--help").startswith("Usage: remoteappdb [DB_URL] [OPTIONS] COMMAND")


# ------------------------------------------------------------------------------ bad input
def test_unknown_users_and_images_are_one_line(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")

    assert refused(db, "app", "grant", IMAGE, "bob") == "no user named 'bob'"
    assert "no application for image 'other/app'" in refused(
        db, "app", "grant", "other/app", "alice"
    )
    assert "no user named 'bob'" in refused(db, "user", "remove", "bob")
    assert "'other/app'" in refused(db, "app", "remove", "other/app")
    assert "no user named 'bob'" in refused(db, "app", "revoke", IMAGE, "bob", "--revoke-all")
    assert "no grant" in refused(db, "app", "revoke", IMAGE, "alice", "--allow-view")


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("a" * 238, "longer than 255"),
        ("x/" + "a" * 244, "longer than 255"),
        ("app:" + "t" * 129, "tag"),
        ("app@sha256:" + "0" * 32, "digest"),
        ("Team/app", "lower-case"),
    ],
)
def test_references_the_engine_refuses_are_not_registered(db: str, image: str, why: str) -> None:
    message = refused(db, "app", "create", image, "--no-verify")
    assert "is not a valid Docker image name" in message
    assert why in message
    assert ok(db, "app", "list").strip().splitlines()[2:] == []


def test_duplicates_are_one_line(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")

    assert refused(db, "user", "create", "alice") == "user 'alice' already exists"
    assert "already exists" in refused(db, "app", "create", IMAGE, "--no-verify")


def test_malformed_names_and_volumes_are_one_line_and_write_nothing(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")

    assert "SOURCE:TARGET:MODE" in refused(db, "app", "grant", IMAGE, "alice", "--volume", "/a:/b")
    assert "'ro' or 'rw'" in refused(db, "app", "grant", IMAGE, "alice", "--volume", "/a:/b:rx")
    assert "absolute" in refused(db, "app", "grant", IMAGE, "alice", "--volume", "a:/b:ro")
    assert "not a valid Docker image name" in refused(
        db, "app", "create", "Bad Image", "--no-verify"
    )
    assert "user name" in refused(db, "user", "create", "a/b")

    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"
    assert ok(db, "app", "list", "--no-decoration") == f"1 {IMAGE}\n"


@pytest.mark.parametrize(
    ("volume", "reason"),
    [
        ("/var/run/docker.sock:/var/run/docker.sock:rw", "Docker socket"),
        ("/srv/engine/docker.sock:/run/docker.sock:rw", "Docker socket"),
        ("/:/host:ro", "never mounted"),
        ("/etc:/data:ro", "never mounted"),
        ("/proc:/data:ro", "never mounted"),
        ("/sys:/data:ro", "never mounted"),
        ("/dev:/data:ro", "never mounted"),
        ("/boot:/data:ro", "never mounted"),
        ("/root:/data:ro", "never mounted"),
        ("/var/lib/docker:/data:ro", "never mounted"),
        ("/home/alice:/data:rw", "outside the folders grants may mount"),
        ("/srv/../etc:/data:ro", ".."),
        ("/srv/data:/proc:rw", "volume target"),
        ("/srv/data:/:rw", "volume target"),
    ],
)
def test_dangerous_volumes_are_refused_and_nothing_is_written(
    db: str, monkeypatch: pytest.MonkeyPatch, volume: str, reason: str
) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", "/srv")

    message = refused(db, "app", "grant", IMAGE, "alice", "--volume", volume)

    assert reason in message
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"


def test_a_symbolic_link_out_of_the_roots_is_refused(
    db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    root = tmp_path / "shared"
    (root / "project").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", str(root))

    message = refused(db, "app", "grant", IMAGE, "alice", "--volume", f"{root}/escape:/data:ro")

    assert "symbolic link" in message
    assert "/etc" in message
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"
    mapping_id = ok(db, "app", "grant", IMAGE, "alice", "--volume", f"{root}/project:/data:ro")
    assert len(mapping_id.strip()) == 32


def test_without_volume_roots_no_volume_is_granted(db: str) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")

    message = refused(db, "app", "grant", IMAGE, "alice", "--volume", "/srv/data:/data:ro")

    assert "REMOTEAPP_VOLUME_ROOTS" in message
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"
    # A grant without a volume needs no roots.
    assert len(ok(db, "app", "grant", IMAGE, "alice", "--allow-home").strip()) == 32


def test_a_grant_written_before_the_rules_can_still_be_revoked(
    db: str, empty_database_url: str
) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    forbidden = Policy(volume=Volume.parse("/etc:/data:ro"))

    async def write_behind_the_rules() -> None:
        # As a grant from before the rules exists in the database: written without them.
        database = bootstrap.build_database(empty_database_url)
        async with database, database.unit_of_work() as work:
            user = await work.users.get_by_name("alice")
            application = await work.applications.get_by_image(IMAGE)
            await work.grants.grant(user, application, forbidden)
            await work.commit()

    asyncio.run(write_behind_the_rules())
    assert "volume=/etc:/data:ro" in ok(db, "user", "list", "--show-apps", "--no-decoration")

    assert ok(db, "app", "revoke", IMAGE, "alice", "--volume", "/etc:/data:ro") == (
        "revoked 1 grant\n"
    )
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == "1 alice - - -\n"


def test_bad_volume_roots_are_a_usage_error(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(db, "user", "create", "alice")
    ok(db, "app", "create", IMAGE, "--no-verify")
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", "/etc")

    message = refused(db, "app", "grant", IMAGE, "alice", "--volume", "/etc:/data:ro", code=2)

    assert message.startswith("REMOTEAPP_VOLUME_ROOTS: ")


def test_revoke_all_with_policy_flags_is_a_usage_error(db: str) -> None:
    message = refused(db, "app", "revoke", IMAGE, "alice", "--revoke-all", "--allow-home", code=2)
    assert "--revoke-all" in message


def test_a_missing_sqlite_file_suggests_init_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.db"

    message = refused(str(path), "user", "list")

    assert f"remoteappdb {path} init" in message
    assert not path.exists()


def test_init_refuses_to_overwrite(db: str) -> None:
    ok(db, "user", "create", "alice")

    assert "refusing to overwrite" in refused(db, "init")
    assert ok(db, "user", "list", "--no-decoration") == "1 alice\n"


def test_init_in_a_missing_directory_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "remote.db"

    assert "missing does not exist" in refused(str(path), "init")
    assert not path.parent.exists()


def test_an_unreachable_postgresql_is_one_line(postgres_cluster: PostgresCluster) -> None:
    url = f"postgresql://admin:hunter2@127.0.0.1:{free_port()}/remoteapp"

    message = refused(url, "user", "list")

    assert "unreachable" in message
    assert "hunter2" not in message
    assert "unreachable" in refused(url, "init")


def test_a_database_without_the_schema_suggests_init(postgres_url: str) -> None:
    url = cli_url(postgres_url)

    message = refused(url, "user", "list")

    assert f"`remoteappdb {url} init`" in message
    ok(url, "init")
    ok(url, "user", "list")


def test_a_database_behind_the_code_names_the_upgrade(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead = migrations_one_step_ahead(tmp_path / "code")
    monkeypatch.setattr(migrate, "scripts_dir", lambda: ahead)

    message = refused(db, "user", "list")

    assert f"revision {CURRENT_REVISION}, not {NEXT_REVISION}" in message
    assert "`remoteappmanager db upgrade`" in message


def test_a_database_ahead_of_the_code_is_refused(empty_database_url: str) -> None:
    url = cli_url(empty_database_url)
    ok(url, "init")
    asyncio.run(execute(empty_database_url, "UPDATE alembic_version SET version_num = '9999'"))

    assert "newer than this software knows" in refused(url, "user", "create", "alice")


def test_invalid_database_names_are_usage_errors(tmp_path: Path) -> None:
    assert "unsupported database scheme" in refused("mysql://db/x", "user", "list", code=2)
    env = {"REMOTEAPP_DATABASE_URL": "mysql://db/x"}
    assert refused("user", "list", env=env, code=2).startswith("REMOTEAPP_DATABASE_URL: ")


# ------------------------------------------------------------------------------ --verify
@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> InMemoryRuntime:
    runtime = InMemoryRuntime()
    monkeypatch.setattr(bootstrap, "build_runtime", lambda settings: runtime)
    return runtime


def test_verify_registers_images_the_engine_holds(db: str, engine: InMemoryRuntime) -> None:
    engine.add_image(IMAGE)

    ok(db, "app", "create", IMAGE)

    assert ok(db, "app", "list", "--no-decoration") == f"1 {IMAGE}\n"
    assert engine.closed


def test_verify_refuses_images_the_engine_lacks(db: str, engine: InMemoryRuntime) -> None:
    message = refused(db, "app", "create", IMAGE)

    assert "not on the Docker engine" in message
    assert "--no-verify" in message
    assert ok(db, "app", "list", "--no-decoration") == ""


def test_verify_without_an_engine_suggests_no_verify(db: str, engine: InMemoryRuntime) -> None:
    engine.available = False

    message = refused(db, "app", "create", IMAGE)

    assert message.startswith("Docker engine unavailable (")
    assert message.endswith("; use --no-verify to register the image anyway")
    assert ok(db, "app", "list", "--no-decoration") == ""


# ------------------------------------------------------------------------------ group grants
def test_grants_to_hub_groups_are_made_listed_revoked_and_audited(
    db: str, empty_database_url: str
) -> None:
    account = pwd.getpwuid(os.getuid()).pw_name
    ok(db, "app", "create", IMAGE, "--no-verify")
    mapping_id = ok(db, "app", "grant", IMAGE, "--group", "physics", "--allow-home").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", mapping_id)
    assert ok(db, "app", "grant", IMAGE, "--group", "physics", "--allow-home").strip() == (
        mapping_id
    )
    other_id = ok(db, "app", "grant", IMAGE, "--group", "chemistry").strip()

    plain = ok(db, "app", "list", "--show-groups", "--no-decoration").splitlines()
    assert plain == [f"{other_id} chemistry {IMAGE}", f"{mapping_id} physics {IMAGE}"]
    table = ok(db, "app", "list", "--show-groups").splitlines()
    assert table[0].split() == ["MAPPING", "ID", "GROUP", "IMAGE"]
    # No user holds a group grant by name.
    assert ok(db, "user", "list", "--show-apps", "--no-decoration") == ""

    assert "exactly one of USER and --group" in refused(db, "app", "grant", IMAGE, code=2)
    assert "exactly one of USER and --group" in refused(
        db, "app", "grant", IMAGE, "alice", "--group", "physics", code=2
    )
    assert "group name" in refused(db, "app", "grant", IMAGE, "--group", "a/b")
    assert "with this policy" in refused(db, "app", "revoke", IMAGE, "--group", "physics")

    assert ok(db, "app", "revoke", IMAGE, "--group", "physics", "--allow-home") == (
        "revoked 1 grant\n"
    )
    assert ok(db, "app", "revoke", IMAGE, "--group", "chemistry", "--revoke-all") == (
        "revoked 1 grant\n"
    )
    assert ok(db, "app", "list", "--show-groups", "--no-decoration") == ""

    rows = asyncio.run(
        execute(empty_database_url, "SELECT actor, action, target, detail FROM event ORDER BY id")
    )
    granted = [(actor, action, target) for actor, action, target, _ in rows][1:]
    assert granted == [
        (account, "grant", mapping_id),
        (account, "grant", mapping_id),
        (account, "grant", other_id),
        (account, "revoke", mapping_id),
        (account, "revoke", other_id),
    ]
    details = [detail for *_, detail in rows][1:]
    assert all('"group"' in str(detail) or "'group'" in str(detail) for detail in details)
