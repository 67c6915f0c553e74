"""deploy/stack.yml as ``docker stack config`` reads it (the client only: no swarm needed)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.services import REPO, skip_or_fail

STACK = REPO / "deploy" / "stack.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "db-secret",
    "CONFIGPROXY_AUTH_TOKEN": "proxy-secret",
    "JUPYTERHUB_COOKIE_SECRET": "cookie-secret",
    "JUPYTERHUB_CRYPT_KEY": "crypt-key",
    "REMOTEAPP_SERVICE_API_TOKEN": "service-token",
    "REMOTEAPP_COOKIE_SECRET": "service-cookie-secret",
}


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    if docker is None:
        skip_or_fail("the docker client is not installed")
    assert docker is not None
    return subprocess.run(
        [docker, "stack", "config", "-c", str(STACK)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_the_stack_runs_the_hub_the_service_and_the_database(stack: dict[str, Any]) -> None:
    assert set(stack["services"]) == {"db", "hub", "remoteapp"}
    service = stack["services"]["remoteapp"]
    env = service["environment"]
    assert env["REMOTEAPP_ENGINE"] == "swarm"
    assert env["REMOTEAPP_DATABASE_URL"].startswith("postgresql://remoteapp:db-secret@db:")
    assert env["JUPYTERHUB_API_TOKEN"] == "service-token"
    assert stack["services"]["hub"]["environment"]["REMOTEAPP_SERVICE_API_TOKEN"] == (
        "service-token"
    )
    assert service["deploy"]["endpoint_mode"] == "dnsrr"


def test_the_applications_network_is_the_attachable_overlay_the_service_joins(
    stack: dict[str, Any],
) -> None:
    service = stack["services"]["remoteapp"]
    apps = stack["networks"]["apps"]
    assert apps["driver"] == "overlay"
    assert apps["attachable"] is True
    assert apps["name"] == service["environment"]["REMOTEAPP_SWARM_NETWORK"]
    assert set(service["networks"]) == {"internal", "apps"}
    # Applications never share a network with the database or the hub.
    assert "apps" not in stack["services"]["db"]["networks"]
    assert "apps" not in stack["services"]["hub"]["networks"]


def test_only_the_proxy_publishes_a_port(stack: dict[str, Any]) -> None:
    published = {name: s.get("ports") for name, s in stack["services"].items() if s.get("ports")}
    assert list(published) == ["hub"]
    (port,) = published["hub"]
    assert (port["target"], port["mode"]) == (8000, "host")


def test_workspaces_lie_on_the_shared_storage(stack: dict[str, Any]) -> None:
    env = stack["services"]["remoteapp"]["environment"]
    assert env["REMOTEAPP_WORKSPACE_ROOT"].startswith(env["REMOTEAPP_SWARM_SHARED_ROOTS"] + "/")


def test_a_missing_secret_is_named(stack: dict[str, Any]) -> None:
    missing = {key: value for key, value in SECRETS.items() if key != "POSTGRES_PASSWORD"}
    result = _config(missing)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
