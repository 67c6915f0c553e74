"""The Sessions service over in-memory fakes: starting, stopping, listing, and every fault."""

from __future__ import annotations

import asyncio
import inspect
import re
from dataclasses import replace

import pytest

from remoteappmanager.domain.containers import (
    RUNINFO_MAPPING_ID,
    RUNINFO_REALM,
    RUNINFO_URL_ID,
    RUNINFO_URLPATH,
    RUNINFO_USER,
    Route,
)
from remoteappmanager.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Unable,
    Unavailable,
)
from remoteappmanager.domain.models import Policy, Volume
from remoteappmanager.domain.sessions import AccessMode, SessionState
from remoteappmanager.ports.probe import ReadinessProbe
from remoteappmanager.ports.routes import RouteTable
from remoteappmanager.ports.runtime import ContainerRuntime
from remoteappmanager.ports.workspaces import HostPaths, Workspaces
from remoteappmanager.services.sessions import Sessions
from tests.support.session_world import (
    GATE_URL,
    IMAGE,
    REALM,
    World,
    make_grant,
    make_world,
    wait_until,
)


@pytest.fixture
def world() -> World:
    return make_world()


def nothing_left(world: World) -> bool:
    return not world.runtime.container_ids and not world.routes.all_paths


@pytest.mark.parametrize(
    ("port", "fake"),
    [
        (ContainerRuntime, "runtime"),
        (RouteTable, "routes"),
        (Workspaces, "workspaces"),
        (HostPaths, "host_paths"),
        (ReadinessProbe, "probe"),
    ],
)
def test_fakes_offer_every_operation_of_their_port(world: World, port: type, fake: str) -> None:
    """Each fake has every method of its port, with the same parameters and the same kind
    (coroutine or not): the services can be tested on it as they run on the real adapter."""
    implementation = getattr(world, fake)
    operations = [
        name for name, member in vars(port).items() if callable(member) and not name.startswith("_")
    ]
    assert operations, f"{port.__name__} declares no operation"
    for name in operations:
        declared = getattr(port, name)
        offered = getattr(implementation, name, None)
        assert offered is not None, f"{type(implementation).__name__} has no {name}"
        assert inspect.iscoroutinefunction(offered) == inspect.iscoroutinefunction(declared), name
        wanted = list(inspect.signature(declared).parameters)[1:]  # without self
        assert list(inspect.signature(offered).parameters) == wanted, name


# ------------------------------------------------------------------------ start
async def test_start_runs_the_container_and_routes_the_proxy_to_it(world: World) -> None:
    grant = make_grant("alice")

    session = await world.sessions.start(grant)

    assert session.state is SessionState.RUNNING
    assert re.fullmatch(r"[a-z0-9]{26,}", session.url_id)
    assert session.urlpath == f"/user/alice/containers/{session.url_id}"
    assert session.user == "alice"
    assert session.mapping_id == grant.mapping_id
    assert session.image == IMAGE
    assert session.container_id in world.runtime.container_ids
    routes = await world.routes.list()
    assert set(routes) == {session.urlpath}
    route = routes[session.urlpath]
    assert route.target == f"http://127.0.0.1:{session.host_port}"
    assert (route.user, route.url_id) == ("alice", session.url_id)
    assert world.probe.probed == [f"http://127.0.0.1:{session.host_port}{session.urlpath}/"]
    labels = world.runtime.spec_of(session.container_id).labels
    assert labels[RUNINFO_URL_ID] == session.url_id
    assert labels[RUNINFO_URLPATH] == session.urlpath
    assert labels[RUNINFO_REALM] == REALM
    assert labels[RUNINFO_USER] == "alice"
    assert labels[RUNINFO_MAPPING_ID] == grant.mapping_id


async def test_gated_mode_routes_to_the_gate() -> None:
    world = make_world(access=AccessMode.GATED)
    session = await world.sessions.start(make_grant())
    assert (await world.routes.list())[session.urlpath].target == GATE_URL


def test_gated_mode_needs_a_gate_url(world: World) -> None:
    with pytest.raises(ValueError, match="gate"):
        type(world.sessions)(
            world.runtime,
            world.routes,
            world.workspaces,
            world.host_paths,
            world.probe,
            realm=REALM,
            access=AccessMode.GATED,
        )


async def test_start_passes_the_chosen_resolution_and_startup_data(world: World) -> None:
    grant = make_grant(policy=Policy(allow_home=True, allow_startup_data=True))
    session = await world.sessions.start(
        grant,
        {
            "resolution": {"resolution": "1920x1080"},
            "startupdata": {"startupdata": "/workspace/run.in"},
        },
    )
    assert session.container_id is not None
    env = world.runtime.spec_of(session.container_id).environment
    assert (env["X11_WIDTH"], env["X11_HEIGHT"], env["X11_DEPTH"]) == ("1920", "1080", "16")
    assert env["STARTUPDATA"] == "/workspace/run.in"


async def test_workspace_is_created_and_mounted_only_when_the_policy_allows_home(
    world: World,
) -> None:
    plain = await world.sessions.start(make_grant("bob"))
    assert plain.container_id is not None
    assert world.runtime.spec_of(plain.container_id).mounts == ()
    assert world.workspaces.created == set()

    home = await world.sessions.start(make_grant("carol", Policy(allow_home=True)))
    assert home.container_id is not None
    (mount,) = world.runtime.spec_of(home.container_id).mounts
    assert (mount.target, mount.read_only) == ("/workspace", False)
    assert world.workspaces.created == {mount.source}


async def test_policy_volume_is_skipped_when_its_source_is_missing(world: World) -> None:
    policy = Policy(volume=Volume.parse("/srv/data:/data:ro"))
    missing = await world.sessions.start(make_grant("dan", policy))
    assert missing.container_id is not None
    assert world.runtime.spec_of(missing.container_id).mounts == ()

    world.host_paths.paths.add("/srv/data")
    present = await world.sessions.start(make_grant("erin", policy))
    assert present.container_id is not None
    (mount,) = world.runtime.spec_of(present.container_id).mounts
    assert (mount.source, mount.target, mount.read_only) == ("/srv/data", "/data", True)


async def test_starting_again_replaces_the_session_of_the_same_grant(world: World) -> None:
    grant = make_grant()
    first = await world.sessions.start(grant)
    second = await world.sessions.start(grant)

    assert second.url_id != first.url_id
    assert world.runtime.container_ids == {second.container_id}
    assert set(await world.routes.list()) == {second.urlpath}
    assert [s.url_id for s in await world.sessions.list_for_user("alice")] == [second.url_id]


async def test_a_foreign_container_with_our_name_is_not_replaced(world: World) -> None:
    grant = make_grant()
    session = await world.sessions.start(grant)
    assert session.container_id is not None
    squatter = replace(world.runtime.spec_of(session.container_id), labels={"not": "ours"})
    await world.sessions.stop("alice", session.url_id)
    squatter_id = await world.runtime.create(squatter)

    with pytest.raises(Conflict, match="not one of ours"):
        await world.sessions.start(grant)
    assert world.runtime.container_ids == {squatter_id}
    assert not world.routes.all_paths


async def test_other_grants_of_the_same_user_run_side_by_side(world: World) -> None:
    one = await world.sessions.start(make_grant())
    two = await world.sessions.start(make_grant())
    listed = {s.url_id for s in await world.sessions.list_for_user("alice")}
    assert listed == {one.url_id, two.url_id}


# ------------------------------------------------------------------------ start faults
async def test_unknown_grant_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await world.sessions.start_for("alice", "0" * 32)
    assert nothing_left(world)


async def test_somebody_elses_grant_is_not_found(world: World) -> None:
    async with world.database.unit_of_work() as uow:
        bob = await uow.users.add("bob")
        await uow.users.add("alice")
        app = await uow.applications.add(IMAGE)
        grant = await uow.grants.grant(bob, app, Policy())
        await uow.commit()

    with pytest.raises(NotFound):
        await world.sessions.start_for("alice", grant.mapping_id)
    assert nothing_left(world)
    session = await world.sessions.start_for("bob", grant.mapping_id)
    assert session.user == "bob"


async def test_image_deleted_after_the_grant_is_not_found(world: World) -> None:
    world.runtime.remove_image(IMAGE)
    with pytest.raises(NotFound, match="not available"):
        await world.sessions.start(make_grant())
    assert nothing_left(world)


@pytest.mark.parametrize(
    "configurables",
    [
        {"resolution": {"resolution": "huge"}},
        {"resolution": {"resolution": "99999x99999"}},
        {"resolution": {"resolution": "1x1"}},
        {"colour": {"colour": "red"}},
        "not an object",
    ],
)
async def test_invalid_configurables_are_refused(world: World, configurables: object) -> None:
    with pytest.raises(InvalidRequest):
        await world.sessions.start(make_grant(), configurables)
    assert nothing_left(world)


async def test_startup_data_outside_what_the_policy_mounts_is_refused(world: World) -> None:
    grant = make_grant(policy=Policy(allow_home=True, allow_startup_data=True))
    for path in ("/etc/passwd", "/workspace/../etc/passwd", "relative/path"):
        with pytest.raises(InvalidRequest):
            await world.sessions.start(grant, {"startupdata": {"startupdata": path}})
    assert nothing_left(world)


async def test_startup_data_is_refused_when_the_policy_does_not_allow_it(world: World) -> None:
    grant = make_grant(policy=Policy(allow_home=True, allow_startup_data=False))
    with pytest.raises(InvalidRequest, match="startup data"):
        await world.sessions.start(grant, {"startupdata": {"startupdata": "/workspace/x"}})
    assert nothing_left(world)


async def test_a_container_that_never_becomes_ready_is_removed(world: World) -> None:
    world.probe.ready = False
    with pytest.raises(Unable, match="did not become ready within 5 s"):
        await world.sessions.start(make_grant())
    assert nothing_left(world)
    assert await world.sessions.list_for_user("alice") == []


async def test_a_container_that_exits_while_starting_fails_the_start_at_once(
    world: World,
) -> None:
    world.probe.hold = asyncio.Event()  # the probe alone would wait forever
    start = asyncio.create_task(world.sessions.start(make_grant()))
    await wait_until(lambda: world.probe.probed)
    (container_id,) = world.runtime.container_ids
    world.runtime.kill(container_id)

    with pytest.raises(Unable, match="exited before it became ready"):
        await asyncio.wait_for(start, 2)
    assert nothing_left(world)


async def test_proxy_down_during_start_removes_the_container(world: World) -> None:
    world.routes.available = False
    with pytest.raises(
        Unavailable, match=r"could not be started \(step: routing\): proxy unavailable"
    ):
        await world.sessions.start(make_grant())
    assert not world.runtime.container_ids


async def test_engine_down_is_a_clear_error_and_leaves_nothing(world: World) -> None:
    world.runtime.available = False
    with pytest.raises(Unavailable, match="Docker engine unavailable"):
        await world.sessions.start(make_grant())
    world.runtime.available = True
    assert nothing_left(world)


async def test_a_placed_grant_on_a_single_engine_is_refused_and_leaves_nothing(
    world: World,
) -> None:
    grant = make_grant(policy=Policy(allow_home=True, placement=("node.labels.gpu==true",)))
    with pytest.raises(InvalidRequest, match=r"need a Docker Swarm \(REMOTEAPP_ENGINE=swarm\)"):
        await world.sessions.start(grant)
    assert nothing_left(world)
    assert await world.sessions.list_for_user("alice") == []


async def test_workspace_failure_leaves_nothing(world: World) -> None:
    world.workspaces.failing = True
    with pytest.raises(Unable, match="workspace"):
        await world.sessions.start(make_grant(policy=Policy(allow_home=True)))
    assert nothing_left(world)


async def test_a_cancelled_start_leaves_nothing(world: World) -> None:
    grant = make_grant()
    world.probe.hold = asyncio.Event()
    start = asyncio.create_task(world.sessions.start(grant))
    await wait_until(lambda: world.probe.probed)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert nothing_left(world)
    assert world.sessions.status("alice", grant.mapping_id) is None


async def test_concurrent_starts_of_one_grant_are_refused(world: World) -> None:
    grant = make_grant()
    world.probe.hold = asyncio.Event()
    first = asyncio.create_task(world.sessions.start(grant))
    await wait_until(lambda: world.probe.probed)

    with pytest.raises(Conflict, match="already being started"):
        await world.sessions.start(grant)
    assert world.sessions.status("alice", grant.mapping_id) is SessionState.STARTING
    (listed,) = await world.sessions.list_for_user("alice")
    assert listed.state is SessionState.STARTING

    world.probe.hold.set()
    session = await first
    assert world.runtime.container_ids == {session.container_id}
    assert world.sessions.status("alice", grant.mapping_id) is None
    (listed,) = await world.sessions.list_for_user("alice")
    assert listed.state is SessionState.RUNNING


async def test_concurrent_starts_of_different_grants_both_run(world: World) -> None:
    world.probe.hold = asyncio.Event()
    starts = [asyncio.create_task(world.sessions.start(make_grant(f"u{i}"))) for i in range(5)]
    await wait_until(lambda: len(world.probe.probed) == 5)
    world.probe.hold.set()
    sessions = await asyncio.gather(*starts)
    assert len(world.runtime.container_ids) == 5
    assert set(await world.routes.list()) == {s.urlpath for s in sessions}


# ------------------------------------------------------------------------ stop
async def test_stop_removes_the_route_and_the_container(world: World) -> None:
    session = await world.sessions.start(make_grant())
    await world.sessions.stop("alice", session.url_id)
    assert nothing_left(world)
    with pytest.raises(NotFound):
        await world.sessions.stop("alice", session.url_id)


async def test_stop_removes_the_route_before_the_container(world: World) -> None:
    session = await world.sessions.start(make_grant())
    order: list[str] = []
    remove_route, remove_container = world.routes.remove, world.runtime.remove

    async def route_first(path: str) -> None:
        order.append("route")
        await remove_route(path)

    async def container_second(container_id: str) -> None:
        order.append("container")
        await remove_container(container_id)

    world.routes.remove = route_first  # type: ignore[method-assign]
    world.runtime.remove = container_second  # type: ignore[method-assign]
    await world.sessions.stop("alice", session.url_id)
    assert order == ["route", "container"]


async def test_someone_elses_session_is_not_found(world: World) -> None:
    session = await world.sessions.start(make_grant("alice"))
    with pytest.raises(NotFound):
        await world.sessions.stop("mallory", session.url_id)
    with pytest.raises(NotFound):
        await world.sessions.get("mallory", session.url_id)
    assert session.container_id in world.runtime.container_ids
    assert (await world.sessions.get("alice", session.url_id)).url_id == session.url_id
    assert (await world.sessions.get_any(session.url_id)).user == "alice"


@pytest.mark.parametrize("url_id", ["", "../../etc", "A" * 26, "x" * 500, "a b"])
async def test_malformed_url_ids_are_not_found(world: World, url_id: str) -> None:
    with pytest.raises(NotFound):
        await world.sessions.stop("alice", url_id)


async def test_stop_with_the_proxy_down_keeps_the_container(world: World) -> None:
    session = await world.sessions.start(make_grant())
    world.routes.available = False
    with pytest.raises(Unavailable):
        await world.sessions.stop("alice", session.url_id)
    assert session.container_id in world.runtime.container_ids
    world.routes.available = True
    await world.sessions.stop("alice", session.url_id)
    assert nothing_left(world)


async def test_stopping_a_session_that_is_starting_is_refused(world: World) -> None:
    world.probe.hold = asyncio.Event()
    start = asyncio.create_task(world.sessions.start(make_grant()))
    await wait_until(lambda: world.probe.probed)
    (starting,) = await world.sessions.list_for_user("alice")
    with pytest.raises(Conflict):
        await world.sessions.stop("alice", starting.url_id)
    world.probe.hold.set()
    await start


async def test_stopping_state_is_visible_while_a_stop_runs(world: World) -> None:
    grant = make_grant()
    session = await world.sessions.start(grant)
    release = asyncio.Event()
    remove_route = world.routes.remove

    async def slow_remove(path: str) -> None:
        await release.wait()
        await remove_route(path)

    world.routes.remove = slow_remove  # type: ignore[method-assign]
    stop = asyncio.create_task(world.sessions.stop("alice", session.url_id))
    await wait_until(lambda: world.sessions.status("alice", grant.mapping_id) is not None)
    (listed,) = await world.sessions.list_for_user("alice")
    assert listed.state is SessionState.STOPPING
    with pytest.raises(Conflict):
        await world.sessions.start(grant)
    release.set()
    await stop
    assert nothing_left(world)


async def test_admin_stops_any_session(world: World) -> None:
    session = await world.sessions.start(make_grant("alice"))
    await world.sessions.stop_any(session.url_id)
    assert nothing_left(world)


# ------------------------------------------------------------------------ listing
async def test_sessions_survive_a_service_restart(world: World) -> None:
    session = await world.sessions.start(make_grant("alice"))
    restarted = world.sessions_for()
    (found,) = await restarted.list_for_user("alice")
    assert (found.url_id, found.state, found.container_id) == (
        session.url_id,
        SessionState.RUNNING,
        session.container_id,
    )
    await restarted.stop("alice", session.url_id)
    assert nothing_left(world)


async def test_lists_are_per_user_and_all_for_admins(world: World) -> None:
    a = await world.sessions.start(make_grant("alice"))
    b = await world.sessions.start(make_grant("bob"))
    assert [s.url_id for s in await world.sessions.list_for_user("alice")] == [a.url_id]
    assert {s.url_id for s in await world.sessions.list_all()} == {a.url_id, b.url_id}


async def test_exited_containers_are_listed_as_exited(world: World) -> None:
    session = await world.sessions.start(make_grant())
    assert session.container_id is not None
    world.runtime.kill(session.container_id)
    (listed,) = await world.sessions.list_for_user("alice")
    assert listed.state is SessionState.EXITED


async def test_another_realm_is_never_touched(world: World) -> None:
    other = world.sessions_for(realm="other-realm")
    grant = make_grant("alice")
    theirs = await other.start(grant)

    assert await world.sessions.list_all() == []
    with pytest.raises(NotFound):
        await world.sessions.stop("alice", theirs.url_id)
    with pytest.raises(NotFound):
        await world.sessions.stop_any(theirs.url_id)
    # Starting the same grant here does not replace theirs (container names differ by realm).
    ours = await world.sessions.start(grant)
    assert world.runtime.container_ids == {theirs.container_id, ours.container_id}
    assert set(await world.routes.list()) == {theirs.urlpath, ours.urlpath}
    routes = await world.routes.list()
    assert isinstance(routes[ours.urlpath], Route)


@pytest.mark.parametrize(
    "spec",
    [
        "/var/run/docker.sock:/var/run/docker.sock:rw",
        "/etc:/host-etc:ro",
        "/:/host:ro",
        "/home/alice:/data:rw",  # outside the roots
        "/srv/data:/proc/sys:rw",
    ],
)
async def test_a_grant_written_before_the_volume_rules_is_refused_at_start(
    world: World, spec: str
) -> None:
    # Rows from before the rules (or written behind the service's back) are never mounted.
    world.host_paths.paths.update({"/etc", "/", "/home/alice", "/srv/data", "/var/run"})
    world.host_paths.sockets.add("/var/run/docker.sock")
    policy = Policy(volume=Volume.parse(spec))

    with pytest.raises(Unable, match="volume is refused") as refused:
        await world.sessions.start(make_grant("mallory", policy))

    assert "administrator" in refused.value.message
    assert await world.runtime.list({}) == []
    assert not world.routes.all_paths


async def test_a_link_planted_under_a_root_after_the_grant_is_refused_at_start(
    world: World,
) -> None:
    world.host_paths.paths.update({"/srv/data", "/etc"})
    policy = Policy(volume=Volume.parse("/srv/data/shared:/data:ro"))
    world.host_paths.links["/srv/data/shared"] = "/etc"

    with pytest.raises(Unable, match="symbolic link"):
        await world.sessions.start(make_grant("mallory", policy))
    assert await world.runtime.list({}) == []


async def test_containers_are_created_confined(world: World) -> None:
    session = await world.sessions.start(make_grant("alice"))
    assert session.container_id is not None

    confinement = world.runtime.spec_of(session.container_id).confinement

    assert confinement.cap_drop == ("ALL",)
    assert confinement.no_new_privileges
    assert confinement.network is not None


# ------------------------------------------------------------------------ quota
async def test_a_user_runs_at_most_the_quota_and_replacing_a_session_is_not_another(
    world: World,
) -> None:
    sessions = world.sessions_for(max_sessions_per_user=2)
    first, second, third = make_grant("alice"), make_grant("alice"), make_grant("alice")
    await sessions.start(first)
    await sessions.start(second)

    with pytest.raises(Conflict) as refused:
        await sessions.start(third)
    assert "the most one user may run at once (2)" in refused.value.message
    assert len(world.runtime.container_ids) == 2, "nothing was created for the refused start"

    # Starting a running grant again replaces its session: still two.
    await sessions.start(second)
    assert len(world.runtime.container_ids) == 2
    # Another user has a quota of their own.
    await sessions.start(make_grant("bob", user_id=2))
    # Once one stops, there is room again.
    running = await sessions.list_for_user("alice")
    await sessions.stop("alice", running[0].url_id)
    await sessions.start(third)
    assert len(await sessions.list_for_user("alice")) == 2


async def test_without_a_uid_base_containers_keep_the_images_user(world: World) -> None:
    session = await world.sessions.start(make_grant("alice", Policy(allow_home=True)))
    assert session.container_id is not None

    assert world.runtime.spec_of(session.container_id).confinement.run_as is None
    assert set(world.workspaces.owners.values()) == {None}


async def test_with_a_uid_base_each_user_runs_as_and_owns_a_uid_of_their_own(
    world: World,
) -> None:
    sessions = Sessions(
        world.runtime,
        world.routes,
        world.workspaces,
        world.host_paths,
        world.probe,
        realm=REALM,
        access=AccessMode.DIRECT,
        network_timeout=5,
        watch_interval=0.01,
        workspace_uid_base=200_000,
    )
    home = Policy(allow_home=True)

    alice = await sessions.start(make_grant("alice", home, user_id=1))
    bob = await sessions.start(make_grant("bob", home, user_id=2))
    carol = await sessions.start(make_grant("carol", user_id=3))  # no workspace

    runs_as = {
        session.user: world.runtime.spec_of(str(session.container_id)).confinement.run_as
        for session in (alice, bob, carol)
    }
    assert runs_as == {"alice": 200_001, "bob": 200_002, "carol": 200_003}
    assert sorted(world.workspaces.owners.items()) == [
        (f"{world.workspaces.root}/alice", 200_001),
        (f"{world.workspaces.root}/bob", 200_002),
    ]
