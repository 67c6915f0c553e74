"""The one settings object: environment variables (``REMOTEAPP_*``, ``CONFIGPROXY_*``,
``JUPYTERHUB_*``) over an optional TOML file (``REMOTEAPP_CONFIG_FILE``) over defaults.

Built once at start (``load_settings``) and passed down; nothing else reads the environment.
Invalid values raise ``SettingsError`` whose message is one line naming the variable.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///remoteappmanager.db"
CONFIG_FILE_VARIABLE = "REMOTEAPP_CONFIG_FILE"


class SettingsError(Exception):
    """A setting is missing or invalid; ``str()`` is one line that names the variable."""


class ContainerAccess(enum.StrEnum):
    GATED = "gated"
    DIRECT = "direct"


class LogFormat(enum.StrEnum):
    CONSOLE = "console"
    JSON = "json"


def _hub(variable: str, default: Any, description: str) -> Any:
    """A ``JUPYTERHUB_*`` variable; the TOML file may name it by its lower-case field name."""
    field = variable.lower()
    return Field(
        default=default, validation_alias=AliasChoices(variable, field), description=description
    )


class Settings(BaseSettings):
    """Every knob of the service. See docs/configuration for the generated reference."""

    model_config = SettingsConfigDict(
        env_prefix="REMOTEAPP_",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the database (SQLite file or PostgreSQL). A plain "
        "postgresql:// URL is taken to mean the asyncpg driver.",
    )
    docker_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REMOTEAPP_DOCKER_HOST", "DOCKER_HOST", "docker_host"),
        description="Docker engine address (unix:///var/run/docker.sock, tcp://host:2376). "
        "Defaults to DOCKER_HOST, then the local socket.",
    )
    docker_tls_verify: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "REMOTEAPP_DOCKER_TLS_VERIFY", "DOCKER_TLS_VERIFY", "docker_tls_verify"
        ),
        description="Use TLS with client certificates to reach a tcp:// engine.",
    )
    docker_cert_path: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "REMOTEAPP_DOCKER_CERT_PATH", "DOCKER_CERT_PATH", "docker_cert_path"
        ),
        description="Folder holding ca.pem, cert.pem and key.pem for a TLS engine.",
    )
    realm: str = Field(
        default="remoteexec",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
        description="Label value isolating this deployment's containers on a shared engine.",
    )
    configproxy_api_url: str = Field(
        default="http://127.0.0.1:8001",
        validation_alias=AliasChoices("CONFIGPROXY_API_URL", "configproxy_api_url"),
        description="REST API of configurable-http-proxy.",
    )
    configproxy_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CONFIGPROXY_AUTH_TOKEN", "configproxy_auth_token"),
        description="Token of the proxy's REST API (required to run the service).",
    )
    container_access: ContainerAccess = Field(
        default=ContainerAccess.GATED,
        description="'gated': every container request passes our authorization check; "
        "'direct': the proxy routes straight to the container.",
    )
    gate_url: str | None = Field(
        default=None,
        description="Where the gate listens in gated mode, as http://<host>:<port>: the "
        "proxy's target for every application path, never the browser's. Default: the host "
        "of JUPYTERHUB_SERVICE_URL and the port after the service's.",
    )
    gate_max_connections_per_user: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests in progress plus open WebSockets one user may have through the "
        "gate at once (gated mode); beyond it the gate answers 429 with Retry-After.",
    )
    publish_ip: str = Field(
        default="127.0.0.1",
        description="Host address on which container ports are published.",
    )
    workspace_root: Path | None = Field(
        default=None,
        description="Where per-user workspaces live. Default: 'workspaces/' beside the "
        "SQLite database (or in the working directory).",
    )
    network_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds an application has to answer before its start is abandoned.",
    )
    auto_user_creation: bool = Field(
        default=False,
        description="Create a user on first login when the hub knows them but we don't.",
    )
    # NoDecode: the JSON is parsed by our validator, so that an error names the variable.
    demo_applications: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description="JSON: image name -> policy overrides, granted to users at login.",
    )
    admin_group: str | None = Field(
        default=None,
        description="Hub group whose members are admins (besides hub admins).",
    )
    log_format: LogFormat = Field(default=LogFormat.CONSOLE, description="'console' or 'json'.")
    log_level: str = Field(
        default="INFO",
        pattern=r"^(?i:debug|info|warning|error|critical)$",
        description="Logging threshold.",
    )
    cookie_secret: SecretStr | None = Field(
        default=None,
        description="Key signing session cookies. Default: derived from JUPYTERHUB_API_TOKEN.",
    )
    reconcile_interval: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds between two reconciliations."
    )

    # -- what JupyterHub hands a service (managed services get exactly these)
    jupyterhub_api_url: str = _hub(
        "JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api", "The hub's REST API."
    )
    jupyterhub_api_token: SecretStr | None = _hub(
        "JUPYTERHUB_API_TOKEN", None, "The service's hub token (also its OAuth client secret)."
    )
    jupyterhub_service_name: str = _hub("JUPYTERHUB_SERVICE_NAME", "remoteapp", "Service name.")
    jupyterhub_service_prefix: str = _hub(
        "JUPYTERHUB_SERVICE_PREFIX", "/services/remoteapp/", "URL prefix of the service."
    )
    jupyterhub_service_url: str = _hub(
        "JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101", "Where the service listens."
    )
    jupyterhub_client_id: str | None = _hub(
        "JUPYTERHUB_CLIENT_ID", None, "OAuth client id (default: service-<name>)."
    )
    jupyterhub_oauth_callback_url: str | None = _hub(
        "JUPYTERHUB_OAUTH_CALLBACK_URL", None, "OAuth redirect URI, exactly as the hub has it."
    )
    jupyterhub_base_url: str = _hub("JUPYTERHUB_BASE_URL", "/", "The hub's base URL.")
    jupyterhub_public_url: str | None = _hub(
        "JUPYTERHUB_PUBLIC_URL", None, "Public URL of the hub (for absolute share links)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            if not Path(config_file).is_file():
                # The TOML source would silently ignore a missing file.
                raise FileNotFoundError(errno.ENOENT, "no such file", config_file)
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("demo_applications", mode="before")
    @classmethod
    def _parse_demo_applications(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("docker_tls_verify", mode="before")
    @classmethod
    def _docker_style_bool(cls, value: Any) -> Any:
        # Docker's own convention: DOCKER_TLS_VERIFY=1 (or any non-empty value) means on.
        if isinstance(value, str) and value.strip() == "":
            return False
        return value

    @field_validator("gate_url")
    @classmethod
    def _gate_url_shape(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be http://<host>:<port>")
        if parts.query or parts.fragment or parts.username is not None:
            raise ValueError("must be http://<host>:<port>")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        if port is None:
            raise ValueError("must name its port: http://<host>:<port>")
        return f"http://{parts.netloc}"

    @field_validator("jupyterhub_service_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not value.startswith("/") or not value.endswith("/"):
            raise ValueError("must start and end with '/'")
        return value

    # -- derived values
    @property
    def workspace_dir(self) -> Path:
        if self.workspace_root is not None:
            return self.workspace_root
        database_file = sqlite_path(self.database_url)
        base = database_file.parent if database_file is not None else Path.cwd()
        return base / "workspaces"

    @property
    def gate_address(self) -> tuple[str, int]:
        """(host, port) the gate listens on; port 0 takes any free port (tests only)."""
        if self.gate_url is not None:
            parts = urlsplit(self.gate_url)
            assert parts.hostname is not None  # validated
            assert parts.port is not None
            return parts.hostname, parts.port
        service = urlsplit(self.jupyterhub_service_url)
        port = (service.port or 80) + 1
        if port > 65535:
            raise SettingsError("REMOTEAPP_GATE_URL: required when the service's port is 65535")
        return service.hostname or "127.0.0.1", port

    @property
    def effective_gate_url(self) -> str:
        """The URL the proxy's application routes point at in gated mode."""
        host, port = self.gate_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def require_service_settings(self) -> None:
        """Check what only the running service needs (the CLI tools can do without)."""
        if self.configproxy_auth_token is None:
            raise SettingsError(
                "CONFIGPROXY_AUTH_TOKEN: required to run the service (the proxy's API token)"
            )
        if self.jupyterhub_api_token is None:
            raise SettingsError(
                "JUPYTERHUB_API_TOKEN: required to run the service (the hub gives it to a "
                "managed service; set it to the service's api_token when run on its own)"
            )


def normalise_database_url(url: str) -> str:
    """Turn what operators type into an async SQLAlchemy URL.

    ``postgresql://`` / ``postgres://`` → asyncpg, ``sqlite://`` → aiosqlite; anything
    without a scheme is a path to a SQLite file.
    """
    url = url.strip()
    if not url:
        raise ValueError("the database URL is empty")
    if "://" not in url:
        return "sqlite+aiosqlite:///" + str(Path(url).expanduser())
    scheme, rest = url.split("://", 1)
    scheme = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(scheme, scheme)
    if not scheme.startswith(("sqlite+aiosqlite", "postgresql+asyncpg")):
        raise ValueError(f"unsupported database scheme {scheme!r} (use sqlite or postgresql)")
    return f"{scheme}://{rest}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL or an in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path
    path = path.split("?", 1)[0]
    if path in {"", ":memory:"}:
        return None
    return Path(path)


def _variable_name(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "settings"
    field = str(loc[0])
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        return str(first)
    if field.isupper():
        return field
    return "REMOTEAPP_" + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any validation problem into one ``SettingsError`` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        raise SettingsError(f"{_variable_name(tuple(error['loc']))}: {message}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_FILE_VARIABLE}: not valid TOML: {exc}") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise SettingsError(f"settings: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{CONFIG_FILE_VARIABLE}: cannot read {exc.filename}") from None
