"""The one settings object: environment variables (``REMOTEAPP_*``, ``CONFIGPROXY_*``,
``JUPYTERHUB_*``) over an optional TOML file (``REMOTEAPP_CONFIG_FILE``) over defaults.

Built once at start (``load_settings``) and passed down; nothing else reads the environment.
Invalid values raise ``SettingsError`` whose message is one line naming the variable.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
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
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from remoteappmanager.domain.confinement import (
    DEFAULT_CPU_LIMIT,
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_NETWORK,
    DEFAULT_PIDS_LIMIT,
    MAX_UID_BASE,
    Confinement,
    ResourceLimits,
)
from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import MIN_MEMORY_LIMIT_MB
from remoteappmanager.domain.routing import check_app_origin_template
from remoteappmanager.domain.volumes import VolumeRules, check_volume_root, is_within

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///remoteappmanager.db"
CONFIG_FILE_VARIABLE = "REMOTEAPP_CONFIG_FILE"


class SettingsError(Exception):
    """A setting is missing or invalid; ``str()`` is one line that names the variable."""


class ContainerAccess(enum.StrEnum):
    GATED = "gated"
    DIRECT = "direct"


class Engine(enum.StrEnum):
    DOCKER = "docker"
    SWARM = "swarm"


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
    engine: Engine = Field(
        default=Engine.DOCKER,
        description="'docker': applications are containers on one Docker engine; 'swarm': "
        "the engine is a Docker Swarm manager and each application is a swarm service, "
        "reached over REMOTEAPP_SWARM_NETWORK (see the swarm deployment page).",
    )
    swarm_network: str = Field(
        default="remoteapp-overlay",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="With REMOTEAPP_ENGINE=swarm: the attachable overlay network the "
        "applications' tasks join, and the service's gate with them (created if missing).",
    )
    # NoDecode: a JSON list or comma-separated paths, parsed by our validator.
    swarm_shared_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="With REMOTEAPP_ENGINE=swarm: host folders that every node sees alike "
        "(NFS or another shared file system; a JSON list or comma-separated absolute paths). "
        "A grant's volume and the workspaces must lie under one of them, since a task may "
        "run on any node.",
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
    gate_route_url: str | None = Field(
        default=None,
        description="The proxy's target for application paths in gated mode when it is not "
        "this process's gate, as http://<host>:<port>: a load balancer in front of the gates "
        "of several replicas, so that every replica writes the same routes and any replica's "
        "gate serves any session. Default: REMOTEAPP_GATE_URL.",
    )
    allow_public_publish_ip: bool = Field(
        default=False,
        description="Accept a REMOTEAPP_PUBLISH_IP that is not a loopback address. Then "
        "every application port is reachable from the network without passing the gate; "
        "only for a host whose firewall closes those ports.",
    )
    app_origin_template: str | None = Field(
        default=None,
        description="Serve each application from a host of its own, e.g. "
        "'https://{url_id}.apps.example.org' ({url_id} is the first label; the names must "
        "reach the proxy). Unset: applications share the service's origin, where they run "
        "confined (see the security overview). Needs gated access and JUPYTERHUB_PUBLIC_URL.",
    )
    gate_max_connections_per_user: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests in progress plus open WebSockets one user may have through the "
        "gate at once (gated mode); beyond it the gate answers 429 with Retry-After.",
    )
    websocket_ping_s: float = Field(
        default=25.0,
        ge=0,
        le=3600,
        description="Seconds between the gate's pings on each leg of an open WebSocket (to "
        "the browser and to the application; gated mode). They keep idle connections alive "
        "through proxies that cut quiet ones, and a leg that has not answered by the next "
        "ping is closed. 0: no pings.",
    )
    publish_ip: str = Field(
        default="127.0.0.1",
        description="Host address on which container ports are published: a loopback "
        "address (127.0.0.1, ::1) unless REMOTEAPP_ALLOW_PUBLIC_PUBLISH_IP is true.",
    )
    container_network: str = Field(
        default=DEFAULT_NETWORK,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Docker network of the application containers. Created if missing as a "
        "bridge on which containers cannot reach each other "
        "(com.docker.network.bridge.enable_icc=false); an existing network that lets them "
        "is refused.",
    )
    default_memory_limit_mb: int = Field(
        default=DEFAULT_MEMORY_LIMIT_MB,
        ge=0,
        le=16 * 1024 * 1024,
        description="Memory limit of an application container in MiB, swap included "
        f"(0: none; otherwise at least {MIN_MEMORY_LIMIT_MB}).",
    )
    default_cpu_limit: float = Field(
        default=DEFAULT_CPU_LIMIT,
        ge=0,
        le=1024,
        description="CPU limit of an application container in cores, fractional (0: none).",
    )
    default_pids_limit: int = Field(
        default=DEFAULT_PIDS_LIMIT,
        ge=0,
        le=4_194_304,
        description="Processes (threads included) an application container may have (0: none).",
    )
    # NoDecode: a JSON list or comma-separated paths, parsed by our validator.
    volume_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Host folders under which grants may mount volumes (a JSON list or "
        "comma-separated absolute paths). Empty: no grant may mount a host folder. System "
        "paths (/, /etc, /proc, the Docker socket...) are refused whatever the roots.",
    )
    workspace_uid_base: int | None = Field(
        default=None,
        ge=1000,
        le=MAX_UID_BASE,
        description="Give each user a uid of their own: their containers run as (and their "
        "workspace belongs to) this number plus their user id. Unset: containers run as the "
        "image's user and every workspace belongs to uid 1000, shared by all users.",
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
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between two reconciliations; on a large realm at least nine "
        "times as long as the last pass took, so that reconciling takes at most a tenth of "
        "the service's time.",
    )
    cull_interval: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds between two passes of the culler, which stops sessions past "
        "their policy's idle timeout or maximum lifetime (a session is stopped at most this "
        "long after its deadline).",
    )
    cull_warning_s: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="Seconds before a session's idle or lifetime deadline from which the user "
        "page shows the time left, with a button to keep working.",
    )
    activity_flush_interval: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between two writes of the sessions' last client input to the "
        "database (one batch for all sessions), so that idle deadlines survive a restart; "
        "after a restart a session may look idle this much earlier than it is.",
    )
    max_concurrent_requests: int = Field(
        default=16,
        ge=0,
        le=100_000,
        description="Reads (GET and HEAD) of the service's pages and REST API answered at "
        "once; more wait their turn, first come first served. It bounds the work one turn of "
        "the event loop does, so that a crowd of requests cannot hold up the rest (the gate, "
        "timers) for long; 0 for no bound. `{svc}health` and `{svc}metrics` never wait.",
    )
    max_login_sessions_per_user: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Browser sign-ins one user may hold at once; a new one beyond it ends "
        "that user's least recently used sign-in (never another user's).",
    )
    max_sessions_per_user: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Applications one user may run at once (a start that replaces the "
        "same grant's session does not count twice); beyond it a start is refused with 409.",
    )
    event_retention_days: int = Field(
        default=365,
        ge=1,
        le=36_500,
        description="Days the audit trail keeps an event; older events are deleted in "
        "bounded slices by a job that runs every hour.",
    )
    start_rate_per_minute: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Application starts one user may ask for per minute; beyond it the API "
        "answers 429 Too Many Requests with Retry-After.",
    )
    sharing: bool = Field(
        default=True,
        description="Whether owners may share their running applications at all (with users, "
        "hub groups or a link; each grant's policy must also allow viewing). Off: no share "
        "can be made, and existing ones let nobody in.",
    )
    link_shares: bool = Field(
        default=True,
        description="Whether an application may be shared with anyone signed in who holds "
        "its link. Off: only named users and hub groups, and existing link shares let "
        "nobody in.",
    )
    control_shares: bool = Field(
        default=True,
        description="Whether anyone but the owner (and admins) may ever type or click in a "
        "shared application: `control` shares, handing control over, everyone in control. "
        "Off: every viewer only watches.",
    )
    clipboard_to_app: bool = Field(
        default=True,
        description="Whether text copied in the browser may be pasted into desktop "
        "applications (noVNC's clipboard, RFB ClientCutText). Off: the gate drops it for "
        "everyone, owners included, and the page hides the clipboard panel.",
    )
    clipboard_from_app: bool = Field(
        default=True,
        description="Whether text copied in a desktop application reaches the browser "
        "(RFB ServerCutText, shown in noVNC's clipboard panel). Off: the page's noVNC "
        "ignores it and hides the clipboard panel.",
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
    jupyterhub_oauth_access_scopes: Annotated[list[str] | None, NoDecode] = _hub(
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
        None,
        "JSON list of scopes, any one of which a hub token must hold to be accepted (the hub "
        "gives it to a managed service). Default: access:services!service=<service name>.",
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

    @field_validator("publish_ip")
    @classmethod
    def _loopback_publish_ip(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if address.is_loopback or info.data.get("allow_public_publish_ip"):
            return value
        reach = "all interfaces" if address.is_unspecified else "the network"
        raise ValueError(
            f"{value} would publish every application on {reach}, past the gate; use "
            "127.0.0.1 (or ::1), or set REMOTEAPP_ALLOW_PUBLIC_PUBLISH_IP=true if a firewall "
            "closes those ports"
        )

    @field_validator("default_memory_limit_mb")
    @classmethod
    def _engine_minimum_memory(cls, value: int) -> int:
        if 0 < value < MIN_MEMORY_LIMIT_MB:
            raise ValueError(f"must be 0 (no limit) or at least {MIN_MEMORY_LIMIT_MB}")
        return value

    @field_validator("volume_roots", "swarm_shared_roots", mode="before")
    @classmethod
    def _parse_volume_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            try:
                return tuple(check_volume_root(str(root)) for root in value)
            except InvalidRequest as exc:
                raise ValueError(exc.message) from None

    @field_validator("jupyterhub_oauth_access_scopes", mode="before")
    @classmethod
    def _parse_access_scopes(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON list of scopes") from None
        if value is not None and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(scope, str) and scope.strip() for scope in value)
        ):
            raise ValueError("must be a non-empty JSON list of scopes")
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

    @field_validator("gate_url", "gate_route_url")
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

    @field_validator("app_origin_template")
    @classmethod
    def _app_origin_shape(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return check_app_origin_template(value.strip())
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _app_origin_needs(self) -> Settings:
        if self.app_origin_template is None:
            return self
        if self.container_access is not ContainerAccess.GATED:
            raise ValueError(
                "REMOTEAPP_APP_ORIGIN_TEMPLATE: needs REMOTEAPP_CONTAINER_ACCESS=gated (the "
                "gate tells the application hosts apart)"
            )
        if self.public_origin is None:
            raise ValueError(
                "REMOTEAPP_APP_ORIGIN_TEMPLATE: needs JUPYTERHUB_PUBLIC_URL (the application "
                "hosts send browsers back to the service there)"
            )
        return self

    @model_validator(mode="after")
    def _swarm_workspaces_shared(self) -> Settings:
        if self.engine is not Engine.SWARM:
            return self
        workspaces = str(self.workspace_dir.absolute())
        if not any(is_within(workspaces, root) for root in self.swarm_shared_roots):
            raise ValueError(
                f"REMOTEAPP_WORKSPACE_ROOT: with REMOTEAPP_ENGINE=swarm the workspaces "
                f"({workspaces}) must lie under one of REMOTEAPP_SWARM_SHARED_ROOTS, the "
                "folders every node shares"
            )
        return self

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
    def confinement(self) -> Confinement:
        """How application containers are confined by default (capabilities come per type)."""
        limits = ResourceLimits.of(
            self.default_memory_limit_mb, self.default_cpu_limit, self.default_pids_limit
        )
        return Confinement(limits=limits, network=self.container_network)

    @property
    def volume_rules(self) -> VolumeRules:
        """Where grants may mount host folders from; never the workspaces or the database."""
        forbidden = [str(self.workspace_dir.absolute())]
        database_file = sqlite_path(self.database_url)
        if database_file is not None:
            forbidden.append(str(database_file.absolute()))
        shared = self.swarm_shared_roots if self.engine is Engine.SWARM else None
        return VolumeRules.of(self.volume_roots, forbidden, shared)

    @property
    def access_scopes(self) -> frozenset[str]:
        """The scopes that let a hub token in, any one of them (as JupyterHub's HubAuth)."""
        if self.jupyterhub_oauth_access_scopes:
            return frozenset(self.jupyterhub_oauth_access_scopes)
        return frozenset({f"access:services!service={self.jupyterhub_service_name}"})

    @property
    def public_origin(self) -> str | None:
        """``scheme://host[:port]`` of JUPYTERHUB_PUBLIC_URL, if it is set."""
        if not self.jupyterhub_public_url:
            return None
        parts = urlsplit(self.jupyterhub_public_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None
        return f"{parts.scheme}://{parts.netloc}"

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
        if self.gate_route_url is not None:
            return self.gate_route_url
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
        if not error["loc"]:  # a rule across settings: its message names them
            raise SettingsError(message) from None
        raise SettingsError(f"{_variable_name(tuple(error['loc']))}: {message}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_FILE_VARIABLE}: not valid TOML: {exc}") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise SettingsError(f"settings: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{CONFIG_FILE_VARIABLE}: cannot read {exc.filename}") from None
