"""The Workspaces and HostPaths contracts, against the in-memory fakes and the local disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.adapters.workspaces import DirectoryWorkspaces, LocalHostPaths
from remoteappmanager.domain.errors import Unable
from remoteappmanager.ports.workspaces import HostPaths, Workspaces

HOSTILE_NAMES = ["..", ".", "../../etc", "a/../../b", "/etc", "~root", "x\x00y", "Alice", "alice"]


@pytest.fixture(params=["memory", "directory"])
def workspaces(request: pytest.FixtureRequest, tmp_path: Path) -> Workspaces:
    if request.param == "memory":
        return InMemoryWorkspaces(str(tmp_path / "ws"))
    return DirectoryWorkspaces(tmp_path / "ws", uid=os.getuid(), gid=os.getgid())


async def test_same_user_same_path_other_user_other_path(workspaces: Workspaces) -> None:
    alice = await workspaces.ensure("alice")
    assert await workspaces.ensure("alice") == alice
    assert await workspaces.ensure("bob") != alice
    assert os.path.isabs(alice)


async def test_no_user_name_leaves_the_root(workspaces: Workspaces, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    paths = {await workspaces.ensure(name) for name in HOSTILE_NAMES}
    assert len(paths) == len(HOSTILE_NAMES)
    for path in paths:
        assert Path(path).parent == root


async def test_directory_is_private_and_owned_as_configured(tmp_path: Path) -> None:
    uid, gid = (1000, 1000) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    path = Path(await DirectoryWorkspaces(tmp_path / "ws", uid=uid, gid=gid).ensure("alice"))
    info = os.stat(path)
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (uid, gid)
    assert stat.S_IMODE((tmp_path / "ws").stat().st_mode) == 0o711


async def test_existing_directory_is_repaired_not_replaced(tmp_path: Path) -> None:
    workspaces = DirectoryWorkspaces(tmp_path / "ws", uid=os.getuid(), gid=os.getgid())
    path = Path(await workspaces.ensure("alice"))
    (path / "notes.txt").write_text("keep me")
    os.chmod(path, 0o755)
    assert Path(await workspaces.ensure("alice")) == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert (path / "notes.txt").read_text() == "keep me"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    return target


async def test_a_symlink_in_place_of_a_workspace_is_refused(
    tmp_path: Path, elsewhere: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "alice").symlink_to(elsewhere)
    workspaces = DirectoryWorkspaces(root, uid=os.getuid(), gid=os.getgid())
    with pytest.raises(Unable, match="not a directory"):
        await workspaces.ensure("alice")
    assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0o755


async def test_a_file_in_place_of_a_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "alice").write_text("")
    with pytest.raises(Unable, match="not a directory"):
        await DirectoryWorkspaces(root, uid=os.getuid(), gid=os.getgid()).ensure("alice")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown, and then to drop it")
async def test_a_root_that_cannot_be_created_is_unable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Unable, match="cannot be created"):
        await DirectoryWorkspaces(blocker / "ws").ensure("alice")


@pytest.fixture(params=["memory", "local"])
def host_paths(request: pytest.FixtureRequest, tmp_path: Path) -> HostPaths:
    (tmp_path / "data").mkdir()
    if request.param == "memory":
        return InMemoryHostPaths({str(tmp_path / "data")})
    return LocalHostPaths()


async def test_host_paths_exist_or_not(host_paths: HostPaths, tmp_path: Path) -> None:
    assert await host_paths.exists(str(tmp_path / "data"))
    assert not await host_paths.exists(str(tmp_path / "missing"))
