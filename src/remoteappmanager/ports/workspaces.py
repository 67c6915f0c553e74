"""The workspace port: per-user host directories mounted at ``/workspace``, and host paths.

Contract (``InMemoryWorkspaces`` / ``DirectoryWorkspaces``):
- ``ensure(user, owner)`` returns the absolute host path of the user's workspace, creating it
  on first use, owned by the account the application runs as (uid and gid ``owner``, or the
  adapter's default account when None) and readable by nobody else. The same user always gets
  the same path; two users never share one. Raises ``Unable`` when it cannot be created
  (disk, permissions).

Contract (``InMemoryHostPaths`` / ``LocalHostPaths``):
- ``exists(path)`` says whether a host path exists, so that a policy volume whose source is
  missing is skipped instead of letting Docker create it owned by root.
- ``resolve(path)`` returns the path with every symbolic link resolved (as far as the path
  exists) and what it leads to (a directory, a regular file, something else, nothing), so
  that the volume rules judge what would really be mounted.
"""

from __future__ import annotations

from typing import Protocol

from remoteappmanager.domain.volumes import HostPath


class Workspaces(Protocol):
    async def ensure(self, user: str, owner: int | None = None) -> str: ...


class HostPaths(Protocol):
    async def exists(self, path: str) -> bool: ...

    async def resolve(self, path: str) -> HostPath: ...
