"""The ContainerRuntime contract, run against InMemoryRuntime, AiodockerRuntime and
SwarmRuntime (on a single-node swarm the test session starts and leaves)."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import aiodocker
import pytest

from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.adapters.memory_runtime import InMemoryRuntime
from remoteappmanager.adapters.swarm import POLL_INTERVAL, SwarmRuntime
from remoteappmanager.domain.confinement import Confinement, ResourceLimits
from remoteappmanager.domain.containers import RUNINFO_NAMESPACE, ContainerSpec, Mount
from remoteappmanager.domain.errors import Exists, InvalidRequest, NotFound, Unable, Unavailable
from remoteappmanager.domain.labels import AppType
from remoteappmanager.domain.sessions import StartStep
from remoteappmanager.ports.runtime import ContainerRuntime
from tests.support.busybox_image import (
    CRASHING_IMAGE,
    ICON_PNG,
    IMAGE_LABELS,
    TEST_IMAGE,
    ensure_test_image,
    remove_containers_labelled,
    tag_image,
    untag_image,
)
from tests.support.services import ServiceMissing, skip_or_fail
from tests.support.swarm import remove_services_labelled

# Every container these tests create carries this label, so teardown finds them all.
TEST_LABEL = "remoteapp-test.contract"


@dataclass
class Backend:
    """One implementation of the port plus the test controls the contract needs."""

    kind: str
    make: Callable[..., ContainerRuntime]
    unreachable: Callable[[], ContainerRuntime]
    image: str
    crashing_image: str
    add_alias: Callable[[str], Awaitable[None]]
    remove_alias: Callable[[str], Awaitable[None]]
    kill: Callable[[ContainerRuntime, str], Awaitable[None]]
    published_on_loopback: bool = True
    """A swarm publishes nothing: its tasks are reached on the overlay network."""


@pytest.fixture(scope="session")
def real_image(docker_engine: None) -> str:
    try:
        return ensure_test_image()
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
        raise AssertionError("unreachable") from exc


@pytest.fixture(scope="session")
def real_crashing_image(docker_engine: None) -> str:
    try:
        return ensure_test_image(CRASHING_IMAGE, crash=True)
    except ServiceMissing as exc:
        skip_or_fail(str(exc))
        raise AssertionError("unreachable") from exc


async def _kill_real(runtime: ContainerRuntime, container_id: str) -> None:
    async with aiodocker.Docker() as docker:
        await docker.containers.container(container_id).kill()


async def _kill_fake(runtime: ContainerRuntime, container_id: str) -> None:
    assert isinstance(runtime, InMemoryRuntime)
    runtime.kill(container_id)


async def _kill_swarm_task(runtime: ContainerRuntime, service_id: str) -> None:
    async with aiodocker.Docker() as docker:
        tasks = await docker.tasks.list(filters={"service": [service_id]})
        for task in tasks:
            container = (task.get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")
            if container:
                await docker.containers.container(container).kill()


SWARM_NETWORK = "remoteapp-test-overlay"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm]),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        # All fakes of one test share the "engine's" images, as real clients of one engine do.
        images: dict[str, Mapping[str, str]] = {TEST_IMAGE: dict(IMAGE_LABELS)}

        def make_fake(**kwargs: float) -> ContainerRuntime:
            runtime = InMemoryRuntime(images=images, **kwargs)  # type: ignore[arg-type]
            runtime.add_image(CRASHING_IMAGE, exits_on_start=True)
            return runtime

        async def add_alias(alias: str) -> None:
            images[alias] = dict(IMAGE_LABELS)

        async def remove_alias(alias: str) -> None:
            images.pop(alias, None)

        def unreachable_fake() -> ContainerRuntime:
            runtime = InMemoryRuntime()
            runtime.available = False
            return runtime

        yield Backend(
            "memory",
            make_fake,
            unreachable_fake,
            TEST_IMAGE,
            CRASHING_IMAGE,
            add_alias,
            remove_alias,
            _kill_fake,
        )
        return

    image = request.getfixturevalue("real_image")
    crashing = request.getfixturevalue("real_crashing_image")
    aliases: list[str] = []
    if request.param == "swarm":
        request.getfixturevalue("swarm_engine")

    async def add_real_alias(alias: str) -> None:
        aliases.append(alias)
        await tag_image(image, alias)

    def unreachable_real() -> ContainerRuntime:
        return AiodockerRuntime("unix:///nonexistent/remoteapp-test/docker.sock")

    try:
        if request.param == "swarm":
            yield Backend(
                "swarm",
                lambda **kwargs: SwarmRuntime(None, network=SWARM_NETWORK, **kwargs),
                lambda: SwarmRuntime("unix:///nonexistent/remoteapp-test/docker.sock"),
                image,
                crashing,
                add_real_alias,
                untag_image,
                _kill_swarm_task,
                published_on_loopback=False,
            )
        else:
            yield Backend(
                "docker",
                lambda **kwargs: AiodockerRuntime(None, **kwargs),
                unreachable_real,
                image,
                crashing,
                add_real_alias,
                untag_image,
                _kill_real,
            )
    finally:
        for alias in aliases:
            await untag_image(alias)


@pytest.fixture
def run_label() -> dict[str, str]:
    return {TEST_LABEL: secrets.token_hex(8)}


@pytest.fixture
async def runtime(backend: Backend, run_label: dict[str, str]) -> AsyncIterator[ContainerRuntime]:
    runtime = backend.make()
    try:
        yield runtime
    finally:
        try:
            for info in await runtime.list(run_label):
                await runtime.remove(info.id)
        finally:
            await runtime.close()
            if backend.kind == "swarm":
                remove_services_labelled(f"{TEST_LABEL}={run_label[TEST_LABEL]}")
            if backend.kind != "memory":
                await remove_containers_labelled(TEST_LABEL, run_label[TEST_LABEL])


def make_spec(
    image: str, run_label: dict[str, str], *, mounts: tuple[Mount, ...] = (), **labels: str
) -> ContainerSpec:
    url_id = secrets.token_hex(16)
    return ContainerSpec(
        name=f"remoteapp-test-{url_id[:12]}",
        image=image,
        labels={
            **run_label,
            RUNINFO_NAMESPACE + "url_id": url_id,
            **{RUNINFO_NAMESPACE + key: value for key, value in labels.items()},
        },
        environment={"JPY_USER": "alice", "URL_ID": url_id, "X11_WIDTH": "1024"},
        mounts=mounts,
    )


# ---------------------------------------------------------------------------- images
async def test_inspect_image_reads_the_labels(backend: Backend, runtime: ContainerRuntime) -> None:
    metadata = await runtime.inspect_image(backend.image)
    assert metadata.name == backend.image
    assert metadata.ui_name == "Busybox test app"
    assert metadata.description == "Answers HTTP on port 8888"
    assert metadata.type is AppType.WEB
    assert metadata.icon_128 == ICON_PNG
    assert metadata.env == {"X11_WIDTH", "X11_HEIGHT", "STARTUPDATA"}


async def test_missing_image_is_not_found(runtime: ContainerRuntime) -> None:
    with pytest.raises(NotFound, match="remoteapp-test/no-such-image:1 is not available"):
        await runtime.inspect_image("remoteapp-test/no-such-image:1")


async def test_image_metadata_is_cached(backend: Backend) -> None:
    alias = f"remoteapp-test/busybox:cache-{secrets.token_hex(4)}"
    cached = backend.make(image_cache_ttl=60.0)
    uncached = backend.make(image_cache_ttl=0.0)
    try:
        await backend.add_alias(alias)
        first = await cached.inspect_image(alias)
        await uncached.inspect_image(alias)
        await backend.remove_alias(alias)

        assert await cached.inspect_image(alias) == first
        with pytest.raises(NotFound):
            await uncached.inspect_image(alias)
    finally:
        await cached.close()
        await uncached.close()


async def test_a_missing_image_is_seen_as_soon_as_it_exists(backend: Backend) -> None:
    alias = f"remoteapp-test/busybox:late-{secrets.token_hex(4)}"
    runtime = backend.make(image_cache_ttl=60.0)
    try:
        with pytest.raises(NotFound):
            await runtime.inspect_image(alias)
        await backend.add_alias(alias)
        assert (await runtime.inspect_image(alias)).ui_name == "Busybox test app"
    finally:
        await runtime.close()


# ---------------------------------------------------------------------------- containers
async def test_create_and_start_publishes_on_localhost(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    spec = make_spec(backend.image, run_label, user="alice")
    container_id = await runtime.create(spec)

    created = await runtime.inspect(container_id)
    assert created is not None
    assert not created.running
    assert created.name == spec.name

    info = await runtime.start(container_id)
    assert info.id == container_id
    assert info.running
    assert info.name == spec.name
    assert info.image == backend.image
    if backend.published_on_loopback:
        assert info.host_ip == "127.0.0.1"
        assert info.host_port is not None
        assert info.host_port > 0
    else:
        # Nothing is published: the task is reached on its overlay address, port 8888.
        assert info.host_ip is not None
        assert ipaddress.ip_address(info.host_ip).is_private
        assert info.host_port == 8888
    assert info.runinfo("user") == "alice"
    assert info.runinfo("url_id") == spec.labels[RUNINFO_NAMESPACE + "url_id"]
    assert await runtime.inspect(container_id) == info


async def test_create_with_a_missing_image_is_not_found(
    runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    spec = make_spec("remoteapp-test/no-such-image:1", run_label)
    with pytest.raises(NotFound, match="not available on the Docker engine"):
        await runtime.create(spec)
    assert await runtime.list(run_label) == []


async def test_name_clash_is_exists(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    spec = make_spec(backend.image, run_label)
    await runtime.create(spec)
    with pytest.raises(Exists, match=spec.name):
        await runtime.create(spec)
    assert len(await runtime.list(run_label)) == 1


async def test_list_by_labels_in_any_state(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    alice_running = await runtime.create(make_spec(backend.image, run_label, user="alice"))
    await runtime.start(alice_running)
    alice_created = await runtime.create(make_spec(backend.image, run_label, user="alice"))
    bob = await runtime.create(make_spec(backend.image, run_label, user="bob"))

    everything = {info.id for info in await runtime.list(run_label)}
    assert everything == {alice_running, alice_created, bob}

    alices = await runtime.list({**run_label, RUNINFO_NAMESPACE + "user": "alice"})
    assert {info.id for info in alices} == {alice_running, alice_created}
    assert {info.id: info.running for info in alices} == {
        alice_running: True,
        alice_created: False,
    }
    by_id = {info.id: info for info in alices}
    assert by_id[alice_running].host_port == (await runtime.inspect(alice_running)).host_port  # type: ignore[union-attr]

    other_run = {TEST_LABEL: secrets.token_hex(8)}
    assert await runtime.list(other_run) == []
    assert await runtime.list({**run_label, RUNINFO_NAMESPACE + "user": "carol"}) == []


async def test_a_single_engine_refuses_placement_constraints(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    spec = replace(make_spec(backend.image, run_label), placement=("node.labels.gpu==true",))
    if backend.kind == "swarm":
        service_id = await runtime.create(spec)
        assert (await runtime.inspect(service_id)) is not None
        return
    with pytest.raises(InvalidRequest, match=r"need a Docker Swarm \(REMOTEAPP_ENGINE=swarm\)"):
        await runtime.create(spec)
    assert await runtime.list(run_label) == []


async def test_remove_is_idempotent(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    container_id = await runtime.create(make_spec(backend.image, run_label))
    await runtime.start(container_id)

    await runtime.remove(container_id)
    assert await runtime.inspect(container_id) is None
    assert await runtime.list(run_label) == []
    await runtime.remove(container_id)
    await runtime.remove("0" * 64)


async def test_inspect_of_an_unknown_container_is_none(runtime: ContainerRuntime) -> None:
    assert await runtime.inspect("0" * 64) is None
    assert await runtime.inspect("no-such-container-" + secrets.token_hex(4)) is None


async def test_start_of_an_unknown_container_is_not_found(runtime: ContainerRuntime) -> None:
    with pytest.raises(NotFound):
        await runtime.start("0" * 64)


async def test_unreachable_engine_is_unavailable(
    backend: Backend, run_label: dict[str, str]
) -> None:
    runtime = backend.unreachable()
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: runtime.inspect_image(backend.image),
            lambda: runtime.create(make_spec(backend.image, run_label)),
            lambda: runtime.start("0" * 64),
            lambda: runtime.inspect("0" * 64),
            lambda: runtime.list(run_label),
            lambda: runtime.remove("0" * 64),
        ]
        for call in calls:
            with pytest.raises(Unavailable, match=r"^Docker engine unavailable: ") as caught:
                await call()
            assert "docker.sock" not in str(caught.value)
    finally:
        await runtime.close()


async def test_a_container_that_exits_is_reported_not_running(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    container_id = await runtime.create(make_spec(backend.image, run_label))
    await runtime.start(container_id)
    await backend.kill(runtime, container_id)

    info = await runtime.inspect(container_id)
    for _ in range(50):
        if info is not None and not info.running:
            break
        await asyncio.sleep(0.1)
        info = await runtime.inspect(container_id)
    assert info is not None
    assert not info.running
    assert info.host_port is None
    listed = await runtime.list(run_label)
    assert [(c.id, c.running, c.host_port) for c in listed] == [(container_id, False, None)]

    await runtime.remove(container_id)
    assert await runtime.inspect(container_id) is None


async def test_a_container_that_exits_at_once_starts_as_not_running(
    backend: Backend, runtime: ContainerRuntime, run_label: dict[str, str]
) -> None:
    container_id = await runtime.create(make_spec(backend.crashing_image, run_label))
    info = await runtime.start(container_id)
    for _ in range(50):
        if not info.running:
            break
        await asyncio.sleep(0.1)
        info = await runtime.inspect(container_id)  # type: ignore[assignment]
    assert not info.running
    assert info.host_port is None


# ---------------------------------------------------------------------------- the real engine
def _get(port: int, path: str) -> tuple[int, str]:
    # Only ever the published port on 127.0.0.1, never a container's bridge address.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


async def _get_when_up(port: int, path: str) -> tuple[int, str]:
    deadline = asyncio.get_running_loop().time() + 15.0
    while True:
        try:
            return await asyncio.to_thread(_get, port, path)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.docker
async def test_the_app_answers_on_the_published_port_with_env_and_mounts(
    real_image: str, run_label: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the host\n")
    runtime = AiodockerRuntime(None)
    try:
        read_only = make_spec(real_image, run_label, mounts=(Mount(str(data), "/data", True),))
        info = await runtime.start(await runtime.create(read_only))
        assert info.host_ip == "127.0.0.1"
        assert info.host_port is not None

        status, body = await _get_when_up(info.host_port, "/")
        assert (status, body) == (200, "hello from busybox\n")
        _, probe = await _get_when_up(info.host_port, "/cgi-bin/probe")
        assert "JPY_USER=alice" in probe.splitlines()
        assert f"URL_ID={read_only.environment['URL_ID']}" in probe.splitlines()
        assert "hello from the host" in probe
        assert probe.rstrip().endswith("READONLY")
        assert not (data / "written").exists()

        writable = make_spec(real_image, run_label, mounts=(Mount(str(data), "/data", False),))
        info = await runtime.start(await runtime.create(writable))
        assert info.host_port is not None
        _, probe = await _get_when_up(info.host_port, "/cgi-bin/probe")
        assert probe.rstrip().endswith("WRITABLE")
    finally:
        for container in await runtime.list(run_label):
            await runtime.remove(container.id)
        await runtime.close()
        await remove_containers_labelled(TEST_LABEL, run_label[TEST_LABEL])


@pytest.mark.docker
async def test_the_container_is_not_privileged_and_has_an_init(
    real_image: str, run_label: dict[str, str]
) -> None:
    runtime = AiodockerRuntime(None)
    try:
        container_id = await runtime.create(make_spec(real_image, run_label))
        async with aiodocker.Docker() as docker:
            host_config = (await docker.containers.get(container_id))._container["HostConfig"]
        assert host_config["Init"] is True
        assert host_config["Privileged"] is False
        assert not host_config.get("CapAdd")
        assert host_config["PortBindings"] == {
            "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
        }
    finally:
        await runtime.close()
        await remove_containers_labelled(TEST_LABEL, run_label[TEST_LABEL])


async def test_an_engine_that_never_answers_is_unavailable_in_bounded_time(tmp_path: Path) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    socket_path = tmp_path / "hung.sock"
    server = await asyncio.start_unix_server(swallow, path=str(socket_path))
    runtime = AiodockerRuntime(f"unix://{socket_path}", request_timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(Unavailable, match=r"no answer within 0\.5 s"):
            await runtime.list({TEST_LABEL: "x"})
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        await runtime.close()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------- the swarm
@pytest.fixture
async def swarm_runtime(
    swarm_engine: str, real_image: str, run_label: dict[str, str]
) -> AsyncIterator[SwarmRuntime]:
    runtime = SwarmRuntime(None, network=SWARM_NETWORK, start_timeout=20)
    try:
        yield runtime
    finally:
        try:
            for info in await runtime.list(run_label):
                await runtime.remove(info.id)
        finally:
            await runtime.close()
            remove_services_labelled(f"{TEST_LABEL}={run_label[TEST_LABEL]}")


@pytest.mark.docker
@pytest.mark.swarm
async def test_a_swarm_session_is_a_service_publishing_nothing(
    swarm_runtime: SwarmRuntime, real_image: str, run_label: dict[str, str]
) -> None:
    spec = replace(
        make_spec(real_image, run_label, user="alice"),
        confinement=Confinement(limits=ResourceLimits(256, 0.5, 128)),
    )
    service_id = await swarm_runtime.create(spec)
    await swarm_runtime.start(service_id)
    async with aiodocker.Docker() as docker:
        service = await docker.services.inspect(service_id)
        tasks = await docker.tasks.list(filters={"service": [service_id]})
    described = service["Spec"]
    template = described["TaskTemplate"]
    for key, value in spec.labels.items():
        assert described["Labels"][key] == value
        assert template["ContainerSpec"]["Labels"][key] == value
    assert described["EndpointSpec"]["Mode"] == "dnsrr"
    assert not described["EndpointSpec"].get("Ports")
    assert not (service.get("Endpoint") or {}).get("Ports")
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Resources"]["Limits"] == {
        "MemoryBytes": 256 * 1024 * 1024,
        "NanoCPUs": 500_000_000,
        "Pids": 128,
    }
    assert template["Resources"]["Reservations"] == {
        "MemoryBytes": 256 * 1024 * 1024,
        "NanoCPUs": 500_000_000,
    }
    assert template["ContainerSpec"]["Init"] is True
    assert template["ContainerSpec"]["Image"].startswith("sha256:")
    [task] = tasks
    networks = [a["Network"]["Spec"]["Name"] for a in task["NetworksAttachments"]]
    assert networks == [SWARM_NETWORK]


@pytest.mark.docker
@pytest.mark.swarm
async def test_a_swarm_start_reports_pulling_the_image_while_its_task_is_preparing(
    swarm_runtime: SwarmRuntime, real_image: str, run_label: dict[str, str]
) -> None:
    # The image is on the node (no registry here): "preparing" is the node checking it and
    # creating the container, often too short to be seen. Whatever the engine did, the steps
    # reported must be a well-formed story, and a "preparing" that a poll alongside saw for
    # several of the runtime's poll intervals must have been reported.
    service_id = await swarm_runtime.create(make_spec(real_image, run_label, user="alice"))
    loop = asyncio.get_running_loop()
    reported: list[tuple[float, StartStep]] = []
    preparing: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with aiodocker.Docker() as docker:
            while not done.is_set():
                for task in await docker.tasks.list(filters={"service": [service_id]}):
                    if (task.get("Status") or {}).get("State") == "preparing":
                        preparing.append(loop.time())
                await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    try:
        info = await swarm_runtime.start(
            service_id, progress=lambda step: reported.append((loop.time(), step))
        )
    finally:
        done.set()
        await watcher

    assert info.running
    steps = [step for _, step in reported]
    assert steps == [StartStep.PULLING, StartStep.STARTING] * (len(steps) // 2)
    if preparing and preparing[-1] - preparing[0] > 5 * POLL_INTERVAL:
        assert StartStep.PULLING in steps, preparing
    print(f"preparing seen for {len(preparing)} polls; steps reported: {steps}")


@pytest.mark.docker
@pytest.mark.swarm
async def test_a_swarm_that_cannot_place_a_session_says_so_at_once(
    swarm_runtime: SwarmRuntime, real_image: str, run_label: dict[str, str]
) -> None:
    spec = replace(make_spec(real_image, run_label), placement=("node.labels.gpu==true",))
    service_id = await swarm_runtime.create(spec)
    started = asyncio.get_running_loop().time()
    with pytest.raises(Unable, match=r"the swarm cannot place it: no suitable node"):
        await swarm_runtime.start(service_id)
    # Well before the start timeout (20 s): the swarm's reason, not a wait.
    assert asyncio.get_running_loop().time() - started < 10


@pytest.mark.docker
@pytest.mark.swarm
async def test_a_task_the_swarm_rejects_ends_the_start_with_its_reason(
    swarm_runtime: SwarmRuntime, real_image: str, run_label: dict[str, str], tmp_path: Path
) -> None:
    # The engine refuses to bind-mount a source that does not exist on the node.
    missing = Mount(str(tmp_path / "not-there"), "/data", True)
    service_id = await swarm_runtime.create(make_spec(real_image, run_label, mounts=(missing,)))
    with pytest.raises(Unable, match=r"the swarm could not start it \(rejected\): .*not-there"):
        await swarm_runtime.start(service_id)
