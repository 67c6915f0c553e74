"""The REST API's wire models (pydantic): what requests may carry and what answers look like."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from remoteappmanager.domain.labels import ImageMetadata
from remoteappmanager.domain.models import Policy
from remoteappmanager.domain.naming import container_name
from remoteappmanager.domain.sessions import Session
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
        return cls.model_construct(
            url_id=session.url_id,
            name=container_name(realm, session.user, session.mapping_id),
            image_name=session.image,
            docker_id=session.container_id,
            mapping_id=session.mapping_id,
            urlpath=session.urlpath,
            state=session.state.value,
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


class PolicyOut(_Answer):
    app_license: str | None
    allow_home: bool
    allow_view: bool
    allow_common: bool
    volume_source: str | None
    volume_target: str | None
    volume_mode: Literal["ro", "rw"] | None
    allow_startup_data: bool

    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        volume = policy.volume
        return cls.model_construct(
            app_license=policy.app_license,
            allow_home=policy.allow_home,
            allow_view=policy.allow_view,
            allow_common=policy.allow_common,
            volume_source=volume.source if volume else None,
            volume_target=volume.target if volume else None,
            volume_mode=volume.mode.value if volume else None,
            allow_startup_data=policy.allow_startup_data,
        )


class ApplicationOut(_Answer):
    """One of my grants: the image, the policy, and the running container if any."""

    mapping_id: str
    available: bool = Field(description="False when the image is no longer on the engine.")
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
            image=ImageOut.of(
                grant.application.image, application.image, application.configurables
            ),
            policy=PolicyOut.of(grant.policy),
            container=ContainerOut.of(session, realm) if session is not None else None,
        )


class ApplicationList(ItemList[ApplicationOut]):
    """``applications/``: my grants by ``mapping_id``."""
