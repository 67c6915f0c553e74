"""The container spec built from a grant: labels, environment and mounts."""

from __future__ import annotations

import dataclasses
import re

import pytest

from remoteappmanager.domain.configurables import Configuration
from remoteappmanager.domain.confinement import (
    DEFAULT_NETWORK,
    Confinement,
    ResourceLimits,
    capabilities_for,
)
from remoteappmanager.domain.containers import (
    CONTAINER_PORT,
    RUNINFO_NAMESPACE,
    Mount,
    build_container_spec,
)
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.labels import AppType, ImageMetadata
from remoteappmanager.domain.models import Application, Grant, Policy, User, Volume

IMAGE = ImageMetadata(
    name="simphony/desktop:1",
    ui_name="Desktop",
    icon_128="",
    description="",
    type=AppType.VNC,
    env=frozenset({"X11_WIDTH", "X11_HEIGHT", "STARTUPDATA"}),
)
URL_ID = "k" * 26
MAPPING_ID = "ab" * 16


def grant(policy: Policy | None = None, user: str = "alice") -> Grant:
    return Grant(MAPPING_ID, User(7, user), Application(3, IMAGE.name), policy or Policy())


def test_labels_say_whose_container_it_is() -> None:
    spec = build_container_spec(
        grant(), IMAGE, Configuration(), URL_ID, "remoteexec", "127.0.0.1", None
    )
    assert dict(spec.labels) == {
        RUNINFO_NAMESPACE + "user": "alice",
        RUNINFO_NAMESPACE + "mapping_id": MAPPING_ID,
        RUNINFO_NAMESPACE + "url_id": URL_ID,
        RUNINFO_NAMESPACE + "urlpath": f"/user/alice/containers/{URL_ID}",
        RUNINFO_NAMESPACE + "realm": "remoteexec",
    }
    assert spec.image == IMAGE.name
    assert spec.publish_ip == "127.0.0.1"
    assert spec.port == CONTAINER_PORT
    assert spec.name == f"remoteexec.alice.{MAPPING_ID}"
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", spec.name)


def test_default_environment() -> None:
    spec = build_container_spec(
        grant(), IMAGE, Configuration(), URL_ID, "remoteexec", "127.0.0.1", None
    )
    assert dict(spec.environment) == {
        "JPY_USER": "alice",
        "JPY_BASE_USER_URL": "/user/alice",
        "USER": "alice",
        "URL_ID": URL_ID,
        "X11_WIDTH": "1024",
        "X11_HEIGHT": "768",
        "X11_DEPTH": "16",
    }
    assert spec.mounts == ()


def test_chosen_resolution_startup_data_and_licence() -> None:
    spec = build_container_spec(
        grant(Policy(app_license="KEY-123", allow_home=True, allow_startup_data=True)),
        IMAGE,
        Configuration(resolution=(1920, 1080), startupdata="/workspace/in.dat"),
        URL_ID,
        "remoteexec",
        "127.0.0.1",
        "/srv/ws/alice",
    )
    env = spec.environment
    assert (env["X11_WIDTH"], env["X11_HEIGHT"], env["X11_DEPTH"]) == ("1920", "1080", "16")
    assert env["STARTUPDATA"] == "/workspace/in.dat"
    assert env["APP_LICENSE"] == "KEY-123"


def test_odd_user_names_are_escaped_in_urls_and_made_safe_for_unix() -> None:
    spec = build_container_spec(
        grant(user="José María"), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", None
    )
    assert spec.environment["JPY_USER"] == "José María"
    assert spec.environment["JPY_BASE_USER_URL"] == "/user/Jos%C3%A9%20Mar%C3%ADa"
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", spec.environment["USER"])
    assert spec.labels[RUNINFO_NAMESPACE + "urlpath"] == (
        f"/user/Jos%C3%A9%20Mar%C3%ADa/containers/{URL_ID}"
    )
    assert spec.labels[RUNINFO_NAMESPACE + "user"] == "José María"


def test_workspace_is_mounted_read_write_only_with_allow_home() -> None:
    with_home = build_container_spec(
        grant(Policy(allow_home=True)), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", "/w/a"
    )
    assert with_home.mounts == (Mount("/w/a", "/workspace", read_only=False),)
    without = build_container_spec(
        grant(Policy(allow_home=False)), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", "/w/a"
    )
    assert without.mounts == ()


@pytest.mark.parametrize(("mode", "read_only"), [("ro", True), ("rw", False)])
def test_policy_volume_is_mounted_with_its_mode(mode: str, read_only: bool) -> None:
    policy = Policy(allow_home=True, volume=Volume.parse(f"/srv/data:/data:{mode}"))
    spec = build_container_spec(
        grant(policy), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", "/w/a"
    )
    assert spec.mounts == (
        Mount("/w/a", "/workspace", read_only=False),
        Mount("/srv/data", "/data", read_only=read_only),
    )


def test_policy_volume_is_left_out_when_told_its_source_is_missing() -> None:
    policy = Policy(volume=Volume.parse("/srv/data:/data:ro"))
    spec = build_container_spec(
        grant(policy), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", None, mount_volume=False
    )
    assert spec.mounts == ()


@pytest.mark.parametrize("target", ["/workspace", "/workspace/data"])
def test_policy_volume_over_or_inside_the_workspace_is_refused(target: str) -> None:
    policy = Policy(allow_home=True, volume=Volume.parse(f"/srv/data:{target}:ro"))
    with pytest.raises(InvalidRequest, match="clashes"):
        build_container_spec(
            grant(policy), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", "/w/a"
        )


def test_every_container_is_confined() -> None:
    spec = build_container_spec(
        grant(), IMAGE, Configuration(), URL_ID, "remoteexec", "127.0.0.1", None
    )

    confinement = spec.confinement
    assert confinement.cap_drop == ("ALL",)
    assert confinement.cap_add == ()
    assert confinement.no_new_privileges is True
    assert confinement.network == DEFAULT_NETWORK
    assert confinement.limits == ResourceLimits()
    assert None not in (
        confinement.limits.memory_mb,
        confinement.limits.cpus,
        confinement.limits.pids,
    )


@pytest.mark.parametrize("app_type", list(AppType))
def test_the_deployments_limits_and_network_are_carried_for_every_type(app_type: AppType) -> None:
    image = dataclasses.replace(IMAGE, type=app_type)
    wanted = Confinement(limits=ResourceLimits(512, 0.25, 64), network="apps-net")

    spec = build_container_spec(
        grant(), image, Configuration(), URL_ID, "r", "127.0.0.1", None, confinement=wanted
    )

    assert spec.confinement.limits == ResourceLimits(512, 0.25, 64)
    assert spec.confinement.network == "apps-net"
    assert spec.confinement.cap_add == capabilities_for(app_type) == ()
    assert spec.confinement.cap_drop == ("ALL",)
    assert spec.confinement.no_new_privileges


def test_the_checked_volume_is_mounted_instead_of_the_policys() -> None:
    policy = Policy(volume=Volume.parse("/srv/link:/data:rw"))
    resolved = Volume.parse("/srv/real:/data:rw")

    spec = build_container_spec(
        grant(policy), IMAGE, Configuration(), URL_ID, "r", "127.0.0.1", None, volume=resolved
    )

    assert spec.mounts == (Mount("/srv/real", "/data", read_only=False),)
