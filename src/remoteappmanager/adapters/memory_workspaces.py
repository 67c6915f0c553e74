"""In-memory fakes of the workspace and host path ports, for tests and demos."""

from __future__ import annotations

from collections.abc import Iterable

from remoteappmanager.domain.errors import Unable
from remoteappmanager.domain.naming import unix_user_name


class InMemoryWorkspaces:
    """``Workspaces`` that only remembers which users got one.

    Test controls: ``failing = True`` makes ``ensure`` raise ``Unable`` as a full disk would;
    ``created`` lists the paths handed out.
    """

    def __init__(self, root: str = "/srv/remoteapp/workspaces") -> None:
        self.root = root.rstrip("/")
        self.failing = False
        self.created: set[str] = set()

    async def ensure(self, user: str) -> str:
        if self.failing:
            raise Unable("the workspace cannot be prepared: no space left on device")
        path = f"{self.root}/{unix_user_name(user)}"
        self.created.add(path)
        return path


class InMemoryHostPaths:
    """``HostPaths`` over a fixed set of existing paths (``paths``, mutable)."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.paths = set(paths)

    async def exists(self, path: str) -> bool:
        return path in self.paths
