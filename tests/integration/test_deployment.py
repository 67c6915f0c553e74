"""The deployment files: the Dockerfiles pass hadolint, and docker-compose.yml is valid for
Debian's docker-compose, keeps every port on 127.0.0.1 and refuses to run without secrets.

The images themselves are built and run end to end in tests/e2e/test_compose.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.services import REPO, skip_or_fail

DOCKERFILES = ["Dockerfile-ubuntu", "Dockerfile-centos", "deploy/postgres/Dockerfile"]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "config" / "compose.env.example"
SECRETS = [
    "CONFIGPROXY_AUTH_TOKEN",
    "POSTGRES_PASSWORD",
    "REMOTEAPP_COOKIE_SECRET",
    "JUPYTERHUB_COOKIE_SECRET",
    "JUPYTERHUB_CRYPT_KEY",
]


def _tool(name: str) -> str:
    """An executable from the virtual environment running the tests, else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        skip_or_fail(f"{name} is not installed (scripts/provision)")
    assert found is not None
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    hadolint = _tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", dockerfile],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "", result.stdout
    assert result.returncode == 0, result.stderr


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    compose = _tool("docker-compose")
    return subprocess.run(
        [compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def example_config() -> dict[str, Any]:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_file_is_valid_with_the_example_env_file(example_config: dict[str, Any]) -> None:
    assert set(example_config["services"]) == {"db", "remoteapp"}
    assert set(example_config["volumes"]) == {"db-data", "hub-state"}


def test_compose_publishes_nothing_beyond_loopback(example_config: dict[str, Any]) -> None:
    services = example_config["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    remoteapp = services["remoteapp"]
    # Host networking: the service's own addresses are the host's, hence loopback only.
    assert remoteapp["network_mode"] == "host"
    env = remoteapp["environment"]
    assert env["REMOTEAPP_HUB_IP"] == "127.0.0.1"
    assert env["REMOTEAPP_PUBLISH_IP"] == "127.0.0.1"
    assert env["CONFIGPROXY_API_URL"].startswith("http://127.0.0.1:")
    assert env["REMOTEAPP_GATE_URL"].startswith("http://127.0.0.1:")
    assert "@127.0.0.1:" in env["REMOTEAPP_DATABASE_URL"]


def test_compose_runs_the_service_with_the_socket_and_migrations(
    example_config: dict[str, Any],
) -> None:
    remoteapp = example_config["services"]["remoteapp"]
    assert any(volume.endswith(":/var/run/docker.sock:rw") for volume in remoteapp["volumes"])
    assert remoteapp["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert remoteapp["build"]["dockerfile"] == "Dockerfile-ubuntu"
    assert "no-new-privileges:true" in remoteapp["security_opt"]


def test_compose_refuses_to_run_without_each_secret(tmp_path: Path) -> None:
    example = ENV_EXAMPLE.read_text()
    for secret in SECRETS:
        env_file = tmp_path / f"without-{secret}.env"
        env_file.write_text(
            "\n".join(line for line in example.splitlines() if not line.startswith(f"{secret}="))
        )
        result = compose_config(env_file)
        assert result.returncode != 0, f"compose accepted a configuration without {secret}"
        assert secret in result.stderr


def test_example_env_file_holds_only_placeholder_secrets() -> None:
    # The entry point refuses these, so the example can never run with known secrets.
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for secret in SECRETS:
        assert values[secret].startswith("change-me"), secret
