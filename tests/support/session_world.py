"""Sessions and a reconciler over in-memory fakes, with the controls the unit tests need."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from remoteappmanager.adapters.memory_db import InMemoryDatabase
from remoteappmanager.adapters.memory_probe import InMemoryReadinessProbe
from remoteappmanager.adapters.memory_runtime import InMemoryRouteTable, InMemoryRuntime
from remoteappmanager.adapters.memory_workspaces import InMemoryHostPaths, InMemoryWorkspaces
from remoteappmanager.domain.models import Application, Grant, Policy, User
from remoteappmanager.domain.sessions import AccessMode
from remoteappmanager.domain.volumes import VolumeRules
from remoteappmanager.services.reconcile import Reconciler
from remoteappmanager.services.sessions import Sessions

NS = "eu.simphony-project.docker."
IMAGE = "remoteapp-test/desktop:latest"
IMAGE_LABELS = {
    NS + "ui_name": "Test desktop",
    NS + "type": "vncapp",
    NS + "env.x11-width": "",
    NS + "env.x11-height": "",
    NS + "env.startupdata": "",
}
REALM = "unit-realm"
GATE_URL = "http://127.0.0.1:10101"
# Grants may mount host folders under /srv.
VOLUME_RULES = VolumeRules.of(["/srv"])


@dataclass
class World:
    runtime: InMemoryRuntime
    routes: InMemoryRouteTable
    workspaces: InMemoryWorkspaces
    host_paths: InMemoryHostPaths
    probe: InMemoryReadinessProbe
    database: InMemoryDatabase
    sessions: Sessions
    reconciler: Reconciler

    def sessions_for(
        self,
        realm: str = REALM,
        access: AccessMode = AccessMode.DIRECT,
        max_sessions_per_user: int | None = None,
    ) -> Sessions:
        """Another service over the same engine and proxy (a restart, or another realm)."""
        return Sessions(
            self.runtime,
            self.routes,
            self.workspaces,
            self.host_paths,
            self.probe,
            realm=realm,
            access=access,
            gate_url=GATE_URL,
            network_timeout=5,
            watch_interval=0.01,
            unit_of_work=self.database.unit_of_work,
            volume_rules=VOLUME_RULES,
            max_sessions_per_user=max_sessions_per_user,
        )


def make_world(access: AccessMode = AccessMode.DIRECT, realm: str = REALM) -> World:
    runtime = InMemoryRuntime(image_cache_ttl=0)
    runtime.add_image(IMAGE, IMAGE_LABELS)
    routes = InMemoryRouteTable()
    world = World(
        runtime=runtime,
        routes=routes,
        workspaces=InMemoryWorkspaces(),
        host_paths=InMemoryHostPaths(),
        probe=InMemoryReadinessProbe(),
        database=InMemoryDatabase(),
        sessions=None,  # type: ignore[arg-type]
        reconciler=None,  # type: ignore[arg-type]
    )
    world.sessions = world.sessions_for(realm, access)
    world.reconciler = Reconciler(runtime, routes, world.sessions)
    return world


def make_grant(
    user: str = "alice", policy: Policy | None = None, image: str = IMAGE, user_id: int = 1
) -> Grant:
    return Grant(
        mapping_id=secrets.token_hex(16),
        user=User(id=user_id, name=user),
        application=Application(id=1, image=image),
        policy=policy or Policy(),
    )


async def wait_until(condition: Callable[[], object], within: float = 2.0) -> None:
    """Let other tasks run until ``condition()`` is true (a test fails after ``within`` s)."""
    for _ in range(int(within / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition was not met in time")
