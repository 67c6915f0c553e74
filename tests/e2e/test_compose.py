"""docker-compose.yml end to end: the images built locally (scripts/build-base-image, then
Dockerfile-ubuntu and deploy/postgres on that base), the stack started under a project name
of its own, a user signed in through the hub's login form and the OAuth redirects to the
user page, an application started through the REST API and reached through the proxy,
and everything removed again (``down -v``), whatever happened.

Every port the stack uses is a free one on 127.0.0.1, and the service's realm is unique,
so a run shares the engine with other tests and deployments without touching them. The
images stay (as the layer cache of the next run); with ``CI`` set and
``REMOTEAPP_TEST_CLEAN_BUILD=1`` every image is built anew, with ``--no-cache``. Timings go to
test-artifacts/compose-timings.json.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.support.services import REPO, docker_socket_problem, free_port, skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

BASE_IMAGE = "remoteapp-base/debian:bookworm"
SERVICE_IMAGE = "remoteapp-e2e/service:latest"
POSTGRES_IMAGE = "remoteapp-e2e/postgres:latest"
WEBAPP_IMAGE = "remoteapp-demo/webapp:latest"
COMPOSE_FILE = REPO / "docker-compose.yml"
ARTIFACTS = REPO / "test-artifacts"
SERVICE_PREFIX = "/services/remoteapp/"
USER_NAME = "ada-e2e"
REALM_LABEL = "eu.simphony-project.docker.runinfo.realm"
BUILD_TIMEOUT = 1200.0
# A build from nothing, as on a brand-new machine: no layer of Docker's build cache is used
# and the base and demo images are made again (CI=true REMOTEAPP_TEST_CLEAN_BUILD=1).
CLEAN_BUILD = bool(os.environ.get("CI")) and os.environ.get("REMOTEAPP_TEST_CLEAN_BUILD") == "1"
HEALTHY_TIMEOUT = 240.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass
class Stack:
    project: str
    compose: list[str]
    url: URL
    password: str
    realm: str
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def container(self, service: str) -> str:
        result = self.run("ps", "-q", service)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), f"no {service} container"
        return result.stdout.strip()


def docker(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _require_tools() -> str:
    problem = docker_socket_problem()
    if problem:
        skip_or_fail(problem)
    beside = Path(sys.executable).parent / "docker-compose"
    compose = str(beside) if beside.exists() else shutil.which("docker-compose")
    if compose is None:
        skip_or_fail("docker-compose is not installed (scripts/provision)")
    assert compose is not None
    can_build_base = os.geteuid() == 0 and shutil.which("debootstrap") is not None
    if not _image_id(BASE_IMAGE) and not can_build_base:
        skip_or_fail(f"building {BASE_IMAGE} needs root and debootstrap")
    return compose


def _timed(timings: dict[str, float], name: str, command: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    timings[name] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"


def _write_env_file(path: Path, password: str, realm: str, workspaces: Path) -> int:
    """The env file of this run: fresh secrets, free ports; returns the public port."""
    public_port = free_port()
    settings = {
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "REMOTEAPP_COOKIE_SECRET": secrets.token_hex(32),
        "JUPYTERHUB_COOKIE_SECRET": secrets.token_hex(32),
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "REMOTEAPP_BASE_IMAGE": BASE_IMAGE,
        "REMOTEAPP_IMAGE": SERVICE_IMAGE,
        "POSTGRES_IMAGE": POSTGRES_IMAGE,
        "REMOTEAPP_PORT": public_port,
        "REMOTEAPP_HUB_INTERNAL_PORT": free_port(),
        "REMOTEAPP_PROXY_API_PORT": free_port(),
        "REMOTEAPP_SERVICE_PORT": free_port(),
        "REMOTEAPP_GATE_PORT": free_port(),
        "REMOTEAPP_DB_PORT": free_port(),
        "REMOTEAPP_DEMO_PASSWORD": password,
        "REMOTEAPP_REALM": realm,
        "REMOTEAPP_AUTO_USER_CREATION": "true",
        "REMOTEAPP_DEMO_APPLICATIONS": json.dumps({WEBAPP_IMAGE: {}}),
        "REMOTEAPP_WORKSPACE_ROOT": str(workspaces),
        "REMOTEAPP_LOG_FORMAT": "json",
    }
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    path.chmod(0o600)
    return public_port


def _wait_healthy(stack: Stack) -> None:
    container = stack.container("remoteapp")
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout
        if status.strip() in {"healthy"}:
            return
        if docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip() != "true":
            break
        time.sleep(1)
    logs = stack.run("logs", "--no-color", "--tail", "80").stdout
    raise AssertionError(f"the remoteapp service is not healthy ({status.strip()}):\n{logs}")


def _image_id(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()


def _leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {
        "containers": docker("ps", "-aq", "--filter", label).stdout.split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "-q", "--filter", label).stdout.split(),
    }
    return {kind: ids for kind, ids in found.items() if ids}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    compose = _require_tools()
    timings: dict[str, float] = {}
    force = ["--force"] if CLEAN_BUILD else []
    _timed(timings, "base image", [str(REPO / "scripts" / "build-base-image"), *force])
    _timed(timings, "demo webapp image", [str(REPO / "images" / "build.sh"), *force, "webapp"])

    work = tmp_path_factory.mktemp("compose")
    project = f"remoteapp-e2e-{secrets.token_hex(4)}"
    realm = f"e2e-{secrets.token_hex(4)}"
    password = secrets.token_hex(8)
    workspaces = work / "workspaces"
    env_file = work / "compose.env"
    public_port = _write_env_file(env_file, password, realm, workspaces)
    stack = Stack(
        project=project,
        compose=[compose, "-p", project, "-f", str(COMPOSE_FILE), "--env-file", str(env_file)],
        url=URL(f"http://127.0.0.1:{public_port}"),
        password=password,
        realm=realm,
        timings=timings,
    )
    replaced = {image: _image_id(image) for image in (SERVICE_IMAGE, POSTGRES_IMAGE)}
    no_cache = ["--no-cache"] if CLEAN_BUILD else []
    _timed(
        timings,
        "service images (compose build)",
        [*stack.compose, "build", "--parallel", *no_cache],
    )
    timings["clean build"] = CLEAN_BUILD
    # Images the build replaced are garbage, unless something still runs them.
    for image, old_id in replaced.items():
        if old_id and old_id != _image_id(image):
            docker("image", "rm", old_id)
    try:
        started = time.monotonic()
        result = stack.run("up", "-d")
        assert result.returncode == 0, result.stderr[-4000:]
        _wait_healthy(stack)
        timings["up until healthy"] = round(time.monotonic() - started, 1)
        yield stack
    finally:
        logs = stack.run("logs", "--no-color", "--timestamps")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "compose-e2e.log").write_text(logs.stdout + logs.stderr)
        started = time.monotonic()
        down = stack.run("down", "-v", "--remove-orphans", "--timeout", "30")
        timings["down -v"] = round(time.monotonic() - started, 1)
        # Applications the service started belong to no compose project: they go by realm.
        launched = docker("ps", "-aq", "--filter", f"label={REALM_LABEL}={realm}").stdout.split()
        if launched:
            docker("rm", "-f", *launched)
        shutil.rmtree(workspaces, ignore_errors=True)
        (ARTIFACTS / "compose-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        print(f"\ncompose end to end timings (s): {timings}", file=sys.stderr)
        assert down.returncode == 0, down.stderr[-4000:]
        assert not _leftovers(project), f"left behind: {_leftovers(project)}"


# ------------------------------------------------------------------------------ the browser
async def _get(session: aiohttp.ClientSession, url: URL) -> tuple[URL, int, str]:
    """GET, following redirects by hand: each one must stay on 127.0.0.1."""
    for _ in range(10):
        assert url.host == "127.0.0.1", f"redirected off loopback to {url}"
        async with session.get(url, allow_redirects=False) as response:
            body = await response.text()
            if response.status not in {301, 302, 303, 307, 308}:
                return url, response.status, body
            url = url.join(URL(response.headers["Location"]))
    raise AssertionError(f"too many redirects, last {url}")


async def _sign_in(session: aiohttp.ClientSession, stack: Stack) -> tuple[URL, int, str]:
    login_url, status, html = await _get(session, stack.url / "hub" / "login")
    assert status == 200, html[:2000]
    match = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert match, html[:2000]
    form = {"username": USER_NAME, "password": stack.password, "_xsrf": match[1]}
    target = login_url.with_query(next=SERVICE_PREFIX)
    async with session.post(target, data=form, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        landing = target.join(URL(response.headers["Location"]))
    return await _get(session, landing)


def _browser() -> aiohttp.ClientSession:
    # 127.0.0.1 is an IP address: aiohttp keeps its cookies only in an "unsafe" jar.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=HTTP_TIMEOUT)


async def test_a_user_signs_in_through_the_hub_and_gets_the_user_page(stack: Stack) -> None:
    async with _browser() as session:
        url, status, html = await _sign_in(session, stack)
    assert status == 200, html[:2000]
    assert url.path == SERVICE_PREFIX
    assert USER_NAME in html


async def test_a_user_starts_an_application_and_reaches_it_through_the_proxy(
    stack: Stack,
) -> None:
    async with _browser() as session:
        _, status, html = await _sign_in(session, stack)
        assert status == 200
        token = re.search(r'<meta name="xsrf-token" content="([^"]+)"', html)
        assert token, html[:2000]
        api = stack.url.join(URL(SERVICE_PREFIX + "api/v1/"))
        headers = {"X-XSRFToken": token[1], "Origin": str(stack.url)}

        async with session.get(api / "applications/") as response:
            assert response.status == 200, await response.text()
            (mapping_id,) = (await response.json())["identifiers"]
        async with session.post(
            api / "containers/", json={"mapping_id": mapping_id}, headers=headers
        ) as response:
            assert response.status == 201, await response.text()
            location = api.join(URL(response.headers["Location"]))
        async with session.get(location) as response:
            assert response.status == 200, await response.text()
            url_id = (await response.json())["url_id"]

        # The service (host network) probed the container on the host's 127.0.0.1, and the
        # proxy now routes the application's URL to it, through the gate.
        app_url = stack.url / "user" / USER_NAME / "containers" / url_id / ""
        _, status, page = await _get(session, app_url)
        assert status == 200, page[:2000]
        assert USER_NAME in page
        assert url_id in page

        async with session.delete(location, headers=headers) as response:
            assert response.status == 204, await response.text()
    launched = docker("ps", "-aq", "--filter", f"label={REALM_LABEL}={stack.realm}")
    assert launched.stdout.split() == []


async def test_health_reports_every_dependency(stack: Stack) -> None:
    async with _browser() as session:
        _, status, body = await _get(session, stack.url.join(URL(SERVICE_PREFIX + "health")))
    assert status == 200, body
    checks = json.loads(body)["checks"]
    assert set(checks) >= {"database", "docker", "proxy", "hub"}
    assert all(check["ok"] for check in checks.values()), checks


def test_the_service_runs_unprivileged_and_reaches_the_docker_socket(stack: Stack) -> None:
    container = stack.container("remoteapp")
    socket_gid = docker(
        "exec", container, "stat", "-c", "%g", "/var/run/docker.sock"
    ).stdout.strip()
    groups = docker("exec", container, "id", "-G", "remoteapp").stdout.split()
    assert socket_gid in groups
    # PID 1 is docker-init; everything it started (the entry point became JupyterHub, which
    # started the proxy and the service) runs as the `remoteapp` user.
    listing = docker(
        "exec",
        container,
        "python3",
        "-c",
        "import os, pathlib\n"
        "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
        "    if p.name in {'1', str(os.getpid())}: continue\n"
        "    try: s = (p / 'status').read_text(); c = (p / 'cmdline').read_bytes()\n"
        "    except OSError: continue\n"
        "    uid = next(l.split()[1] for l in s.splitlines() if l.startswith('Uid:'))\n"
        "    print(uid, c.replace(b'\\0', b' ').decode()[:200])\n",
    ).stdout.splitlines()
    commands = {line.split(" ", 1)[1] for line in listing}
    assert any("jupyterhub" in command for command in commands), listing
    assert any("configurable-http-proxy" in command for command in commands), listing
    assert any("remoteappmanager" in command for command in commands), listing
    assert all(line.split(" ", 1)[0] == "1000" for line in listing), listing


def test_the_database_was_migrated_to_the_current_schema(stack: Stack) -> None:
    container = stack.container("remoteapp")
    result = docker("exec", "--user", "remoteapp", container, "remoteappmanager", "db", "check")
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL" in result.stdout


def test_the_catalogue_tools_run_in_the_service_container(stack: Stack) -> None:
    # As docs/deployment.md says to: `exec --user remoteapp`, which gets the socket's group too.
    # Registration checks the image with the engine; any image the engine holds will do.
    tool = ["exec", "-T", "--user", "remoteapp", "remoteapp", "remoteappdb"]
    created = stack.run(*tool, "app", "create", POSTGRES_IMAGE)
    assert created.returncode == 0, created.stdout + created.stderr
    listed = stack.run(*tool, "app", "list", "--no-decoration")
    assert POSTGRES_IMAGE in listed.stdout.split(), listed.stdout + listed.stderr


def test_the_image_refuses_the_example_placeholder_secrets(stack: Stack) -> None:
    result = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--env",
        "CONFIGPROXY_AUTH_TOKEN=change-me-proxy-token",
        SERVICE_IMAGE,
    )
    assert result.returncode != 0
    assert "CONFIGPROXY_AUTH_TOKEN" in result.stderr
    assert "placeholder" in result.stderr
