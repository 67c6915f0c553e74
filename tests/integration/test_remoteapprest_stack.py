"""`remoteapprest`, the installed command, against the whole stack on 127.0.0.1.

A real JupyterHub starts its configurable-http-proxy and our service (config/
jupyterhub_config.py); the service runs the demo image ``remoteapp-demo/webapp:latest``
(built by ``images/build.sh webapp`` when missing) on the real Docker engine, with a SQLite
catalogue set up by the ``remoteappdb`` command. The user logs in with a user name and
password, so the token is one the hub itself created for the service.

Containers run in gated mode, the default: the proxy sends the application's URL to the
service's gate. A browser gets through with a cookie minted from its login session, which a
command-line client has not; the test checks the printed URL the way an API client reaches it,
with the stored token in ``Authorization``, and that the same URL is closed to anonymous
requests. The realm is unique to the test and force-removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hub import (
    HubPorts,
    clean_environment,
    hub_environment,
    require_hub,
    running_hub,
    wait_until_managed_service_healthy,
    write_hub_config,
)
from tests.support.services import REPO, skip_or_fail
from tests.support.session_images import remove_realm

pytestmark = [pytest.mark.hub, pytest.mark.proxy, pytest.mark.docker, pytest.mark.timeout(900)]

IMAGE = "remoteapp-demo/webapp:latest"
PASSWORD = "demo-" + secrets.token_hex(8)
PREFIX = "/services/remoteapp/"
BIN = Path(sys.executable).parent
COMMAND_TIMEOUT = 180
BUILD_TIMEOUT = 900


@dataclass
class Stack:
    public_url: str
    mapping_id: str
    tmp: Path
    log: Path

    @property
    def credentials(self) -> Path:
        return self.tmp / "client" / "credentials.json"


def _command(name: str) -> str:
    path = BIN / name
    if not path.exists():
        skip_or_fail(f"{name} is not installed beside {sys.executable}")
    return str(path)


def _demo_image() -> None:
    """The demo image, built when missing (build.sh skips existing images, so it is cheap)."""
    if shutil.which("docker") is None:
        skip_or_fail("the docker command is not installed (images/build.sh needs it)")
    result = subprocess.run(
        [str(REPO / "images" / "build.sh"), "webapp"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"images/build.sh webapp failed:\n{result.stderr[-2000:]}")


def _remoteappdb(database: Path, *args: str) -> str:
    result = subprocess.run(
        [_command("remoteappdb"), str(database), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env=clean_environment(),
    )
    assert result.returncode == 0, f"remoteappdb {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Stack]:
    require_hub()
    _command("remoteappmanager")
    _command("remoteapprest")
    _demo_image()
    tmp = tmp_path_factory.mktemp("remoteapprest")
    realm = f"rest-{secrets.token_hex(4)}"
    database = tmp / "remoteappmanager.db"
    _remoteappdb(database, "init")
    _remoteappdb(database, "user", "create", "alice")
    _remoteappdb(database, "app", "create", IMAGE)
    mapping_id = _remoteappdb(database, "app", "grant", IMAGE, "alice")

    ports = HubPorts.free()
    write_hub_config(tmp)
    env = hub_environment(
        tmp,
        ports,
        PASSWORD,
        REMOTEAPP_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        REMOTEAPP_REALM=realm,
        REMOTEAPP_WORKSPACE_ROOT=str(tmp / "workspaces"),
    )
    try:
        with running_hub(tmp, env, ports.public):
            health = ports.public_url + PREFIX + "health"
            asyncio.run(wait_until_managed_service_healthy(tmp, health))
            yield Stack(ports.public_url, mapping_id, tmp, tmp / "jupyterhub.log")
    finally:
        asyncio.run(remove_realm(realm))


def rest(stack: Stack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = clean_environment()
    environment.update(REMOTEAPPREST_CONFIG=str(stack.credentials), HOME=str(stack.tmp))
    return subprocess.run(
        [_command("remoteapprest"), *args],
        input=input or "",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env=environment,
    )


def ok(stack: Stack, *args: str, input: str | None = None) -> str:
    result = rest(stack, *args, input=input)
    assert result.returncode == 0, f"{args}: {result.stderr}\n{_log_tail(stack)}"
    assert result.stderr == ""
    return result.stdout


def _log_tail(stack: Stack) -> str:
    return stack.log.read_text(errors="replace")[-3000:] if stack.log.exists() else ""


def fetch(url: str, token: str | None = None) -> tuple[int, str]:
    """GET ``url`` without following redirects: (status, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    headers = {"Authorization": f"token {token}"} if token else {}
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_log_in_start_reach_and_stop(stack: Stack) -> None:
    out = ok(
        stack,
        "login",
        stack.public_url,
        "--username",
        "alice",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    lines = out.splitlines()
    assert lines[0] == f"logged in to {stack.public_url}{PREFIX} as alice"
    assert lines[1].startswith("the token expires on ")
    assert stat.S_IMODE(stack.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(stack.credentials.parent.stat().st_mode) == 0o700
    token = json.loads(stack.credentials.read_text())["token"]
    assert token not in out

    available = ok(stack, "app", "available", "--no-decoration").splitlines()
    assert available == [f"{stack.mapping_id} {IMAGE} - Demo web app"]

    # The grant's policy allows no startup data: refused before anything starts.
    refused = rest(stack, "app", "start", stack.mapping_id, "--startupdata", "/workspace/x")
    assert refused.returncode == 2, refused.stderr
    assert "does not allow startup data" in refused.stderr
    assert ok(stack, "app", "running", "--no-decoration") == ""

    url = ok(stack, "app", "start", stack.mapping_id).strip()
    prefix = f"{stack.public_url}/user/alice/containers/"
    assert url.startswith(prefix), url
    assert url.endswith("/")
    url_id = url.removeprefix(prefix).rstrip("/")

    running = ok(stack, "app", "running", "--no-decoration").splitlines()
    assert running == [f"{url_id} {stack.mapping_id} {IMAGE} {url}"]

    status, page = fetch(url, token)
    assert status == 200, page[:500]
    assert f'<td id="url-id">{url_id}</td>' in page
    assert '<strong id="user">alice</strong>' in page
    status, _page = fetch(url)
    assert status != 200

    assert ok(stack, "app", "stop", url_id) == ""
    assert ok(stack, "app", "running", "--no-decoration") == ""
    status, _page = fetch(url, token)
    assert status != 200

    again = rest(stack, "app", "stop", url_id)
    assert again.returncode == 5
    assert again.stderr.startswith("remoteapprest: error: you have no running application")


def test_a_token_the_hub_does_not_know_is_refused(stack: Stack) -> None:
    ok(
        stack,
        "login",
        stack.public_url + PREFIX,
        "--username",
        "alice",
        "--password-stdin",
        input=PASSWORD,
    )
    # The service asks the hub about every token it has not seen lately: a token the hub
    # never issued (or revoked longer ago than that) comes back refused.
    stored = json.loads(stack.credentials.read_text())
    stored["token"] = secrets.token_hex(16)
    stack.credentials.write_text(json.dumps(stored))
    refused = rest(stack, "app", "available")
    assert refused.returncode == 4, refused.stderr
    assert refused.stderr == (
        "remoteapprest: error: your token was refused; "
        f"log in again with `remoteapprest login {stack.public_url}/`\n"
    )
