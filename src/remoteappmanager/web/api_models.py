"""The REST API's wire models (pydantic): what requests may carry and what answers look like."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    StringConstraints,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic_core import core_schema

from remoteappmanager.domain.audit import COUNT_AHEAD, AuditEvent, EventPage
from remoteappmanager.domain.confinement import ResourceLimits, limits_for
from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import (
    IMAGE_REFERENCE_PATTERN,
    MAX_CPU_LIMIT,
    MAX_IMAGE_LENGTH,
    MAX_MEMORY_LIMIT_MB,
    MAX_NAME_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PIDS_LIMIT,
    MAX_PLACEMENT_CONSTRAINTS,
    MAX_PLACEMENT_LENGTH,
    MAX_TIMEOUT_S,
    MIN_CPU_LIMIT,
    MIN_MEMORY_LIMIT_MB,
    PLACEMENT_PATTERN,
    Grant,
    GroupGrant,
    Policy,
    User,
    Volume,
    validate_placement,
)
from remoteappmanager.domain.naming import URL_ID_LENGTH, container_name, urlpath
from remoteappmanager.domain.sessions import STOP_REASON_TEXT, Session, SessionState, StopRecord
from remoteappmanager.domain.shares import Share, ShareKind
from remoteappmanager.services.activity import SessionTimes
from remoteappmanager.services.admin import RegisteredApplication, Statistics
from remoteappmanager.services.applications import UserApplication
from remoteappmanager.services.shares import ControlView
from remoteappmanager.web.api import PathParameter

_Item = TypeVar("_Item", bound=BaseModel)
_Source = TypeVar("_Source")

# "$(?!\n)": the end of the text in ECMA-262 and Python alike (Python's "$" also matches
# before a final newline).
_TEXT_END = r"$(?!\n)"
MAPPING_ID_PATTERN = rf"^[A-Za-z0-9_-]{{1,64}}{_TEXT_END}"
# The REST API's numeric ids: digits, few enough for the database to hold.
ROW_ID_PATTERN = rf"^[0-9]{{1,18}}{_TEXT_END}"
URL_ID_PATTERN = rf"^[a-z0-9]{{{URL_ID_LENGTH},64}}{_TEXT_END}"

MAPPING_ID = PathParameter("A grant's mapping id.", MAPPING_ID_PATTERN, 64)
URL_ID = PathParameter("A running application's url id.", URL_ID_PATTERN, 64)
ROW_ID = PathParameter("A numeric id.", ROW_ID_PATTERN, 18)


@dataclass(frozen=True)
class _Checked:
    """A string the service checks against ``pattern()`` (with Python ``re``, as JSON Schema
    validators apply it), documented with the very same pattern."""

    pattern: Callable[[], str]
    max_length: int
    message: str
    format: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self._check, core_schema.str_schema(max_length=self.max_length)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        documented: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.format is not None:
            # A name for what the pattern spells out, for generators and readers.
            documented["format"] = self.format
        documented["pattern"] = self.pattern()
        return documented

    def _check(self, value: str) -> str:
        if not re.search(self.pattern(), value):
            raise ValueError(self.message)
        return value


MappingId = Annotated[
    str,
    _Checked(
        lambda: MAPPING_ID_PATTERN, 64, "a mapping id is made of letters, digits, '-' and '_'"
    ),
]
_ShortText = Annotated[str, StringConstraints(max_length=1024)]
# One configurable's value: the original's ``{"resolution": "1920x1080"}``, or the bare value.
ConfigurableValue = dict[Annotated[str, StringConstraints(max_length=64)], _ShortText | None] | (
    _ShortText | None
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    """An answer. The ``of`` constructors build it from domain values that are valid already,
    with ``model_construct``: validating them again would be most of a listing's cost."""

    model_config = ConfigDict(frozen=True)


# ------------------------------------------------------------------------------ lists
class ItemList(_Answer, Generic[_Item]):
    """The original's list envelope: items by id, and the ids in order."""

    offset: int = 0
    total: int
    items: dict[str, _Item]
    identifiers: list[str]

    @classmethod
    def of(
        cls,
        entries: Iterable[_Source],
        key: Callable[[_Source], str],
        item: Callable[[_Source], _Item],
    ) -> ItemList[_Item]:
        items = {key(entry): item(entry) for entry in entries}
        return cls.model_construct(total=len(items), items=items, identifiers=list(items))

    @classmethod
    def page(
        cls,
        entries: Iterable[_Source],
        key: Callable[[_Source], str],
        item: Callable[[_Source], _Item],
        *,
        total: int,
        offset: int,
    ) -> ItemList[_Item]:
        """One page of a longer listing: ``total`` matches in all, this page from ``offset``."""
        items = {key(entry): item(entry) for entry in entries}
        return cls.model_construct(offset=offset, total=total, items=items, identifiers=list(items))


# ------------------------------------------------------------------------------ users
class UserOut(_Answer):
    """The caller as the service sees them."""

    name: str
    admin: bool
    groups: list[str]


# ------------------------------------------------------------------------------ containers
class ContainerOut(_Answer):
    """A running (or starting, stopping, exited) application of the user."""

    url_id: str
    name: str
    image_name: str
    docker_id: str | None = Field(description="Null while the container is being created.")
    mapping_id: str
    urlpath: str = Field(description="Where the application is served (no trailing slash).")
    state: Literal["starting", "running", "stopping", "stopped"] = Field(
        description="`stopped`: its process ended (the container is removed shortly), or it "
        "was stopped (see `stop_reason`)."
    )
    step: (
        Literal["creating", "starting", "pulling the image", "waiting for the app", "routing"]
        | None
    ) = Field(
        default=None,
        description="While the container is starting: the step its start is at (`creating` "
        "the container, `starting` it, `pulling the image` on a swarm node that prepares the "
        "task, `waiting for the app` to answer, `routing` the proxy to it); null otherwise. "
        "Poll the container (or the application) to follow a start.",
    )
    started_at: str | None = Field(description="When it started (ISO 8601, UTC).")
    last_input_at: str | None = Field(
        description="The last client input (requests, WebSocket data) that reached it."
    )
    expires_at: str | None = Field(
        description="When it is stopped: the earlier of its policy's idle and lifetime "
        "deadlines; null if its policy sets neither."
    )
    stop_reason: StopReasonName | None = Field(
        description="Why it ended, once stopped (`oom`: out of memory); null otherwise."
    )

    @classmethod
    def of(cls, session: Session, realm: str, times: SessionTimes | None = None) -> ContainerOut:
        return cls.model_construct(**cls._container_fields(session, realm, times))

    @classmethod
    def stopped(cls, record: StopRecord, realm: str) -> ContainerOut:
        """A session that ended, as its user is told about it."""
        return cls.model_construct(
            url_id=record.url_id,
            name=container_name(realm, record.user, record.mapping_id),
            image_name="",
            docker_id=None,
            mapping_id=record.mapping_id,
            urlpath=urlpath(record.user, record.url_id),
            state="stopped",
            started_at=None,
            last_input_at=None,
            expires_at=None,
            stop_reason=record.reason.value,
        )

    @staticmethod
    def _container_fields(
        session: Session, realm: str, times: SessionTimes | None = None
    ) -> dict[str, Any]:
        state = session.state
        last_input = times.last_input_at if times is not None else None
        expires = times.expires_at if times is not None else None
        return {
            "url_id": session.url_id,
            "name": container_name(realm, session.user, session.mapping_id),
            "image_name": session.image,
            "docker_id": session.container_id,
            "mapping_id": session.mapping_id,
            "urlpath": session.urlpath,
            "state": "stopped" if state is SessionState.EXITED else state.value,
            "step": session.step.value if session.step is not None else None,
            "started_at": _iso(session.started_at),
            "last_input_at": _iso(last_input),
            "expires_at": _iso(expires),
            "stop_reason": None,
        }


StopReasonName = Literal["user", "admin", "idle", "lifetime", "oom", "died", "reconcile"]


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


class StopOut(_Answer):
    """Why the grant's last session ended (shown until a new one starts)."""

    url_id: str
    stop_reason: StopReasonName
    message: str = Field(description="The reason in words, e.g. `out of memory`.")
    stopped_at: str = Field(description="ISO 8601, UTC.")

    @classmethod
    def of(cls, record: StopRecord) -> StopOut:
        return cls.model_construct(
            url_id=record.url_id,
            stop_reason=record.reason.value,
            message=STOP_REASON_TEXT[record.reason],
            stopped_at=record.stopped_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        )


class ContainerList(ItemList[ContainerOut]):
    """``containers/``: the user's applications by ``url_id``."""


class ConfigurablesIn(_Request):
    """The start-up choices the image offers (see the application's ``configurables``)."""

    resolution: ConfigurableValue = Field(
        default=None, description='{"resolution": "1920x1080"} (WIDTHxHEIGHT)'
    )
    startupdata: ConfigurableValue = Field(
        default=None, description='{"startupdata": "/workspace/file"} (inside a mount)'
    )


class ContainerCreate(_Request):
    """``POST containers/``: start the application of one of my grants."""

    mapping_id: MappingId
    configurables: ConfigurablesIn = Field(default_factory=ConfigurablesIn)

    def configurable_values(self) -> dict[str, object]:
        """The configurables as the service takes them (only those that were sent)."""
        return self.configurables.model_dump(exclude_unset=True)


# ------------------------------------------------------------------------------ applications
class ImageOut(_Answer):
    name: str
    ui_name: str
    icon_128: str = Field(description="Base64 PNG, or empty.")
    description: str
    type: Literal["vncapp", "webapp", ""] = Field(description="Empty when the image is gone.")
    configurables: list[str] = Field(description="Configurables offered under this grant.")

    @classmethod
    def of(cls, image: str, metadata: ImageMetadata | None, offered: Iterable[str]) -> ImageOut:
        if metadata is None:
            return cls.model_construct(
                name=image, ui_name=image, icon_128="", description="", type="", configurables=[]
            )
        return cls.model_construct(
            name=metadata.name,
            ui_name=metadata.ui_name,
            icon_128=metadata.icon_128,
            description=metadata.description,
            type=metadata.type.value,
            configurables=list(offered),
        )


class _PolicyFields(_Answer):
    """A grant's policy as flat fields: the user API nests them as ``policy``, the admin API
    inlines them in each grant (as the original's accounting did)."""

    app_license: str | None
    allow_home: bool
    allow_view: bool
    allow_common: bool
    volume_source: str | None
    volume_target: str | None
    volume_mode: Literal["ro", "rw"] | None
    allow_startup_data: bool
    placement: list[str] = Field(
        description="Docker Swarm placement constraints the application's task must meet "
        "(REMOTEAPP_ENGINE=swarm; refused at start on a single engine)."
    )
    memory_limit_mb: int | None = Field(
        description="Memory limit in MiB, swap included; null: the deployment's default."
    )
    cpu_limit: float | None = Field(
        description="CPU limit in cores (fractional); null: the deployment's default."
    )
    pids_limit: int | None = Field(
        description="Process (and thread) limit; null: the deployment's default."
    )
    idle_timeout_s: int | None = Field(
        description="Seconds without input after which the session is stopped; 0 or null: never."
    )
    max_lifetime_s: int | None = Field(
        description="Seconds after its start at which the session is stopped; 0 or null: never."
    )

    @staticmethod
    def _policy_fields(policy: Policy) -> dict[str, Any]:
        return {**policy.flat(), "placement": list(policy.placement)}


class PolicyOut(_PolicyFields):
    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        return cls.model_construct(**cls._policy_fields(policy))


class LimitsOut(_Answer):
    """What a container of this grant may use: the policy's limits, or the deployment's
    defaults where the policy sets none (null: unlimited)."""

    memory_limit_mb: int | None
    cpu_limit: float | None
    pids_limit: int | None

    @classmethod
    def of(cls, limits: ResourceLimits) -> LimitsOut:
        return cls.model_construct(
            memory_limit_mb=limits.memory_mb, cpu_limit=limits.cpus, pids_limit=limits.pids
        )


class ApplicationOut(_Answer):
    """One of my grants: the image, the policy, and the running container if any."""

    mapping_id: str
    available: bool = Field(
        description="False when the image cannot be used (see `unavailable_reason`)."
    )
    unavailable_reason: str | None = Field(
        description="Why the image is unavailable (not on the engine, a reference the engine "
        "refuses...); null when it is available."
    )
    image: ImageOut
    policy: PolicyOut
    limits: LimitsOut
    container: ContainerOut | None
    last_stop: StopOut | None = Field(
        description="Why the last session of this grant ended, when none runs now and it "
        "ended in the last days; null otherwise."
    )
    source_group: str | None = Field(
        description="The hub group this application is granted to (I have it while I am "
        "in the group); null for a grant to me by name.",
    )

    @classmethod
    def of(
        cls, application: UserApplication, realm: str, defaults: ResourceLimits
    ) -> ApplicationOut:
        grant = application.grant
        session = application.session
        return cls.model_construct(
            mapping_id=grant.mapping_id,
            available=application.available,
            unavailable_reason=application.unavailable_reason,
            image=ImageOut.of(
                grant.application.image, application.image, application.configurables
            ),
            policy=PolicyOut.of(grant.policy),
            limits=LimitsOut.of(limits_for(grant.policy, defaults)),
            container=(
                ContainerOut.of(session, realm, application.times) if session is not None else None
            ),
            last_stop=(
                StopOut.of(application.last_stop) if application.last_stop is not None else None
            ),
            source_group=grant.source_group,
        )


class ApplicationList(ItemList[ApplicationOut]):
    """``applications/``: my grants by ``mapping_id``."""


# ------------------------------------------------------------------------------ admin
# No leading zero, and at most 18 digits: always a positive number a database can hold.
_ROW_ID_TEXT = r"^[1-9][0-9]{0,17}$"
_ROW_ID_RE = re.compile(_ROW_ID_TEXT)


def _row_id(value: object) -> object:
    # A JSON true is not an id, though pydantic's lax integers would take it; 3.0 is the
    # integer 3 (as JSON Schema has it), 3.5 is refused by the integer validation.
    if isinstance(value, bool):
        raise ValueError("an id is a number or a string of digits")
    if isinstance(value, str):
        if not _ROW_ID_RE.match(value) or value.endswith("\n"):
            raise ValueError("an id is a number or a string of digits")
        return int(value)
    return value


# Ids travel as strings, as the original's did; requests may send them as numbers too.
def _json_number(value: object) -> object:
    # A JSON number, as JSON Schema reads one: 3.0 is the integer 3, but neither true nor
    # "3" is a number (pydantic's lax numbers would take both).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_JSON_NUMBER = BeforeValidator(_json_number)

RowId = Annotated[
    int,
    BeforeValidator(_row_id),
    Field(ge=1, le=2**63 - 1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                {"type": "string", "pattern": _ROW_ID_TEXT[:-1] + r"$(?!\n)"},
            ],
            "description": "A numeric id (a number or a string of digits).",
        }
    ),
]
# Where the domain's validators say "printable" (str.isprintable), the document says which
# characters that is; the answers then agree with the validators by construction.


@functools.cache
def _printable_class(exclude: str = "", *, spaces: bool = True) -> str:
    """A regular-expression class of the printable characters, less ``exclude`` (and
    whitespace unless ``spaces``), as ranges of literal characters."""
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for point in range(sys.maxunicode + 2):
        char = chr(point) if point <= sys.maxunicode else ""
        wanted = (
            bool(char)
            and char.isprintable()
            and char not in exclude
            and (spaces or not char.isspace())
        )
        if wanted and start is None:
            start = point
        elif not wanted and start is not None:
            ranges.append((start, point - 1))
            start = None

    def literal(point: int) -> str:
        char = chr(point)
        return "\\" + char if char in "\\]^-[" else char

    return (
        "["
        + "".join(
            literal(low) if low == high else f"{literal(low)}-{literal(high)}"
            for low, high in ranges
        )
        + "]"
    )


def _user_name_pattern() -> str:
    edge = _printable_class("/", spaces=False)
    inner = _printable_class("/")
    return rf"^{edge}(?:{inner}{{0,{MAX_NAME_LENGTH - 2}}}{edge})?{_TEXT_END}"


def _path_pattern(*, colon: bool) -> str:
    # validate_abs_path: absolute, printable, no ".." segment (and, inside SOURCE:TARGET:MODE,
    # no colon).
    inner = _printable_class("" if colon else ":")
    stop = "/" if colon else "[/:]"
    rest = ".*/" if colon else "[^:]*/"
    return rf"(?!(?:{rest})?\.\.(?:{stop}|$))/{inner}*"


_UserName = Annotated[
    str,
    _Checked(
        _user_name_pattern,
        MAX_NAME_LENGTH,
        "a user name is printable, without '/' and without surrounding spaces",
        "hub-user-name",
    ),
]
_GroupName = Annotated[
    str,
    _Checked(
        _user_name_pattern,
        MAX_NAME_LENGTH,
        "a group name is printable, without '/' and without surrounding spaces",
        "hub-group-name",
    ),
]
_ImageName = Annotated[
    str,
    _Checked(
        lambda: IMAGE_REFERENCE_PATTERN,
        MAX_IMAGE_LENGTH,
        "not a valid Docker image name (see the image_name pattern)",
        "docker-image-reference",
    ),
]
_PathOrEmpty = Annotated[
    str,
    _Checked(
        lambda: rf"^(?:{_path_pattern(colon=True)})?{_TEXT_END}",
        MAX_PATH_LENGTH,
        "a path is absolute, printable and without '..' (or empty for none)",
        "absolute-path-or-empty",
    ),
]
_Constraint = Annotated[
    str,
    _Checked(
        lambda: rf"^{PLACEMENT_PATTERN}{_TEXT_END}",
        MAX_PLACEMENT_LENGTH,
        "a placement constraint is <key>==<value> or <key>!=<value> with a swarm node key "
        "(node.labels.<name>, engine.labels.<name>, node.id, node.hostname, node.role, "
        "node.platform.os, node.platform.arch)",
        "swarm-placement-constraint",
    ),
]
_VolumeOrEmpty = Annotated[
    str,
    _Checked(
        lambda: (
            rf"^(?:{_path_pattern(colon=False)}:{_path_pattern(colon=False)}:(?:ro|rw))?"
            + _TEXT_END
        ),
        MAX_PATH_LENGTH,
        "a volume is SOURCE:TARGET:MODE, both paths absolute, MODE ro or rw (or empty for none)",
        "volume-or-empty",
    ),
]


class AdminUserOut(_Answer):
    id: str
    name: str

    @classmethod
    def of(cls, user: User) -> AdminUserOut:
        return cls.model_construct(id=str(user.id), name=user.name)


class AdminUserList(ItemList[AdminUserOut]):
    """``admin/users/``: every user by id."""


class AdminUserCreate(_Request):
    """``POST admin/users/``: add a user by hub name."""

    name: _UserName


class ImageLabelsOut(_Answer):
    """What an image declares through its labels."""

    ui_name: str
    icon_128: str = Field(description="Base64 PNG, or empty.")
    description: str
    type: Literal["vncapp", "webapp"]
    env: list[str] = Field(description="Environment variables the image accepts.")

    @classmethod
    def of(cls, metadata: ImageMetadata) -> ImageLabelsOut:
        return cls.model_construct(
            ui_name=metadata.ui_name,
            icon_128=metadata.icon_128,
            description=metadata.description,
            type=metadata.type.value,
            env=sorted(metadata.env),
        )


class AdminApplicationOut(_Answer):
    id: str
    image_name: str
    available: bool | None = Field(
        description="Whether the engine has the image; null when it could not be asked."
    )
    unavailable_reason: str | None = Field(
        description="Why the image is unavailable or unknown; null when it is available."
    )
    image: ImageLabelsOut | None = Field(description="Null unless the engine has the image.")

    @classmethod
    def of(cls, registered: RegisteredApplication) -> AdminApplicationOut:
        application = registered.application
        return cls.model_construct(
            id=str(application.id),
            image_name=application.image,
            available=registered.available,
            unavailable_reason=registered.unavailable_reason,
            image=ImageLabelsOut.of(registered.image) if registered.image is not None else None,
        )


class AdminApplicationList(ItemList[AdminApplicationOut]):
    """``admin/applications/``: every registered image by id."""


class AdminApplicationCreate(_Request):
    """``POST admin/applications/``: register a Docker image (a reference the engine parses:
    lower-case repository, at most 255 characters once the engine has added
    ``docker.io/library/``, a tag of at most 128 characters, a full digest)."""

    image_name: _ImageName


class AdminGrantOut(_PolicyFields):
    """One grant (the original's "accounting"): who may run what, under which policy.

    A grant names a user (``user_id``, ``user_name``; ``group`` null) or a hub group
    (``group``; ``user_id`` and ``user_name`` null), never both."""

    mapping_id: str
    user_id: str | None
    user_name: str | None
    group: str | None = Field(
        description="The hub group whose members hold this grant; null for a user's grant."
    )
    application_id: str
    image_name: str

    @classmethod
    def of(cls, grant: Grant | GroupGrant) -> AdminGrantOut:
        if isinstance(grant, GroupGrant):
            return cls.model_construct(
                mapping_id=grant.mapping_id,
                user_id=None,
                user_name=None,
                group=grant.group,
                application_id=str(grant.application.id),
                image_name=grant.application.image,
                **cls._policy_fields(grant.policy),
            )
        return cls.model_construct(
            mapping_id=grant.mapping_id,
            user_id=str(grant.user.id),
            user_name=grant.user.name,
            group=None,
            application_id=str(grant.application.id),
            image_name=grant.application.image,
            **cls._policy_fields(grant.policy),
        )


class AdminGrantList(ItemList[AdminGrantOut]):
    """``admin/accounting/?filter=...``: one user's grants by ``mapping_id``."""


def _user_or_group_rule(schema: dict[str, Any]) -> None:
    schema.setdefault("allOf", []).append(_USER_OR_GROUP)


# Exactly one of user_id and group (null counts as absent).
_USER_OR_GROUP: dict[str, Any] = {
    "oneOf": [
        {"required": ["user_id"], "properties": {"user_id": {"not": {"type": "null"}}}},
        {"required": ["group"], "properties": {"group": {"not": {"type": "null"}}}},
    ]
}


class AdminGrantFilter(_Request):
    """The ``filter`` query argument of ``admin/accounting/`` (JSON): one user's grants, or
    the grants to one hub group (exactly one of the two)."""

    model_config = ConfigDict(json_schema_extra=_user_or_group_rule)

    user_id: RowId | None = None
    group: _GroupName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> AdminGrantFilter:
        if (self.user_id is None) == (self.group is None):
            raise ValueError("give either user_id or group")
        return self


def _grant_create_rules(schema: dict[str, Any]) -> None:
    # What ``AdminGrantCreate._one_way_each`` checks, in JSON Schema: the application by
    # exactly one of image_name and application_id (null counts as absent); volume_source and
    # volume_target both or neither (empty counts as absent); not both volume forms.
    absent: dict[str, Any] = {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]}
    given: dict[str, Any] = {"type": "string", "minLength": 1}
    schema["allOf"] = [
        {
            "oneOf": [
                {
                    "required": ["image_name"],
                    "properties": {"image_name": {"type": "string"}},
                },
                {
                    "required": ["application_id"],
                    "properties": {"application_id": {"not": {"type": "null"}}},
                },
            ]
        },
        {
            "anyOf": [
                {
                    "required": ["volume_source", "volume_target"],
                    "properties": {"volume_source": given, "volume_target": given},
                },
                {"properties": {"volume_source": absent, "volume_target": absent}},
            ]
        },
        {
            "not": {
                "required": ["volume", "volume_source"],
                "properties": {"volume": given, "volume_source": given},
            }
        },
    ]
    schema["allOf"].append(_USER_OR_GROUP)


class AdminGrantCreate(_Request):
    """``POST admin/accounting/``: let a user (``user_id``) or every member of a hub group
    (``group``; exactly one of the two) run an application under a policy.

    Name the application by ``image_name`` or ``application_id``; give the volume as
    ``volume`` (``SOURCE:TARGET:MODE``) or as ``volume_source``/``volume_target`` (both or
    neither; empty means none) with ``volume_mode`` (default ``ro``).
    """

    model_config = ConfigDict(json_schema_extra=_grant_create_rules)

    user_id: RowId | None = None
    group: _GroupName | None = Field(
        default=None, description="A hub group: its members hold the grant (not with user_id)."
    )
    image_name: _ImageName | None = None
    application_id: RowId | None = None
    app_license: Annotated[str, StringConstraints(max_length=4096)] | None = None
    allow_home: bool = False
    allow_view: bool = False
    allow_common: bool = False
    volume: _VolumeOrEmpty | None = Field(default=None, description="SOURCE:TARGET:MODE")
    volume_source: _PathOrEmpty | None = None
    volume_target: _PathOrEmpty | None = None
    volume_mode: Literal["ro", "rw"] | None = None
    allow_startup_data: bool = False
    placement: list[_Constraint] = Field(
        default_factory=list,
        max_length=MAX_PLACEMENT_CONSTRAINTS,
        description="Docker Swarm placement constraints, all to be met (e.g. "
        "node.labels.gpu==true); only a swarm engine can start such a grant.",
    )
    memory_limit_mb: (
        Annotated[int, Field(ge=MIN_MEMORY_LIMIT_MB, le=MAX_MEMORY_LIMIT_MB), _JSON_NUMBER] | None
    ) = Field(default=None, description="MiB, swap included; null: the deployment's default.")
    cpu_limit: (
        Annotated[
            float, Field(ge=MIN_CPU_LIMIT, le=MAX_CPU_LIMIT, allow_inf_nan=False), _JSON_NUMBER
        ]
        | None
    ) = Field(default=None, description="Cores, fractional; null: the deployment's default.")
    pids_limit: Annotated[int, Field(ge=1, le=MAX_PIDS_LIMIT), _JSON_NUMBER] | None = Field(
        default=None, description="Processes; null: the deployment's default."
    )
    idle_timeout_s: Annotated[int, Field(ge=0, le=MAX_TIMEOUT_S), _JSON_NUMBER] | None = Field(
        default=None, description="Seconds without input before a stop; 0 or null: never."
    )
    max_lifetime_s: Annotated[int, Field(ge=0, le=MAX_TIMEOUT_S), _JSON_NUMBER] | None = Field(
        default=None, description="Seconds after the start before a stop; 0 or null: never."
    )

    @model_validator(mode="after")
    def _one_way_each(self) -> AdminGrantCreate:
        if (self.user_id is None) == (self.group is None):
            raise ValueError("give either user_id or group")
        if (self.image_name is None) == (self.application_id is None):
            raise ValueError("give either image_name or application_id")
        split = self.volume_source or self.volume_target
        if self.volume and split:
            raise ValueError("give either volume or volume_source and volume_target")
        if bool(self.volume_source) != bool(self.volume_target):
            raise ValueError("volume_source and volume_target go together (both or neither)")
        return self

    def application(self) -> int | str:
        """The application as the catalogue takes it: its id, or its image name."""
        if self.application_id is not None:
            return self.application_id
        assert self.image_name is not None
        return self.image_name

    def policy(self) -> Policy:
        """The policy asked for; ``InvalidRequest`` for an unacceptable volume."""
        volume: Volume | None = None
        if self.volume:
            volume = Volume.parse(self.volume)
        elif self.volume_source and self.volume_target:
            volume = Volume.of(self.volume_source, self.volume_target, self.volume_mode or "ro")
        return Policy(
            app_license=self.app_license or None,
            allow_home=self.allow_home,
            allow_view=self.allow_view,
            allow_common=self.allow_common,
            volume=volume,
            allow_startup_data=self.allow_startup_data,
            placement=validate_placement(self.placement),
            memory_limit_mb=self.memory_limit_mb,
            cpu_limit=self.cpu_limit,
            pids_limit=self.pids_limit,
            idle_timeout_s=self.idle_timeout_s,
            max_lifetime_s=self.max_lifetime_s,
        )


class AdminContainerOut(ContainerOut):
    """A session of any user."""

    user: str

    @classmethod
    def of(
        cls, session: Session, realm: str, times: SessionTimes | None = None
    ) -> AdminContainerOut:
        return cls.model_construct(
            **cls._container_fields(session, realm, times), user=session.user
        )


class AdminContainerList(ItemList[AdminContainerOut]):
    """``admin/containers/``: every user's sessions in this realm by ``url_id``."""


class AdminStatsOut(_Answer):
    realm: str
    num_total_users: int
    num_active_users: int = Field(description="Users with a running container.")
    num_applications: int
    num_running_containers: int

    @classmethod
    def of(cls, stats: Statistics) -> AdminStatsOut:
        return cls.model_construct(
            realm=stats.realm,
            num_total_users=stats.num_total_users,
            num_active_users=stats.num_active_users,
            num_applications=stats.num_applications,
            num_running_containers=stats.num_running_containers,
        )


# ------------------------------------------------------------------------------ audit
class EventOut(_Answer):
    """One event of the audit trail."""

    id: int
    time: str = Field(description="ISO 8601, UTC.")
    actor: str = Field(description='A user name, an OS account for remoteappdb, or "system".')
    action: str
    target: str
    detail: dict[str, str | int | float | bool | None]

    @classmethod
    def of(cls, event: AuditEvent) -> EventOut:
        return cls.model_construct(
            id=event.id,
            time=iso_time(event.time),
            actor=event.actor,
            action=event.action.value,
            target=event.target,
            detail=dict(event.detail),
        )


class EventList(ItemList[EventOut]):
    """``admin/events/``: newest first, by ``id``. Matches are counted only so far past the
    page: beyond that ``total`` is a lower bound and ``total_exact`` is false."""

    total: int = Field(
        description="How many events match: exactly if `total_exact`, otherwise at least this many."
    )
    total_exact: bool = Field(
        description=f"False when counting stopped {COUNT_AHEAD:,} events past this page: more "
        "events than `total` may match."
    )

    @classmethod
    def counted(cls, page: EventPage, *, offset: int) -> EventList:
        """One page of the audit trail, with its count as far as it went."""
        items = {str(event.id): EventOut.of(event) for event in page.events}
        return cls.model_construct(
            offset=offset,
            total=page.total,
            total_exact=page.total_exact,
            items=items,
            identifiers=list(items),
        )


def iso_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the microsecond when it has one."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ shares
SHARE_ID = PathParameter("A share's id.", ROW_ID_PATTERN, 18)


def _share_create_rules(schema: dict[str, Any]) -> None:
    # What ``ShareCreate._exactly_one`` checks, in JSON Schema: one of user, group and link.
    schema["oneOf"] = [
        {"required": ["user"], "properties": {"user": {"type": "string"}}},
        {"required": ["group"], "properties": {"group": {"type": "string"}}},
        {"required": ["link"], "properties": {"link": {"const": True}}},
    ]


class ShareCreate(_Request):
    """``POST containers/<url_id>/shares/``: share with a hub user, a hub group, or anyone
    signed in who holds the link (``"link": true``). Sharing with the same one again
    changes the mode of that share."""

    model_config = ConfigDict(json_schema_extra=_share_create_rules)

    user: _UserName | None = None
    group: _UserName | None = None
    link: Literal[True] | None = None
    mode: Literal["view", "control"] = "view"

    @model_validator(mode="after")
    def _exactly_one(self) -> ShareCreate:
        given = [name for name in (self.user, self.group, self.link) if name is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of user, group and link")
        return self

    def subject(self) -> tuple[ShareKind, str]:
        if self.user is not None:
            return ShareKind.USER, self.user
        if self.group is not None:
            return ShareKind.GROUP, self.group
        return ShareKind.LINK, ""


_SHARE_SUBJECTS = ("user", "group", "link")


def _share_out_rules(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    for name in ("user", "group"):
        properties[name] = {"type": "string", "title": properties[name].get("title", name)}
    properties["link"] = {"const": True, "type": "boolean", "title": "Link"}
    schema["oneOf"] = [{"required": [name]} for name in _SHARE_SUBJECTS]


class ShareOut(_Answer):
    """A share: with ``user``, ``group`` or ``link`` (exactly one), in ``mode``."""

    model_config = ConfigDict(json_schema_extra=_share_out_rules)

    id: str
    user: str | None = None
    group: str | None = None
    link: bool | None = None
    mode: Literal["view", "control"]
    created_at: datetime

    @model_serializer(mode="wrap")
    def _only_the_subject(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Exactly one of user, group and link is in the answer; the others are left out.
        dumped = handler(self)
        return {
            key: value
            for key, value in dumped.items()
            if value is not None or key not in _SHARE_SUBJECTS
        }

    @classmethod
    def of(cls, share: Share) -> ShareOut:
        subject: dict[str, Any] = {}
        if share.kind is ShareKind.USER:
            subject["user"] = share.subject
        elif share.kind is ShareKind.GROUP:
            subject["group"] = share.subject
        else:
            subject["link"] = True
        return cls.model_construct(
            id=str(share.id), mode=share.mode.value, created_at=share.created_at, **subject
        )


class ConnectedOut(_Answer):
    """Someone with the session open right now (a signed-in browser)."""

    user: str
    mode: Literal["view", "control"] | None = Field(
        description="Their share's mode; null for the owner and admins."
    )
    input: bool = Field(description="Whether their keyboard and mouse reach the application.")


class ShareList(ItemList[ShareOut]):
    """``containers/<url_id>/shares/``: the session's shares by id, and who is connected."""

    connected: list[ConnectedOut]


class DirectoryQuery(_Request):
    """The ``query`` argument of ``directory`` (JSON): the start of a user or group name."""

    prefix: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]


class DirectoryOut(_Answer):
    """Hub users and groups whose names start with the prefix (at most 20 of each)."""

    users: list[str]
    groups: list[str]


class ControlIn(_Request):
    """``POST containers/<url_id>/control``. A viewer may ``request`` control or
    ``release`` it; the owner (or an admin) may ``give`` it to ``user``, ``refuse`` their
    request, ``take`` it back, ``release`` it (back to what the shares say) or let
    ``everyone`` control."""

    action: Literal["request", "release", "give", "refuse", "take", "everyone"]
    user: _UserName | None = None


class ControlOut(_Answer):
    """Who controls a shared session besides its owner, as the caller sees it."""

    owner: str
    urlpath: str = Field(description="Where the application is served (open it there).")
    controller: str | None = Field(description="The viewer control was handed to, if any.")
    owner_holds: bool = Field(description="The owner took control back: no viewer has input.")
    everyone: bool = Field(description="Every viewer has input.")
    requests: list[str] = Field(description="Viewers asking for control (owner and admins).")
    mode: Literal["view", "control"] | None = Field(
        description="The caller's share mode; null for the owner and admins."
    )
    input: bool = Field(description="Whether the caller's input reaches the application.")

    @classmethod
    def of(cls, view: ControlView) -> ControlOut:
        return cls.model_construct(
            owner=view.owner,
            urlpath=view.urlpath,
            controller=view.controller,
            owner_holds=view.owner_holds,
            everyone=view.everyone,
            requests=list(view.requests),
            mode=None if view.mode is None else view.mode.value,
            input=view.input_allowed,
        )
