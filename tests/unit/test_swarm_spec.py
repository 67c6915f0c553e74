"""What the Swarm runtime asks of the manager, and how it reads services back (no engine)."""

from __future__ import annotations

from pathlib import Path

from remoteappmanager import bootstrap
from remoteappmanager.adapters.docker import AiodockerRuntime
from remoteappmanager.adapters.swarm import SwarmRuntime, service_name
from remoteappmanager.settings import load_settings


def test_service_names_are_dns_labels_derived_from_the_container_name() -> None:
    name = "remoteexec.alice.0123456789abcdef0123456789abcdef"
    mapped = service_name(name)
    assert mapped == service_name(name)
    assert "." not in mapped
    assert len(mapped) <= 63
    assert mapped.startswith("remoteexec-alice-")
    long = "remoteexec." + "b" * 60 + ".0123456789abcdef0123456789abcdef"
    assert len(service_name(long)) <= 63
    assert service_name(long) != service_name(long.replace("b", "c"))
    # Two names that clean up alike stay apart.
    assert service_name("a.b") != service_name("a-b")
    assert service_name("remoteapp-test-0123") == "remoteapp-test-0123"


def test_the_engine_setting_chooses_the_runtime(tmp_path: Path) -> None:
    swarm = bootstrap.build_runtime(
        load_settings(
            engine="swarm",
            swarm_network="apps-overlay",
            swarm_shared_roots=str(tmp_path),
            workspace_root=str(tmp_path / "workspaces"),
            network_timeout=12,
        )
    )
    assert isinstance(swarm, SwarmRuntime)
    assert swarm.network == "apps-overlay"
    docker = bootstrap.build_runtime(load_settings())
    assert isinstance(docker, AiodockerRuntime)
    assert not isinstance(docker, SwarmRuntime)
