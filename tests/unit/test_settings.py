"""Settings: the documented variable names and defaults, the TOML file, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from remoteappmanager.domain.confinement import (
    DEFAULT_CPU_LIMIT,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_PIDS_LIMIT,
    ResourceLimits,
)
from remoteappmanager.settings import (
    DEFAULT_DATABASE_URL,
    ContainerAccess,
    LogFormat,
    SettingsError,
    load_settings,
    normalise_database_url,
    sqlite_path,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of ours (or Docker's, or the hub's) leaks in from the caller."""
    for name in list(os.environ):
        if name.startswith(("REMOTEAPP_", "CONFIGPROXY_", "JUPYTERHUB_", "DOCKER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_those_of_the_design() -> None:
    settings = load_settings()

    assert settings.database_url == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///remoteappmanager.db"
    assert settings.docker_host is None
    assert settings.docker_tls_verify is False
    assert settings.docker_cert_path is None
    assert settings.realm == "remoteexec"
    assert settings.configproxy_api_url == "http://127.0.0.1:8001"
    assert settings.configproxy_auth_token is None
    assert settings.container_access is ContainerAccess.GATED
    assert settings.publish_ip == "127.0.0.1"
    assert settings.workspace_dir == Path("workspaces")
    assert settings.network_timeout == 30
    assert settings.auto_user_creation is False
    assert settings.demo_applications == {}
    assert settings.admin_group is None
    assert settings.log_format is LogFormat.CONSOLE
    assert settings.jupyterhub_service_prefix == "/services/remoteapp/"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("REMOTEAPP_DATABASE_URL", "postgresql://u@db/remote", "database_url",
         "postgresql+asyncpg://u@db/remote"),
        ("REMOTEAPP_DOCKER_HOST", "tcp://engine:2376", "docker_host", "tcp://engine:2376"),
        ("REMOTEAPP_DOCKER_TLS_VERIFY", "1", "docker_tls_verify", True),
        ("REMOTEAPP_DOCKER_CERT_PATH", "/certs", "docker_cert_path", Path("/certs")),
        ("REMOTEAPP_REALM", "staging", "realm", "staging"),
        ("CONFIGPROXY_API_URL", "http://proxy:8001", "configproxy_api_url", "http://proxy:8001"),
        ("REMOTEAPP_CONTAINER_ACCESS", "direct", "container_access", ContainerAccess.DIRECT),
        ("REMOTEAPP_PUBLISH_IP", "127.0.0.2", "publish_ip", "127.0.0.2"),
        ("REMOTEAPP_WORKSPACE_ROOT", "/srv/ws", "workspace_dir", Path("/srv/ws")),
        ("REMOTEAPP_NETWORK_TIMEOUT", "12.5", "network_timeout", 12.5),
        ("REMOTEAPP_AUTO_USER_CREATION", "true", "auto_user_creation", True),
        ("REMOTEAPP_DEMO_APPLICATIONS", '{"simphony/app:1": {"allow_home": true}}',
         "demo_applications", {"simphony/app:1": {"allow_home": True}}),
        ("REMOTEAPP_ADMIN_GROUP", "admins", "admin_group", "admins"),
        ("REMOTEAPP_LOG_FORMAT", "json", "log_format", LogFormat.JSON),
        ("JUPYTERHUB_SERVICE_PREFIX", "/services/apps/", "jupyterhub_service_prefix",
         "/services/apps/"),
    ],
)  # fmt: skip
def test_each_design_variable_sets_its_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)

    assert getattr(load_settings(), field) == expected


def test_the_proxy_token_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "s3cret-token")

    settings = load_settings()

    assert settings.configproxy_auth_token is not None
    assert settings.configproxy_auth_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(settings)


def test_docker_variables_are_honoured_below_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker-default:2375")
    assert load_settings().docker_host == "tcp://docker-default:2375"

    monkeypatch.setenv("REMOTEAPP_DOCKER_HOST", "tcp://ours:2376")
    assert load_settings().docker_host == "tcp://ours:2376"


def test_workspaces_default_to_beside_the_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_DATABASE_URL", "/srv/remoteapp/catalogue.db")

    assert load_settings().workspace_dir == Path("/srv/remoteapp/workspaces")


def test_the_toml_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "remoteapp.toml"
    config.write_text(
        'database_url = "postgresql://remote@db/remoteapp"\n'
        'realm = "from-file"\n'
        "network_timeout = 45\n"
        'jupyterhub_api_url = "http://hub:8081/hub/api"\n'
        "[demo_applications]\n"
        '"simphony/app:1" = { allow_view = true }\n'
    )
    monkeypatch.setenv("REMOTEAPP_CONFIG_FILE", str(config))
    monkeypatch.setenv("REMOTEAPP_REALM", "from-env")

    settings = load_settings()

    assert settings.database_url == "postgresql+asyncpg://remote@db/remoteapp"
    assert settings.network_timeout == 45
    assert settings.jupyterhub_api_url == "http://hub:8081/hub/api"
    assert settings.demo_applications == {"simphony/app:1": {"allow_view": True}}
    assert settings.realm == "from-env"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REMOTEAPP_NETWORK_TIMEOUT", "soon"),
        ("REMOTEAPP_NETWORK_TIMEOUT", "-1"),
        ("REMOTEAPP_CONTAINER_ACCESS", "open"),
        ("REMOTEAPP_DATABASE_URL", "mysql://db/remote"),
        ("REMOTEAPP_REALM", "Not A Realm"),
        ("REMOTEAPP_LOG_FORMAT", "xml"),
        ("REMOTEAPP_AUTO_USER_CREATION", "perhaps"),
        ("REMOTEAPP_DEMO_APPLICATIONS", "{not json"),
        ("JUPYTERHUB_SERVICE_PREFIX", "services/remoteapp"),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_a_missing_config_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REMOTEAPP_CONFIG_FILE", str(tmp_path / "absent.toml"))

    with pytest.raises(SettingsError, match=r"^REMOTEAPP_CONFIG_FILE: "):
        load_settings()


def test_a_malformed_config_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("realm = \n")
    monkeypatch.setenv("REMOTEAPP_CONFIG_FILE", str(config))

    with pytest.raises(SettingsError, match=r"^REMOTEAPP_CONFIG_FILE: "):
        load_settings()


def test_the_service_needs_the_proxy_token() -> None:
    with pytest.raises(SettingsError, match=r"^CONFIGPROXY_AUTH_TOKEN: "):
        load_settings().require_service_settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("remote.db", "sqlite+aiosqlite:///remote.db"),
        ("/srv/remote.db", "sqlite+aiosqlite:////srv/remote.db"),
        ("sqlite:///remote.db", "sqlite+aiosqlite:///remote.db"),
        ("postgres://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("postgresql://u@db:5433/x", "postgresql+asyncpg://u@db:5433/x"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
    ],
)
def test_database_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_unsupported_database_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalise_database_url("mysql://db/x")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///remote.db", Path("remote.db")),
        ("sqlite+aiosqlite:////srv/remote.db", Path("/srv/remote.db")),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///:memory:", None),
        ("postgresql+asyncpg://u@db/x", None),
    ],
)
def test_sqlite_path(url: str, expected: Path | None) -> None:
    assert sqlite_path(url) == expected


def test_the_gate_listens_beside_the_service_unless_told() -> None:
    settings = load_settings(jupyterhub_service_url="http://127.0.0.1:10101")
    assert settings.gate_address == ("127.0.0.1", 10102)
    assert settings.effective_gate_url == "http://127.0.0.1:10102"
    moved = load_settings(gate_url="http://127.0.0.1:9000/")
    assert moved.gate_address == ("127.0.0.1", 9000)
    assert moved.effective_gate_url == "http://127.0.0.1:9000"


def test_replicas_route_applications_to_the_load_balancer_of_their_gates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMOTEAPP_GATE_URL", "http://127.0.0.1:12345")
    monkeypatch.setenv("REMOTEAPP_GATE_ROUTE_URL", "http://127.0.0.1:8090/")
    settings = load_settings()
    assert settings.gate_address == ("127.0.0.1", 12345)
    assert settings.effective_gate_url == "http://127.0.0.1:8090"
    with pytest.raises(SettingsError, match=r"^REMOTEAPP_GATE_ROUTE_URL: "):
        load_settings(gate_route_url="http://127.0.0.1:8090/path")


def test_the_gate_url_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_GATE_URL", "http://127.0.0.1:12345")
    assert load_settings().gate_address == ("127.0.0.1", 12345)


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:9000",
        "https://127.0.0.1:9000",
        "http://127.0.0.1",
        "http://h:9000/x",
        "http://h:99999",
    ],
)
def test_bad_gate_urls_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^REMOTEAPP_GATE_URL: "):
        load_settings(gate_url=value)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.20", "fe80::1"])
def test_a_publish_ip_off_loopback_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("REMOTEAPP_PUBLISH_IP", address)

    with pytest.raises(SettingsError) as refused:
        load_settings()

    message = str(refused.value)
    assert message.startswith(f"REMOTEAPP_PUBLISH_IP: {address} would publish")
    assert "REMOTEAPP_ALLOW_PUBLIC_PUBLISH_IP" in message
    assert "\n" not in message


def test_a_publish_ip_that_is_no_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_PUBLISH_IP", "localhost")

    with pytest.raises(SettingsError, match="REMOTEAPP_PUBLISH_IP: 'localhost' is not an IP"):
        load_settings()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_publish_ips_are_accepted(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("REMOTEAPP_PUBLISH_IP", address)

    assert load_settings().publish_ip == address


def test_a_public_publish_ip_needs_the_operator_to_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_PUBLISH_IP", "10.0.0.1")
    monkeypatch.setenv("REMOTEAPP_ALLOW_PUBLIC_PUBLISH_IP", "true")

    assert load_settings().publish_ip == "10.0.0.1"


def test_containers_are_confined_by_default() -> None:
    confinement = load_settings().confinement

    assert confinement.cap_drop == ("ALL",)
    assert confinement.cap_add == ()
    assert confinement.no_new_privileges
    assert confinement.network == "remoteapp-apps"
    assert confinement.limits == ResourceLimits(
        DEFAULT_MEMORY_LIMIT_MB, DEFAULT_CPU_LIMIT, DEFAULT_PIDS_LIMIT
    )
    assert DEFAULT_MEMORY_LIMIT_MB >= 512
    assert DEFAULT_CPU_LIMIT > 0
    assert DEFAULT_PIDS_LIMIT > 0


def test_limits_come_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTEAPP_DEFAULT_MEMORY_LIMIT_MB", "1536")
    monkeypatch.setenv("REMOTEAPP_DEFAULT_CPU_LIMIT", "0.5")
    monkeypatch.setenv("REMOTEAPP_DEFAULT_PIDS_LIMIT", "0")
    monkeypatch.setenv("REMOTEAPP_CONTAINER_NETWORK", "apps.staging")

    confinement = load_settings().confinement

    assert confinement.limits.memory_bytes == 1536 * 1024 * 1024
    assert confinement.limits.nano_cpus == 500_000_000
    assert confinement.limits.pids is None  # 0: no limit
    assert confinement.network == "apps.staging"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REMOTEAPP_DEFAULT_MEMORY_LIMIT_MB", "3"),
        ("REMOTEAPP_DEFAULT_MEMORY_LIMIT_MB", "-1"),
        ("REMOTEAPP_DEFAULT_CPU_LIMIT", "-0.5"),
        ("REMOTEAPP_DEFAULT_PIDS_LIMIT", "many"),
        ("REMOTEAPP_CONTAINER_NETWORK", "bad/name"),
        ("REMOTEAPP_VOLUME_ROOTS", "/etc"),
        ("REMOTEAPP_VOLUME_ROOTS", "/"),
        ("REMOTEAPP_VOLUME_ROOTS", "relative/path"),
        ("REMOTEAPP_VOLUME_ROOTS", '["/srv", "/var/run"]'),
    ],
)
def test_bad_confinement_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError, match=f"^{variable}: "):
        load_settings()


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        ("", ()),
        ("/srv/data", ("/srv/data",)),
        ("/srv/data, /mnt/shared/", ("/srv/data", "/mnt/shared")),
        ('["/srv/data", "/mnt/shared"]', ("/srv/data", "/mnt/shared")),
    ],
)
def test_volume_roots_are_a_list_of_absolute_paths(
    monkeypatch: pytest.MonkeyPatch, value: str, roots: tuple[str, ...]
) -> None:
    monkeypatch.setenv("REMOTEAPP_VOLUME_ROOTS", value)

    assert load_settings().volume_roots == roots


def test_the_workspace_uid_base_is_unset_by_default_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().workspace_uid_base is None

    monkeypatch.setenv("REMOTEAPP_WORKSPACE_UID_BASE", "100000")
    assert load_settings().workspace_uid_base == 100_000

    for bad in ("0", "999", "-5", str(2**31), "many"):
        monkeypatch.setenv("REMOTEAPP_WORKSPACE_UID_BASE", bad)
        with pytest.raises(SettingsError, match=r"^REMOTEAPP_WORKSPACE_UID_BASE: "):
            load_settings()
