"""Per-user workspace directories on the local disk, and host path checks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from pathlib import Path

from remoteappmanager.domain.errors import Unable
from remoteappmanager.domain.naming import unix_user_name
from remoteappmanager.domain.volumes import HostPath, HostPathKind

# The first regular account of Debian/Ubuntu images, which application images run as.
DEFAULT_WORKSPACE_UID = 1000
DEFAULT_WORKSPACE_GID = 1000
WORKSPACE_MODE = 0o700
# Others may enter the root (Docker needs nothing more) but not list who has a workspace.
ROOT_MODE = 0o711


class DirectoryWorkspaces:
    """Workspaces as ``<root>/<unix user name>``, mode 0700, owned by ``uid:gid``.

    The directory name comes from ``unix_user_name`` (``[a-z0-9_-]`` only), so no user name
    can climb out of ``root``; an existing entry that is a symlink or not a directory is
    refused rather than followed. Handing the directory to ``uid`` needs root (or
    CAP_CHOWN) unless ``uid`` is the service's own.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        uid: int = DEFAULT_WORKSPACE_UID,
        gid: int = DEFAULT_WORKSPACE_GID,
    ) -> None:
        self._root = Path(root).absolute()
        self._uid = uid
        self._gid = gid

    @property
    def root(self) -> Path:
        return self._root

    async def ensure(self, user: str, owner: int | None = None) -> str:
        uid, gid = (self._uid, self._gid) if owner is None else (owner, owner)
        return await asyncio.to_thread(self._ensure, unix_user_name(user), uid, gid)

    def _ensure(self, name: str, uid: int, gid: int) -> str:
        if "/" in name or name in {"", ".", ".."}:
            raise Unable("no workspace can be made for this user name")
        try:
            self._root.mkdir(mode=ROOT_MODE, parents=True, exist_ok=True)
            root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise Unable(f"the workspace folder cannot be created: {exc.strerror}") from None
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, WORKSPACE_MODE, dir_fd=root_fd)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
            except OSError as exc:
                if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
                    raise Unable(f"the workspace of {name} is not a directory") from None
                raise
            try:
                self._own(fd, name, uid, gid)
            finally:
                os.close(fd)
        except OSError as exc:
            raise Unable(f"the workspace of {name} cannot be prepared: {exc.strerror}") from None
        finally:
            os.close(root_fd)
        return str(self._root / name)

    def _own(self, fd: int, name: str, uid: int, gid: int) -> None:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):
            raise Unable(f"the workspace of {name} is not a directory")
        if (info.st_uid, info.st_gid) != (uid, gid):
            try:
                os.fchown(fd, uid, gid)
            except PermissionError:
                raise Unable(
                    f"the workspace of {name} cannot be given to uid {uid}: the service "
                    "needs root (CAP_CHOWN) or to run as that uid"
                ) from None
        if stat.S_IMODE(info.st_mode) != WORKSPACE_MODE:
            os.fchmod(fd, WORKSPACE_MODE)


class LocalHostPaths:
    """Host path checks on the machine the service runs on (the engine's, for a local one)."""

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(os.path.exists, path)

    async def resolve(self, path: str) -> HostPath:
        return await asyncio.to_thread(_resolve, path)


def _resolve(path: str) -> HostPath:
    resolved = os.path.realpath(path)
    try:
        mode = os.stat(resolved).st_mode
    except OSError:
        return HostPath(resolved, HostPathKind.MISSING)
    if stat.S_ISDIR(mode):
        kind = HostPathKind.DIRECTORY
    elif stat.S_ISREG(mode):
        kind = HostPathKind.FILE
    else:
        kind = HostPathKind.OTHER
    return HostPath(resolved, kind)
