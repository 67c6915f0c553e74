"""The volume rules: what a grant may mount from the host, and where in the container."""

from __future__ import annotations

from pathlib import Path

import pytest

from remoteappmanager import bootstrap
from remoteappmanager.adapters.memory_identity import InMemoryIdentityProvider
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths
from remoteappmanager.domain.errors import Forbidden, InvalidRequest
from remoteappmanager.domain.models import Volume, VolumeMode
from remoteappmanager.domain.volumes import (
    VolumeRules,
    check_volume_root,
    check_volume_target,
)
from remoteappmanager.services.catalogue import VolumeGuard
from remoteappmanager.settings import SettingsError, load_settings

RULES = VolumeRules.of(["/srv/data", "/mnt/shared"], forbidden=["/mnt/shared/workspaces"])
# Rules as an operator could not configure them: every path a root. System paths must still be
# refused, whatever the roots say.
EVERYTHING = VolumeRules(roots=("/",))


def volume(source: str, target: str = "/data", mode: str = "ro") -> Volume:
    return Volume.of(source, target, mode)


@pytest.mark.parametrize(
    "source",
    [
        "/",
        "/proc",
        "/proc/1/root",
        "/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/sda",
        "/etc",
        "/etc/shadow",
        "/boot",
        "/root",
        "/root/.ssh",
        "/run",
        "/var/run",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/srv/data/docker.sock",
        "/home/someone/docker.sock",
        "/var/lib/docker",
        "/var/lib/docker/volumes/x/_data",
        "/var",  # contains /var/lib/docker and /var/run
        "/var/lib",
        "/usr",
        "/usr/bin",
        "/lib",
    ],
)
def test_system_paths_are_never_mounted_whatever_the_roots(source: str) -> None:
    with pytest.raises(Forbidden, match="volume source"):
        EVERYTHING.check(volume(source))
    with pytest.raises(Forbidden, match="volume source"):
        RULES.check(volume(source))


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/proc",
        "/proc/sys",
        "/sys",
        "/sys/kernel",
        "/dev",
        "/dev/shm",
        "/etc",
        "/etc/passwd",
        "/bin",
        "/usr",
        "/usr/bin",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/var",
        "/tmp",
        "/run",
    ],
)
def test_system_targets_are_refused(target: str) -> None:
    with pytest.raises(Forbidden, match="volume target"):
        RULES.check(volume("/srv/data", target))


@pytest.mark.parametrize("target", ["/data", "/mnt/shared", "/usr/local/data", "/home/app/data"])
def test_ordinary_targets_are_accepted(target: str) -> None:
    assert check_volume_target(target) == target


@pytest.mark.parametrize(
    "source", ["/srv/data", "/srv/data/project", "/mnt/shared/a/b", "/srv/data/docker.socket"]
)
def test_sources_under_a_root_are_accepted(source: str) -> None:
    assert RULES.check(volume(source)) == volume(source)


@pytest.mark.parametrize(
    "source",
    [
        "/srv",  # above a root
        "/srv/database",  # a sibling sharing the root's prefix
        "/srv/data-private",
        "/mnt/other",
        "/home/alice",
        "/tmp",
    ],
)
def test_sources_outside_the_roots_are_refused(source: str) -> None:
    with pytest.raises(Forbidden, match="outside the folders grants may mount"):
        RULES.check(volume(source))


@pytest.mark.parametrize("source", ["/mnt/shared/workspaces/alice", "/mnt/shared"])
def test_paths_of_the_deployment_are_refused_even_under_a_root(source: str) -> None:
    with pytest.raises(Forbidden, match="/mnt/shared/workspaces"):
        RULES.check(volume(source))


def test_without_roots_no_host_folder_may_be_granted() -> None:
    with pytest.raises(Forbidden, match="REMOTEAPP_VOLUME_ROOTS"):
        VolumeRules().check(volume("/srv/data"))


@pytest.mark.parametrize(
    "spec",
    ["/srv/data/../../etc:/data:ro", "/srv/data/..:/data:ro", "/srv/data:/data/../proc:ro"],
)
def test_dot_dot_never_gets_out_of_a_root(spec: str) -> None:
    with pytest.raises(InvalidRequest, match=r"\.\."):
        RULES.check(Volume.parse(spec))


@pytest.mark.parametrize("root", ["/", "/etc", "/var", "/var/lib/docker", "/proc/x", "relative"])
def test_roots_that_are_or_contain_system_paths_are_refused(root: str) -> None:
    with pytest.raises(InvalidRequest):
        check_volume_root(root)


# ------------------------------------------------------------------------------ links
@pytest.fixture
def host() -> InMemoryHostPaths:
    host = InMemoryHostPaths({"/srv/data", "/srv/data/project", "/etc", "/var/run"})
    host.sockets.add("/var/run/docker.sock")
    return host


async def test_a_symbolic_link_out_of_a_root_is_refused(host: InMemoryHostPaths) -> None:
    host.links["/srv/data/escape"] = "/etc"
    guard = VolumeGuard(RULES, host)

    with pytest.raises(Forbidden, match="symbolic link"):
        await guard.check(volume("/srv/data/escape"))
    with pytest.raises(Forbidden, match="symbolic link"):
        await guard.check(volume("/srv/data/escape/ssl"))


async def test_a_symbolic_link_to_the_docker_socket_is_refused(host: InMemoryHostPaths) -> None:
    host.links["/srv/data/engine"] = "/var/run/docker.sock"
    guard = VolumeGuard(RULES, host)

    with pytest.raises(Forbidden):
        await guard.check(volume("/srv/data/engine"))


async def test_a_socket_under_a_root_is_refused(host: InMemoryHostPaths) -> None:
    host.sockets.add("/srv/data/app.sock")
    guard = VolumeGuard(RULES, host)

    with pytest.raises(Forbidden, match="socket"):
        await guard.check(volume("/srv/data/app.sock"))


async def test_a_link_within_the_roots_is_mounted_as_what_it_points_to(
    host: InMemoryHostPaths,
) -> None:
    host.paths.add("/mnt/shared/results")
    host.links["/srv/data/results"] = "/mnt/shared/results"
    guard = VolumeGuard(RULES, host)

    checked = await guard.check(volume("/srv/data/results", mode="rw"))

    assert checked == volume("/mnt/shared/results", mode="rw")


async def test_a_root_that_is_a_link_is_judged_by_where_it_leads(host: InMemoryHostPaths) -> None:
    host.paths.add("/export/data/project")
    host.links["/srv/data"] = "/export/data"
    guard = VolumeGuard(RULES, host)

    checked = await guard.check(volume("/srv/data/project"))

    assert checked.source == "/export/data/project"


async def test_the_engine_data_directory_given_later_is_refused(host: InMemoryHostPaths) -> None:
    guard = VolumeGuard(RULES, host)

    with pytest.raises(Forbidden, match="/srv/data/engine"):
        await guard.check(volume("/srv/data/engine/x"), forbidden=("/srv/data/engine",))


def test_the_settings_forbid_the_workspaces_and_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", "/srv")
    monkeypatch.setenv("REMOTEAPP_DATABASE_URL", "/srv/remoteapp/remoteapp.db")
    rules = load_settings().volume_rules

    assert rules.roots == ("/srv",)
    for source in (
        "/srv/remoteapp/workspaces/alice",
        "/srv/remoteapp/remoteapp.db",
        "/srv/remoteapp",
    ):
        with pytest.raises(Forbidden):
            rules.check(volume(source))
    assert rules.check(volume("/srv/data")).source == "/srv/data"


@pytest.mark.parametrize(
    ("roots", "volume_spec", "says"),
    [
        ("", "/srv/data:/data:ro", "REMOTEAPP_VOLUME_ROOTS"),
        ("/srv/data", "/etc:/data:ro", "never mounted"),
        ("/srv/data", "/srv/data:/proc:ro", "volume target"),
    ],
)
def test_demo_grants_with_forbidden_volumes_stop_the_service_from_starting(
    monkeypatch: pytest.MonkeyPatch, roots: str, volume_spec: str, says: str
) -> None:
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", roots)
    settings = load_settings(
        configproxy_auth_token="p" * 32,
        jupyterhub_api_token="h" * 32,
        demo_applications={"remoteapp-demo/webapp:latest": {"volume": volume_spec}},
    )

    with pytest.raises(SettingsError, match=r"^REMOTEAPP_DEMO_APPLICATIONS: ") as refused:
        bootstrap.build(settings, identity=InMemoryIdentityProvider())

    assert says in str(refused.value)


# ---------------------------------------------------------------------------- a swarm's storage
def test_on_a_swarm_a_source_outside_the_shared_roots_is_refused() -> None:
    rules = VolumeRules.of(["/srv/data", "/scratch"], shared=["/srv"])
    assert rules.check(Volume("/srv/data/project", "/data", VolumeMode.RO)).source == (
        "/srv/data/project"
    )
    with pytest.raises(Forbidden, match="not on storage that every swarm node shares"):
        rules.check(Volume("/scratch/mine", "/data", VolumeMode.RO))
    # Node-local by default: with no shared root declared, nothing may be mounted.
    with pytest.raises(Forbidden, match=r"REMOTEAPP_SWARM_SHARED_ROOTS: none"):
        VolumeRules.of(["/srv/data"], shared=[]).check(Volume("/srv/data/x", "/d", VolumeMode.RO))
    # On one engine the shared roots ask nothing more.
    assert VolumeRules.of(["/scratch"]).check(Volume("/scratch/x", "/d", VolumeMode.RO))


def test_the_swarm_engine_takes_the_shared_roots_into_the_volume_rules(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    settings = load_settings(
        engine="swarm",
        volume_roots=f"{shared}/data,/scratch",
        swarm_shared_roots=str(shared),
        workspace_root=str(shared / "workspaces"),
    )
    with pytest.raises(Forbidden, match="every swarm node shares"):
        settings.volume_rules.check(Volume("/scratch/x", "/d", VolumeMode.RO))
    docker = load_settings(volume_roots="/scratch")
    assert docker.volume_rules.check(Volume("/scratch/x", "/d", VolumeMode.RO))


def test_the_swarm_engine_refuses_workspaces_on_node_local_storage(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="REMOTEAPP_SWARM_SHARED_ROOTS"):
        load_settings(engine="swarm", workspace_root=str(tmp_path / "local"))
    with pytest.raises(SettingsError, match="REMOTEAPP_ENGINE"):
        load_settings(engine="kubernetes")
