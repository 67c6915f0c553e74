"""In-memory fakes of the workspace and host path ports, for tests and demos."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from remoteappmanager.domain.errors import Unable
from remoteappmanager.domain.naming import unix_user_name
from remoteappmanager.domain.volumes import HostPath, HostPathKind


class InMemoryWorkspaces:
    """``Workspaces`` that only remembers which users got one.

    Test controls: ``failing = True`` makes ``ensure`` raise ``Unable`` as a full disk would;
    ``created`` lists the paths handed out, ``owners`` the uid each was given (None: default).
    """

    def __init__(self, root: str = "/srv/remoteapp/workspaces") -> None:
        self.root = root.rstrip("/")
        self.failing = False
        self.created: set[str] = set()
        self.owners: dict[str, int | None] = {}

    async def ensure(self, user: str, owner: int | None = None) -> str:
        if self.failing:
            raise Unable("the workspace cannot be prepared: no space left on device")
        path = f"{self.root}/{unix_user_name(user)}"
        self.created.add(path)
        self.owners[path] = owner
        return path


class InMemoryHostPaths:
    """``HostPaths`` over a fixed set of existing directories (``paths``, mutable).

    Test controls: ``links`` maps a path to where its symbolic link points (absolute), and
    ``sockets`` lists paths that are neither directories nor files.
    """

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.paths = set(paths)
        self.links: dict[str, str] = {}
        self.sockets: set[str] = set()

    async def exists(self, path: str) -> bool:
        resolved = self._follow(path)
        return resolved in self.paths or resolved in self.sockets

    async def resolve(self, path: str) -> HostPath:
        resolved = self._follow(path)
        if resolved in self.sockets:
            return HostPath(resolved, HostPathKind.OTHER)
        if resolved in self.paths:
            return HostPath(resolved, HostPathKind.DIRECTORY)
        return HostPath(resolved, HostPathKind.MISSING)

    def _follow(self, path: str) -> str:
        for _ in range(40):  # the kernel's limit on links followed
            for link, target in self.links.items():
                if path == link or path.startswith(link + "/"):
                    path = posixpath.normpath(target + path[len(link) :])
                    break
            else:
                return path
        return path
