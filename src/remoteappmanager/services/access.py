"""Who is signed in and what they may do: admin decisions and provisioning at sign-in.

Contract:
- ``identify(hub_user)`` first checks that the token the user model came with may be used
  here: its scopes must grant one of the service's access scopes (``access_scopes``, from
  ``JUPYTERHUB_OAUTH_ACCESS_SCOPES``; see ``grants_access``), else ``Forbidden``. It then
  decides admin from the hub's user model alone (``admin: true`` or membership of the
  configured admin group). It is called on every request with the user model the identity
  provider just gave (cached at most for the provider's TTL), so an admin flag taken away in
  the hub is gone within that TTL.
- ``sign_in(hub_user)`` runs once per browser sign-in (``Forbidden`` as ``identify``, before
  anything is provisioned): with ``auto_user_creation`` a hub user
  unknown to the catalogue is created; a user in the catalogue (found or just created) then
  holds every ``demo_applications`` grant (the application is registered if it is not yet).
  Both steps are idempotent, so concurrent first sign-ins of one user are harmless. Raises
  ``Unavailable`` when the database cannot be reached. A sign-in is recorded in the audit
  trail (``login``), and so is a user created by it (``user_create``).
- Demo policies are checked when the service is built (``InvalidRequest`` naming the image).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from remoteappmanager.domain.audit import AuditAction
from remoteappmanager.domain.errors import Exists, Forbidden, InvalidRequest, NotFound
from remoteappmanager.domain.models import (
    Policy,
    Volume,
    validate_image_name,
    validate_placement,
    validate_user_name,
)
from remoteappmanager.ports.identity import HubUser
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.audit import DISCARD, Recorder

log = structlog.get_logger(__name__)

# A first sign-in racing another one for the same user loses at commit (``Exists``); one more
# attempt then finds what the other created.
_PROVISION_ATTEMPTS = 2
_BOOL_POLICY_KEYS = ("allow_home", "allow_view", "allow_common", "allow_startup_data")
DEFAULT_ACCESS_SCOPES = frozenset({"access:services!service=remoteapp"})


def grants_access(held: Iterable[str], required: Iterable[str]) -> bool:
    """Does a token holding the (hub-expanded) scopes ``held`` satisfy any of ``required``?

    As JupyterHub's ``HubAuth`` decides: one required scope suffices, and a scope held without
    a filter (``access:services``) covers every filtered form of it
    (``access:services!service=remoteapp``). The hub answers with scopes already expanded
    (roles and ``inherit`` resolved), so no expansion happens here; this is the part of
    ``jupyterhub.scopes`` the service needs, without depending on the hub's package.
    """
    have = frozenset(held)
    for scope in required:
        base = scope.partition("!")[0]
        if scope in have or base in have:
            return True
    return False


def access_scope_message(required: Iterable[str]) -> str:
    wanted = " or ".join(sorted(required))
    return f"this JupyterHub token does not grant access to this service (it needs {wanted})"


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """A signed-in hub user as the rest of the service sees them, for one request."""

    name: str
    admin: bool
    groups: frozenset[str] = frozenset()


def demo_policy(image: str, overrides: Mapping[str, Any]) -> Policy:
    """The policy of one ``demo_applications`` entry; unknown or mistyped options are refused."""
    where = f"demo_applications[{image!r}]"
    if not isinstance(overrides, Mapping):
        raise InvalidRequest(f"{where} must be a table of policy options")
    flags: dict[str, bool] = {}
    app_license: str | None = None
    volume: Volume | None = None
    placement: tuple[str, ...] = ()
    for key, value in overrides.items():
        if key in _BOOL_POLICY_KEYS:
            if not isinstance(value, bool):
                raise InvalidRequest(f"{where}.{key} must be true or false")
            flags[key] = value
        elif key == "app_license":
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{where}.app_license must be a string")
            app_license = value or None
        elif key == "volume":
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{where}.volume must be SOURCE:TARGET:MODE")
            try:
                volume = Volume.parse(value) if value else None
            except InvalidRequest as exc:
                raise InvalidRequest(f"{where}: {exc.message}") from None
        elif key == "placement":
            if not isinstance(value, list):
                raise InvalidRequest(f"{where}.placement must be a list of constraints")
            try:
                placement = validate_placement(value)
            except InvalidRequest as exc:
                raise InvalidRequest(f"{where}: {exc.message}") from None
        else:
            raise InvalidRequest(f"{where} has an unknown policy option {key!r}")
    return Policy(
        app_license=app_license,
        volume=volume,
        allow_home=flags.get("allow_home", False),
        allow_view=flags.get("allow_view", False),
        allow_common=flags.get("allow_common", False),
        allow_startup_data=flags.get("allow_startup_data", False),
        placement=placement,
    )


class AccessService:
    """Admin decisions and sign-in provisioning (see the module contract)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        admin_group: str | None = None,
        auto_user_creation: bool = False,
        demo_applications: Mapping[str, Mapping[str, Any]] | None = None,
        access_scopes: Iterable[str] = DEFAULT_ACCESS_SCOPES,
        audit: Recorder = DISCARD,
    ) -> None:
        self._audit = audit
        self._access_scopes = frozenset(access_scopes)
        if not self._access_scopes:
            raise InvalidRequest("at least one access scope is needed")
        self._uow_factory = uow_factory
        self._admin_group = admin_group or None
        self._auto_user_creation = auto_user_creation
        self._demo: dict[str, Policy] = {
            validate_image_name(image): demo_policy(image, overrides)
            for image, overrides in (demo_applications or {}).items()
        }

    @property
    def access_scopes(self) -> frozenset[str]:
        return self._access_scopes

    def check_scopes(self, hub_user: HubUser) -> None:
        """``Forbidden`` unless the token behind ``hub_user`` grants access to this service."""
        if not grants_access(hub_user.scopes, self._access_scopes):
            log.info("token_scope_refused", user=hub_user.name)
            raise Forbidden(access_scope_message(self._access_scopes))

    def identify(self, hub_user: HubUser) -> AuthenticatedUser:
        self.check_scopes(hub_user)
        admin = hub_user.admin or (
            self._admin_group is not None and self._admin_group in hub_user.groups
        )
        return AuthenticatedUser(name=hub_user.name, admin=admin, groups=hub_user.groups)

    async def sign_in(self, hub_user: HubUser) -> AuthenticatedUser:
        self.check_scopes(hub_user)
        if self._auto_user_creation or self._demo:
            for attempt in range(1, _PROVISION_ATTEMPTS + 1):
                try:
                    created = await self._provision(hub_user.name)
                    if created is not None:
                        self._audit.record(
                            hub_user.name,
                            AuditAction.USER_CREATE,
                            hub_user.name,
                            {"user_id": created, "auto_user_creation": True},
                        )
                    break
                except Exists:
                    if attempt == _PROVISION_ATTEMPTS:
                        raise
        identified = self.identify(hub_user)
        self._audit.record(
            hub_user.name, AuditAction.LOGIN, hub_user.name, {"admin": identified.admin}
        )
        return identified

    async def _provision(self, name: str) -> int | None:
        """Returns the id of the user if this sign-in created them."""
        created: int | None = None
        async with self._uow_factory() as uow:
            try:
                user = await uow.users.get_by_name(name)
            except NotFound:
                if not self._auto_user_creation:
                    return None
                user = await uow.users.add(validate_user_name(name))
                created = user.id
                log.info("user_created_at_sign_in", user=name)
            for image, policy in self._demo.items():
                try:
                    application = await uow.applications.get_by_image(image)
                except NotFound:
                    application = await uow.applications.add(image)
                    log.info("demo_application_registered", image=image)
                await uow.grants.grant(user, application, policy)
            await uow.commit()
        return created
