"""Application containers on the real engine: confined, and unable to reach each other.

The attacker is a user whose own container runs a shell (here: ``docker exec`` into it). It
must not open a TCP connection to another user's container, by address or by name, while the
service (on the host, through the loopback-published port) still reaches both. Each test has a
realm and an application network of its own, removed afterwards. Traffic goes only to
127.0.0.1 and between containers on networks these tests create.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from remoteappmanager.adapters.chp import ChpRouteTable
from remoteappmanager.adapters.docker import ICC_OPTION, AiodockerRuntime
from remoteappmanager.adapters.http_probe import AiohttpReadinessProbe
from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
from remoteappmanager.domain.confinement import Confinement, ResourceLimits
from remoteappmanager.domain.containers import ContainerSpec, Mount
from remoteappmanager.domain.errors import InvalidRequest, Unable
from remoteappmanager.domain.models import Application, Grant, Policy, User, Volume
from remoteappmanager.domain.sessions import STOP_REASON_TEXT, AccessMode, Session, StopReason
from remoteappmanager.domain.volumes import VolumeRules
from remoteappmanager.services.activity import ActivityTracker, StopLog
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions
from tests.integration.test_images import WebSocket
from tests.support.busybox_image import BALLOON_IMAGE, ensure_test_image
from tests.support.services import Proxy, ServiceMissing, skip_or_fail
from tests.support.session_images import WEB_IMAGE, ensure_session_images, remove_realm

pytestmark = [pytest.mark.docker, pytest.mark.proxy, pytest.mark.timeout(600)]

WEBAPP = "remoteapp-demo/webapp:latest"
VNCAPP = "remoteapp-demo/vncapp:latest"
LIMITS = ResourceLimits(memory_mb=512, cpus=0.5, pids=256)


def docker_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=check
    )


@pytest.fixture(scope="module")
def session_images(docker_engine: None) -> None:
    try:
        ensure_session_images()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="module")
def demo_images(docker_engine: None) -> None:
    """The demo images, built by images/build.sh (never here: it takes minutes)."""
    missing = [
        image for image in (WEBAPP, VNCAPP) if docker_cli("image", "inspect", image).returncode
    ]
    if missing:
        skip_or_fail(f"demo images not built (run images/build.sh): {', '.join(missing)}")


@dataclass
class World:
    realm: str
    network: str
    runtime: AiodockerRuntime
    sessions: Sessions
    proxy: Proxy
    make: Callable[..., Sessions]


@pytest.fixture
async def world(proxy: Proxy, tmp_path: Path, docker_engine: None) -> AsyncIterator[World]:
    tag = secrets.token_hex(4)
    realm, network = f"conf-{tag}", f"remoteapp-test-{tag}"
    runtime = AiodockerRuntime()
    routes = ChpRouteTable(proxy.api_url, proxy.token, retries=1, backoff=0.01)
    probe = AiohttpReadinessProbe()
    (tmp_path / "shared").mkdir()

    def make(workspace_uid_base: int | None = None) -> Sessions:
        return Sessions(
            runtime,
            routes,
            DirectoryWorkspaces(tmp_path / "workspaces", uid=os.getuid(), gid=os.getgid()),
            LocalHostPaths(),
            probe,
            realm=realm,
            access=AccessMode.DIRECT,
            network_timeout=60,
            watch_interval=0.5,
            confinement=Confinement(limits=LIMITS, network=network),
            volume_rules=VolumeRules.of([str(tmp_path / "shared")]),
            workspace_uid_base=workspace_uid_base,
        )

    try:
        yield World(realm, network, runtime, make(), proxy, make)
    finally:
        await remove_realm(realm)
        docker_cli("network", "rm", network)
        await probe.close()
        await routes.close()
        await runtime.close()


def grant(user: str, image: str, policy: Policy | None = None) -> Grant:
    user_id = secrets.randbelow(10_000) + 1
    return Grant(
        secrets.token_hex(16), User(user_id, user), Application(1, image), policy or Policy()
    )


def inspect(container_id: str) -> dict[str, Any]:
    result = docker_cli("inspect", container_id, check=True)
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found[0]


def address_on(container_id: str, network: str) -> str:
    return str(inspect(container_id)["NetworkSettings"]["Networks"][network]["IPAddress"])


def exec_in(container_id: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside a container, as its own user (what a shell in the app can do)."""
    return docker_cli("exec", container_id, *command)


def http_from(container_id: str, host: str, path: str) -> subprocess.CompletedProcess[str]:
    """GET ``path`` from ``host``:8888 with busybox nc inside the container (3 s at most)."""
    request = f"GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"
    return exec_in(container_id, "sh", "-c", f'printf "{request}" | nc -w 3 {host} 8888')


def get(proxy: Proxy, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(proxy.public_url + path, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


async def start(world: World, user: str, image: str = WEB_IMAGE) -> Session:
    session = await world.sessions.start(grant(user, image))
    assert session.container_id is not None
    return session


# ------------------------------------------------------------------------------ isolation
async def test_one_tenant_cannot_reach_another_tenants_container(
    world: World, session_images: None
) -> None:
    alice = await start(world, "alice")
    bob = await start(world, "bob")
    assert alice.container_id is not None
    assert bob.container_id is not None
    bob_name = inspect(bob.container_id)["Name"].lstrip("/")
    bob_address = address_on(bob.container_id, world.network)
    alice_address = address_on(alice.container_id, world.network)
    page = f"{bob.urlpath}/"

    # The service reaches both, through the proxy and the loopback-published ports.
    for session in (alice, bob):
        status, body = await asyncio.to_thread(get, world.proxy, f"{session.urlpath}/")
        assert (status, body.split(" from ")[0]) == (200, f"hello {session.user}")

    # Alice's shell works, and knows Bob's container by name...
    own = await asyncio.to_thread(http_from, alice.container_id, alice_address, f"{alice.urlpath}/")
    assert own.returncode == 0, own.stderr
    assert "hello alice" in own.stdout
    lookup = await asyncio.to_thread(exec_in, alice.container_id, "nslookup", bob_name)
    assert bob_address in lookup.stdout, lookup

    # ...but cannot connect to it, by address or by name.
    for host in (bob_address, bob_name):
        attempt = await asyncio.to_thread(http_from, alice.container_id, host, page)
        assert attempt.returncode != 0, f"alice reached bob at {host}: {attempt.stdout!r}"
        assert "HTTP/1" not in attempt.stdout

    # The check can fail: on a network that lets containers talk, the same request succeeds.
    open_network = f"{world.network}-open"
    docker_cli("network", "create", "--label", f"remoteapp-test={world.realm}", open_network)
    try:
        docker_cli("network", "connect", open_network, alice.container_id, check=True)
        docker_cli(
            "network", "connect", "--alias", "bob-open", open_network, bob.container_id, check=True
        )
        reachable = address_on(bob.container_id, open_network)
        for host in (reachable, "bob-open"):
            attempt = await asyncio.to_thread(http_from, alice.container_id, host, page)
            assert attempt.returncode == 0, attempt.stderr
            assert "hello bob" in attempt.stdout
    finally:
        for session in (alice, bob):
            docker_cli("network", "disconnect", "-f", open_network, str(session.container_id))
        docker_cli("network", "rm", open_network)


async def test_the_network_is_created_without_inter_container_traffic(
    world: World, session_images: None
) -> None:
    await start(world, "alice")

    network = json.loads(docker_cli("network", "inspect", world.network, check=True).stdout)[0]

    assert network["Driver"] == "bridge"
    assert network["Options"][ICC_OPTION] == "false"


async def test_a_network_that_lets_containers_talk_is_refused(
    world: World, session_images: None
) -> None:
    docker_cli("network", "create", world.network, check=True)

    with pytest.raises(Unable, match="lets containers reach each other"):
        await world.sessions.start(grant("alice", WEB_IMAGE))

    assert not docker_cli(
        "ps", "-aq", "--filter", f"label=eu.simphony-project.docker.runinfo.realm={world.realm}"
    ).stdout.strip()


async def test_a_network_removed_behind_the_services_back_is_made_again(
    world: World, session_images: None
) -> None:
    first = await start(world, "alice")
    await world.sessions.stop("alice", first.url_id)
    docker_cli("network", "rm", world.network, check=True)

    again = await start(world, "alice")

    assert again.container_id is not None
    assert world.network in inspect(again.container_id)["NetworkSettings"]["Networks"]


# ------------------------------------------------------------------------------ confinement
async def test_containers_are_confined_as_the_engine_reports(
    world: World, session_images: None
) -> None:
    session = await start(world, "alice")
    assert session.container_id is not None

    host = inspect(session.container_id)["HostConfig"]

    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Init"] is True
    assert host["PidsLimit"] == 256
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == world.network
    assert [binding["HostIp"] for binding in host["PortBindings"]["8888/tcp"]] == ["127.0.0.1"]
    # And the kernel agrees, inside the container.
    status = exec_in(session.container_id, "cat", "/proc/self/status").stdout
    assert "NoNewPrivs:\t1" in status
    assert "CapEff:\t0000000000000000" in status
    assert "CapBnd:\t0000000000000000" in status


@pytest.mark.parametrize("image", [WEBAPP, VNCAPP])
async def test_the_demo_images_start_and_serve_under_confinement(
    world: World, demo_images: None, image: str
) -> None:
    session = await start(world, "alice", image)
    assert session.container_id is not None

    status, _ = await asyncio.to_thread(get, world.proxy, f"{session.urlpath}/")

    assert status == 200
    host = inspect(session.container_id)["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    if image == VNCAPP:
        port = int(host["PortBindings"]["8888/tcp"][0]["HostPort"] or 0) or _published(
            session.container_id
        )
        greeting = await asyncio.to_thread(_rfb_greeting, port, f"{session.urlpath}/websockify")
        assert greeting.startswith(b"RFB 003.00")


async def test_with_a_uid_base_each_user_runs_as_the_owner_of_their_workspace(
    world: World, demo_images: None, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        skip_or_fail("handing workspaces to other uids needs root (CAP_CHOWN)")
    sessions = world.make(workspace_uid_base=300_000)
    home = Policy(allow_home=True)
    alice = await sessions.start(
        Grant(secrets.token_hex(16), User(11, "alice"), Application(1, WEBAPP), home)
    )
    bob = await sessions.start(
        Grant(secrets.token_hex(16), User(12, "bob"), Application(1, WEBAPP), home)
    )

    for session, uid in ((alice, 300_011), (bob, 300_012)):
        assert session.container_id is not None
        assert exec_in(session.container_id, "id", "-u").stdout.strip() == str(uid)
        workspace = (tmp_path / "workspaces" / session.user).stat()
        assert (workspace.st_uid, workspace.st_gid) == (uid, uid)
        assert exec_in(session.container_id, "touch", "/workspace/mine").returncode == 0
        assert (tmp_path / "workspaces" / session.user / "mine").stat().st_uid == uid
        status, _ = await asyncio.to_thread(get, world.proxy, f"{session.urlpath}/")
        assert status == 200


def _published(container_id: str) -> int:
    return int(inspect(container_id)["NetworkSettings"]["Ports"]["8888/tcp"][0]["HostPort"])


def _rfb_greeting(port: int, path: str) -> bytes:
    ws = WebSocket(port, path)
    try:
        assert ws.status == 101, ws.headers
        return ws.read(12)
    finally:
        ws.close()


# ------------------------------------------------------------------------------ volumes
@pytest.fixture
def planted(world: World, tmp_path: Path) -> Iterator[Path]:
    """A link under the volume root that leads to the host's /etc."""
    link = tmp_path / "shared" / "escape"
    link.symlink_to("/etc")
    yield link
    link.unlink()


async def test_a_link_out_of_the_root_is_never_mounted(
    world: World, session_images: None, planted: Path
) -> None:
    policy = Policy(volume=Volume.parse(f"{planted}:/data:ro"))

    with pytest.raises(Unable, match="symbolic link"):
        await world.sessions.start(grant("mallory", WEB_IMAGE, policy))

    assert not docker_cli(
        "ps", "-aq", "--filter", f"label=eu.simphony-project.docker.runinfo.realm={world.realm}"
    ).stdout.strip()


async def test_a_volume_under_the_root_is_mounted_read_only(
    world: World, session_images: None, tmp_path: Path
) -> None:
    data = tmp_path / "shared" / "project"
    data.mkdir()
    (data / "hello.txt").write_text("shared\n")
    session = await world.sessions.start(
        grant("alice", WEB_IMAGE, Policy(volume=Volume.parse(f"{data}:/data:ro")))
    )
    assert session.container_id is not None

    assert exec_in(session.container_id, "cat", "/data/hello.txt").stdout == "shared\n"
    assert exec_in(session.container_id, "touch", "/data/x").returncode != 0


async def test_the_adapter_never_mounts_the_engines_data_directory(docker_engine: None) -> None:
    # Last line of defence in the adapter: the engine's own data directory, wherever it is.
    runtime = AiodockerRuntime()
    try:
        data_root = await runtime.data_root()
        spec = ContainerSpec(
            name=f"conf-{secrets.token_hex(4)}",
            image=WEB_IMAGE,
            labels={},
            environment={},
            mounts=(Mount(f"{data_root}/volumes", "/data", read_only=True),),
            confinement=Confinement(network=None),
        )
        with pytest.raises(InvalidRequest, match="engine's data directory"):
            await runtime.create(spec)
    finally:
        await runtime.close()
    async with aiodocker.Docker() as docker:
        assert str((await docker.system.info())["DockerRootDir"]) == data_root


# ------------------------------------------------------------------------------ limits
async def test_a_policys_limits_are_what_the_engine_enforces(
    world: World, session_images: None
) -> None:
    policy = Policy(memory_limit_mb=128, cpu_limit=0.5, pids_limit=64)
    session = await world.sessions.start(grant("alice", WEB_IMAGE, policy))
    default = await world.sessions.start(grant("bob", WEB_IMAGE))
    assert session.container_id is not None
    assert default.container_id is not None

    host = inspect(session.container_id)["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    # Without values of its own a policy gets the deployment's.
    other = inspect(default.container_id)["HostConfig"]
    assert (other["Memory"], other["NanoCpus"], other["PidsLimit"]) == (
        512 * 1024 * 1024,
        500_000_000,
        256,
    )
    # The engine's start time is the session's.
    listed = await world.sessions.get("alice", session.url_id)
    assert listed.started_at is not None
    assert abs(listed.started_at - time.time()) < 120


async def test_a_memory_balloon_is_killed_and_reported_as_out_of_memory(
    world: World, docker_engine: None
) -> None:
    image = ensure_test_image(BALLOON_IMAGE, balloon=True)
    database = InMemoryDatabase()
    tracker = ActivityTracker()
    world.sessions.stop_log = StopLog(database.unit_of_work, tracker)
    session = await world.sessions.start(
        grant("alice", image, Policy(memory_limit_mb=128, pids_limit=64))
    )
    assert session.container_id is not None

    for _ in range(120):
        found = await world.runtime.inspect(session.container_id)
        assert found is not None
        if not found.running:
            break
        await asyncio.sleep(0.5)
    assert found.oom_killed, "the balloon was not killed by the kernel for its memory"

    routes = world.sessions._routes
    await Reconciler(world.runtime, routes, world.sessions).reconcile_once()

    stop = await world.sessions.stop_log.stop_of("alice", session.url_id)
    assert stop is not None
    assert stop.reason is StopReason.OOM
    assert STOP_REASON_TEXT[stop.reason] == "out of memory"
    assert await world.runtime.inspect(session.container_id) is None
