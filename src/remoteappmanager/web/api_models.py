"""The REST API's wire models (pydantic): what requests may carry and what answers look like."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Grant, Policy, User, Volume
from remoteappmanager.domain.naming import container_name
from remoteappmanager.domain.sessions import Session
from remoteappmanager.services.admin import RegisteredApplication, Statistics
from remoteappmanager.services.applications import UserApplication

_Item = TypeVar("_Item", bound=BaseModel)
_Source = TypeVar("_Source")

MappingId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
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
    state: Literal["starting", "running", "stopping", "exited"]

    @classmethod
    def of(cls, session: Session, realm: str) -> ContainerOut:
        return cls.model_construct(**cls._container_fields(session, realm))

    @staticmethod
    def _container_fields(session: Session, realm: str) -> dict[str, Any]:
        return {
            "url_id": session.url_id,
            "name": container_name(realm, session.user, session.mapping_id),
            "image_name": session.image,
            "docker_id": session.container_id,
            "mapping_id": session.mapping_id,
            "urlpath": session.urlpath,
            "state": session.state.value,
        }


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

    @staticmethod
    def _policy_fields(policy: Policy) -> dict[str, Any]:
        volume = policy.volume
        return {
            "app_license": policy.app_license,
            "allow_home": policy.allow_home,
            "allow_view": policy.allow_view,
            "allow_common": policy.allow_common,
            "volume_source": volume.source if volume else None,
            "volume_target": volume.target if volume else None,
            "volume_mode": volume.mode.value if volume else None,
            "allow_startup_data": policy.allow_startup_data,
        }


class PolicyOut(_PolicyFields):
    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        return cls.model_construct(**cls._policy_fields(policy))


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
    container: ContainerOut | None

    @classmethod
    def of(cls, application: UserApplication, realm: str) -> ApplicationOut:
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
            container=ContainerOut.of(session, realm) if session is not None else None,
        )


class ApplicationList(ItemList[ApplicationOut]):
    """``applications/``: my grants by ``mapping_id``."""


# ------------------------------------------------------------------------------ admin
_ROW_ID_RE = re.compile(r"[0-9]{1,19}")


def _row_id(value: object) -> object:
    # A JSON true or 1.0 is not an id, though pydantic's lax integers would take them.
    if isinstance(value, bool | float):
        raise ValueError("an id is a number or a string of digits")
    if isinstance(value, str):
        if not _ROW_ID_RE.fullmatch(value):
            raise ValueError("an id is a number or a string of digits")
        return int(value)
    return value


# Ids travel as strings, as the original's did; requests may send them as numbers too.
RowId = Annotated[
    int,
    BeforeValidator(_row_id),
    Field(ge=1, le=2**63 - 1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": f"^{_ROW_ID_RE.pattern}$"},
            ],
            "description": "A numeric id (a number or a string of digits).",
        }
    ),
]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
_Path = Annotated[str, StringConstraints(max_length=1024)]


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

    name: _Name


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
    """``POST admin/applications/``: register a Docker image."""

    image_name: _Name


class AdminGrantOut(_PolicyFields):
    """One grant (the original's "accounting"): who may run what, under which policy."""

    mapping_id: str
    user_id: str
    user_name: str
    application_id: str
    image_name: str

    @classmethod
    def of(cls, grant: Grant) -> AdminGrantOut:
        return cls.model_construct(
            mapping_id=grant.mapping_id,
            user_id=str(grant.user.id),
            user_name=grant.user.name,
            application_id=str(grant.application.id),
            image_name=grant.application.image,
            **cls._policy_fields(grant.policy),
        )


class AdminGrantList(ItemList[AdminGrantOut]):
    """``admin/accounting/?filter=...``: one user's grants by ``mapping_id``."""


class AdminGrantFilter(_Request):
    """The ``filter`` query argument of ``admin/accounting/`` (JSON)."""

    user_id: RowId


class AdminGrantCreate(_Request):
    """``POST admin/accounting/``: let a user run an application under a policy.

    Name the application by ``image_name`` or ``application_id``; give the volume as
    ``volume`` (``SOURCE:TARGET:MODE``) or as ``volume_source``/``volume_target`` (both or
    neither; empty means none) with ``volume_mode`` (default ``ro``).
    """

    user_id: RowId
    image_name: _Name | None = None
    application_id: RowId | None = None
    app_license: Annotated[str, StringConstraints(max_length=4096)] | None = None
    allow_home: bool = False
    allow_view: bool = False
    allow_common: bool = False
    volume: _Path | None = Field(default=None, description="SOURCE:TARGET:MODE")
    volume_source: _Path | None = None
    volume_target: _Path | None = None
    volume_mode: Literal["ro", "rw"] | None = None
    allow_startup_data: bool = False

    @model_validator(mode="after")
    def _one_way_each(self) -> AdminGrantCreate:
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
        )


class AdminContainerOut(ContainerOut):
    """A session of any user."""

    user: str

    @classmethod
    def of(cls, session: Session, realm: str) -> AdminContainerOut:
        return cls.model_construct(**cls._container_fields(session, realm), user=session.user)


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
