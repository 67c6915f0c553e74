"""`remoteappmanager`: `db upgrade|check|current`, and refusing to serve on an old schema."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from remoteappmanager.adapters.db import migrate
from remoteappmanager.cli import manager
from remoteappmanager.web.admission import LISTEN_BACKLOG
from remoteappmanager.web.deps import WebDeps
from tests.support.database import (
    CURRENT_REVISION,
    NEXT_REVISION,
    migrations_one_step_ahead,
)
from tests.support.services import PostgresCluster, free_port

ERROR = "remoteappmanager: error: "


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_", "DOCKER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[WebDeps]:
    """Stands in for the web server: records the service it was given to serve."""
    calls: list[WebDeps] = []
    monkeypatch.setattr(manager, "serve", calls.append)
    return calls


def run(*args: str, url: str | None = None, **env: str) -> Result:
    if url is not None:
        env["REMOTEAPP_DATABASE_URL"] = url
    result = CliRunner().invoke(manager.main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR)
    return lines[0].removeprefix(ERROR)


# ------------------------------------------------------------------------------ db commands
def test_upgrade_check_and_current(empty_database_url: str) -> None:
    before = run("db", "check", url=empty_database_url)
    assert before.exit_code == 1
    assert "run `remoteappmanager db upgrade`" in error_line(before)
    assert "none" in run("db", "current", url=empty_database_url).stdout

    upgraded = run("db", "upgrade", url=empty_database_url)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from an empty database to {CURRENT_REVISION}" in upgraded.stdout

    again = run("db", "upgrade", url=empty_database_url)
    assert f"already at the current schema ({CURRENT_REVISION})" in again.stdout
    checked = run("db", "check", url=empty_database_url)
    assert checked.exit_code == 0
    assert f"at the current schema ({CURRENT_REVISION})" in checked.stdout
    current = run("db", "current", url=empty_database_url).stdout
    assert current.endswith(f": {CURRENT_REVISION} (current)\n")


def test_check_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    result = run("db", "check", url=str(tmp_path / "absent.db"))

    assert result.exit_code == 1
    assert "`remoteappmanager db upgrade`" in error_line(result)
    assert not (tmp_path / "absent.db").exists()


def test_a_database_behind_the_code_is_upgraded(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("db", "upgrade", url=empty_database_url).exit_code == 0
    ahead = migrations_one_step_ahead(tmp_path / "code")
    monkeypatch.setattr(migrate, "scripts_dir", lambda: ahead)

    behind = run("db", "check", url=empty_database_url)
    assert behind.exit_code == 1
    message = error_line(behind)
    assert f"revision {CURRENT_REVISION}, not the current {NEXT_REVISION}" in message
    assert message.endswith("run `remoteappmanager db upgrade`")

    upgraded = run("db", "upgrade", url=empty_database_url)
    assert f"upgraded from {CURRENT_REVISION} to {NEXT_REVISION}" in upgraded.stdout
    assert run("db", "check", url=empty_database_url).exit_code == 0


def test_an_unreachable_database_is_one_line(postgres_cluster: PostgresCluster) -> None:
    url = f"postgresql://admin:hunter2@127.0.0.1:{free_port()}/remoteapp"

    result = run("db", "upgrade", url=url)

    assert result.exit_code == 1
    message = error_line(result)
    assert "unreachable" in message
    assert "hunter2" not in message


# ------------------------------------------------------------------------------ serving
def test_the_service_refuses_a_schema_not_at_head(
    empty_database_url: str, served: list[WebDeps]
) -> None:
    result = run(
        url=empty_database_url, CONFIGPROXY_AUTH_TOKEN="token", JUPYTERHUB_API_TOKEN="hub-token"
    )

    assert result.exit_code == 1
    assert "`remoteappmanager db upgrade`" in error_line(result)
    assert served == []


def test_the_service_starts_on_a_schema_at_head(
    empty_database_url: str, served: list[WebDeps]
) -> None:
    assert run("db", "upgrade", url=empty_database_url).exit_code == 0

    result = run(
        url=empty_database_url, CONFIGPROXY_AUTH_TOKEN="token", JUPYTERHUB_API_TOKEN="hub-token"
    )

    assert result.exit_code == 0, result.output
    assert [built.settings.database_url for built in served] == [empty_database_url]


def test_the_service_needs_the_proxy_token(tmp_path: Path, served: list[WebDeps]) -> None:
    result = run(url=str(tmp_path / "remote.db"))

    assert result.exit_code == 2
    assert error_line(result).startswith("CONFIGPROXY_AUTH_TOKEN: ")
    assert served == []


def test_the_service_needs_the_hub_token(tmp_path: Path, served: list[WebDeps]) -> None:
    result = run(url=str(tmp_path / "remote.db"), CONFIGPROXY_AUTH_TOKEN="token")

    assert result.exit_code == 2
    assert error_line(result).startswith("JUPYTERHUB_API_TOKEN: ")
    assert served == []


@pytest.mark.parametrize("args", [(), ("db", "check")])
def test_an_invalid_setting_is_one_line_naming_it(args: tuple[str, ...]) -> None:
    result = run(
        *args,
        REMOTEAPP_NETWORK_TIMEOUT="soon",
        CONFIGPROXY_AUTH_TOKEN="token",
        JUPYTERHUB_API_TOKEN="hub-token",
    )

    assert result.exit_code == 2
    assert error_line(result).startswith("REMOTEAPP_NETWORK_TIMEOUT: ")


# ------------------------------------------------------------------------------ ports taken
def _service_environment(tmp_path: Path, service_port: int) -> dict[str, str]:
    """What the real service needs to start, on a fresh database, listening on
    ``service_port`` (its gate on the next port unless told otherwise)."""
    database = tmp_path / "service.db"
    url = f"sqlite+aiosqlite:///{database}"
    asyncio.run(migrate.upgrade(url))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)},
        "REMOTEAPP_DATABASE_URL": url,
        "CONFIGPROXY_AUTH_TOKEN": "proxy-token",
        "CONFIGPROXY_API_URL": f"http://127.0.0.1:{free_port()}",
        "JUPYTERHUB_API_TOKEN": "hub-token",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{free_port()}/hub/api",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{service_port}",
        "REMOTEAPP_REALM": f"cli-{tmp_path.name[-8:]}",
    }


_SERVICE = str(Path(sys.executable).parent / "remoteappmanager")


def _serve_with_a_taken_port(tmp_path: Path, which: str) -> subprocess.CompletedProcess[str]:
    """Run the real service with its own port or its gate's port held by another socket."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        # The gate listens on the service's port + 1 by default, and binds first.
        env = _service_environment(tmp_path, held if which == "service" else held - 1)
        if which == "service":  # the port after the held one may be anybody's
            env["REMOTEAPP_GATE_URL"] = f"http://127.0.0.1:{free_port()}"
        return subprocess.run(
            [_SERVICE],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _listen_backlog(port: int) -> int | None:
    """The accept queue's size of the socket listening on 127.0.0.1:``port`` (ss's Send-Q
    of a listening socket), or None while nothing listens there."""
    shown = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(shown[2]) if shown else None


_SERVICE_PREFIXES = ("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_taken_gate_port_stops_the_service_with_one_line(tmp_path: Path) -> None:
    result = _serve_with_a_taken_port(tmp_path, "gate")

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, result.stderr
    assert "the gate cannot listen on 127.0.0.1:" in lines[0]
    assert "the port is taken" in lines[0]
    assert "REMOTEAPP_GATE_URL" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_taken_service_port_stops_the_service_with_one_line(tmp_path: Path) -> None:
    result = _serve_with_a_taken_port(tmp_path, "service")

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, result.stderr
    assert "the service cannot listen on 127.0.0.1:" in lines[0]
    assert "JUPYTERHUB_SERVICE_URL" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_the_service_and_its_gate_listen_with_room_for_a_crowd(tmp_path: Path) -> None:
    """A crowd connecting at once (a proxy's pool filling, a class signing in together) is
    queued by the kernel, not dropped: a dropped handshake is retried only after a second."""
    port, gate_port = free_port(), free_port()
    env = _service_environment(tmp_path, port)
    env["REMOTEAPP_GATE_URL"] = f"http://127.0.0.1:{gate_port}"
    with subprocess.Popen(
        [_SERVICE], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as service:
        try:
            deadline = time.monotonic() + 60
            while _listen_backlog(port) is None and service.poll() is None:
                assert time.monotonic() < deadline, "the service never listened"
                time.sleep(0.1)
            assert service.poll() is None, service.stderr.read() if service.stderr else ""
            assert _listen_backlog(port) == LISTEN_BACKLOG >= 1024
            assert _listen_backlog(gate_port) == LISTEN_BACKLOG
        finally:
            service.terminate()
            service.wait(30)
