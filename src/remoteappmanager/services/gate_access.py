"""Who may reach a running application through the gate, and where it answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.audit import AuditAction
from remoteappmanager.domain.errors import NotFound, Unavailable
from remoteappmanager.domain.sessions import SessionState
from remoteappmanager.domain.shares import Share, ShareMode
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.applications import CatalogueWatch
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.services.shares import Shares

log = structlog.get_logger(__name__)

# Changes made through ``Sessions`` (start, stop, reconciler repairs) are seen at once; a
# container that dies or is removed behind the service's back is noticed within this time
# (or at once, when the gate reports that it stopped answering).
DEFAULT_TARGET_TTL = 10.0
# An admin flag or hub session taken away ends access within this time (plus the identity
# provider's own cache).
DEFAULT_DECISION_TTL = 5.0
# Bounds on the caches; past them the least recently used entries go.
MAX_TARGETS = 10_000
MAX_DECISIONS = 50_000
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound

Protocol = Literal["vnc", "web"]
ImageType = Callable[[str], Awaitable[str | None]]
"""An image's declared type (``vncapp``, ``webapp``), None when it cannot be read."""


@dataclass(frozen=True, slots=True)
class GateTarget:
    """A running application as the gate needs it.

    ``host`` and ``port`` are where the engine published the application's port
    (``127.0.0.1`` for a wildcard address), never a container network address.
    """

    url_id: str
    owner: str
    urlpath: str
    host: str
    port: int
    allow_view: bool
    shares: tuple[Share, ...] = ()
    protocol: Protocol = "web"
    """How a viewer's input is told apart: RFB messages (``vnc``), or any request that is
    not a read and any WebSocket data (``web``, also for an image whose type is unknown)."""
    source_group: str | None = None
    """The hub group whose grant the session was started through (its owner keeps it only
    while in the group); None for a grant to the owner by name."""


@dataclass(frozen=True, slots=True)
class _Looked:
    """A looked-up target, read when ``Sessions.generation`` was ``generation``."""

    generation: int
    target: GateTarget
    keep: bool
    """False when the catalogue could not be read: answered once, never served again."""


class GateAccess:
    """Access decisions for the gate, cheap enough for every proxied request.

    Contract:
    - ``target(url_id)`` is the running session ``url_id`` with its grant's ``allow_view``,
      its shares (when the policy allows them) and its protocol;
      ``NotFound`` when nothing runs there (or it has no published port yet), ``Unavailable``
      when the engine cannot be asked (never cached). A database that cannot be read gives
      the target with ``allow_view`` false, not kept: owners and admins keep using their
      applications while it is down, and nobody else gets in. Answers are kept until
      the service changes the owner's sessions (``Sessions.generation_of``: another user's
      start or stop leaves them be) or ``target_ttl`` passes; concurrent misses for one
      url id share one lookup. ``cached_target`` is the same without I/O (None on a miss).
    - ``forget(url_id)`` drops a cached target (its application stopped answering).
    - ``may_enter(user, target)``: the owner, an admin, or — when the grant's policy has
      ``allow_view`` — a user whom one of the session's shares names (``viewing_mode``: how).
      ``admits(user, target, confirmed=)``: whether the gate lets them in now (the admin flag
      alone only for a confirmed entry); ``mode_of``: as which viewer (None for the owner and
      a confirmed admin); ``still_admits``: whether a connection held open may stay;
      ``input_allowed``: whether a viewer's input gets through. Pure.
    - ``decision(principal, url_id)`` / ``remember(principal, url_id, allowed, mode)``: a
      decision (and the viewer's mode, None for the owner and admins) kept for
      ``decision_ttl`` seconds, ``principal`` being a login session id; ``forget_url``
      drops every decision about one session (its shares changed).
    - A change of the catalogue (a grant revoked, a policy's ``allow_view`` changed, by this
      process or any other) drops every cached target and decision: when a comparison is due
      (at most once per ``watch`` interval) a lookup asks for one in the background, so no
      request waits for the database. A database that cannot be read counts as no change,
      so cached answers keep serving the running applications while it is down.
    """

    def __init__(
        self,
        sessions: Sessions,
        uow_factory: UnitOfWorkFactory,
        *,
        shares: Shares | None = None,
        image_type: ImageType | None = None,
        target_ttl: float = DEFAULT_TARGET_TTL,
        decision_ttl: float = DEFAULT_DECISION_TTL,
        clock: Callable[[], float] = time.monotonic,
        watch: CatalogueWatch | None = None,
    ) -> None:
        self._sessions = sessions
        self._watch = watch or CatalogueWatch(uow_factory, clock=clock)
        self._uow_factory = uow_factory
        self.shares = shares
        self._image_type = image_type
        # A change of the catalogue clears both; clearing also drops the lookups under way,
        # so that one that overlapped the change is answered to its callers but not kept.
        self._targets: TtlCache[str, _Looked] = TtlCache(
            ttl=target_ttl,
            maxsize=MAX_TARGETS,
            clock=clock,
            ttl_of=lambda looked: target_ttl if looked.keep else 0.0,
        )
        # (principal, url_id) -> (allowed, viewer's mode)
        self._decisions: TtlCache[tuple[str, str], tuple[bool, ShareMode | None]] = TtlCache(
            ttl=decision_ttl, maxsize=MAX_DECISIONS, clock=clock
        )
        self._comparison: asyncio.Future[bool] | None = None

    # ----------------------------------------------------------------- targets
    def cached_target(self, url_id: str) -> GateTarget | None:
        self._compare_catalogue()
        looked = self._targets.peek(url_id)
        if looked is None:
            return None
        # Read before a change of the owner's sessions: it may not show it.
        if looked.generation < self._sessions.generation_of(looked.target.owner):
            self._targets.discard(url_id)
            return None
        return looked.target

    def _compare_catalogue(self) -> None:
        if self._comparison is not None or not self._watch.due():
            return
        comparison = asyncio.ensure_future(self._watch.changed())
        self._comparison = comparison
        comparison.add_done_callback(self._compared)

    def _compared(self, comparison: asyncio.Future[bool]) -> None:
        self._comparison = None
        if comparison.cancelled() or comparison.exception() is not None:
            return
        if comparison.result():
            log.info("gate.catalogue_changed", targets=len(self._targets))
            self._targets.clear()
            self._decisions.clear()

    async def close(self) -> None:
        """Cancel a catalogue comparison and the lookups under way."""
        if self._comparison is not None:
            self._comparison.cancel()
        await self._targets.close()

    async def target(self, url_id: str) -> GateTarget:
        cached = self.cached_target(url_id)
        if cached is not None:
            return cached
        looked = await self._targets.get(url_id, lambda: self._look_up(url_id))
        return looked.target

    async def _look_up(self, url_id: str) -> _Looked:
        generation = self._sessions.generation
        session = await self._sessions.get_any(url_id)
        if session.state is not SessionState.RUNNING or session.host_port is None:
            raise NotFound(f"there is no application {url_id} running")
        allow_view = False
        source_group: str | None = None
        catalogue_read = True
        try:
            async with self._uow_factory() as uow:
                try:
                    grant = await uow.grants.get(session.mapping_id)
                except NotFound:
                    grant = None  # revoked since the start: only its owner and admins get in
                    try:
                        group_grant = await uow.grants.get_group(session.mapping_id)
                        source_group = group_grant.group
                        allow_view = group_grant.policy.allow_view
                    except NotFound:
                        pass
        except Unavailable as exc:
            # The application runs and its owner may still use it; whether others may is
            # unknown until the catalogue can be read again: not kept, and nobody else enters.
            log.warning("gate.catalogue_unreadable", url_id=url_id, error=exc.message)
            grant, catalogue_read = None, False
        if grant is not None:
            allow_view = grant.policy.allow_view
        shares: tuple[Share, ...] = ()
        if allow_view and self.shares is not None:
            shares = tuple(await self.shares.shares_of(url_id))
        protocol: Protocol = "web"
        if self._image_type is not None and await self._image_type(session.image) == "vncapp":
            protocol = "vnc"
        host = session.host_ip or ""
        if host in _WILDCARD_HOSTS:
            host = "127.0.0.1"
        target = GateTarget(
            url_id=session.url_id,
            owner=session.user,
            urlpath=session.urlpath,
            host=host,
            port=session.host_port,
            allow_view=allow_view,
            shares=shares,
            protocol=protocol,
            source_group=source_group,
        )
        return _Looked(generation, target, keep=catalogue_read)

    def forget(self, url_id: str) -> None:
        self._targets.discard(url_id)

    # ----------------------------------------------------------------- decisions
    def viewing_mode(self, user: AuthenticatedUser, target: GateTarget) -> ShareMode | None:
        """How a share lets ``user`` into someone else's application (None: no share does)."""
        if user.name == target.owner or not target.allow_view or self.shares is None:
            return None
        return self.shares.effective_mode(target.shares, user.name, user.groups)

    def may_enter(self, user: AuthenticatedUser, target: GateTarget) -> bool:
        if self.left_group(user, target):
            return user.admin
        return (
            user.name == target.owner or user.admin or self.viewing_mode(user, target) is not None
        )

    @staticmethod
    def left_group(user: AuthenticatedUser, target: GateTarget) -> bool:
        """Whether ``user`` owns ``target`` through a grant to a hub group they are not in."""
        return (
            user.name == target.owner
            and target.source_group is not None
            and target.source_group not in user.groups
        )

    async def stop_left_group(self, user: AuthenticatedUser) -> None:
        """Stop ``user``'s sessions of group grants whose group they left (``Sessions``)."""
        try:
            await self._sessions.stop_outside_groups(user.name, user.groups)
        except Unavailable as exc:
            log.warning("gate.group_stop_failed", user=user.name, error=exc.message)

    def enters_as_admin(self, user: AuthenticatedUser, target: GateTarget) -> bool:
        """Whether only the admin flag lets ``user`` in: someone else's, unshared application."""
        return user.admin and user.name != target.owner and self.viewing_mode(user, target) is None

    def mode_of(
        self, user: AuthenticatedUser, target: GateTarget, *, confirmed: bool
    ) -> ShareMode | None:
        """The mode ``user`` views ``target`` in: their share's; None for the owner, for an
        admin's confirmed entry, and for whoever no share names."""
        if confirmed and user.admin:
            return None
        return self.viewing_mode(user, target)

    def admits(self, user: AuthenticatedUser, target: GateTarget, *, confirmed: bool) -> bool:
        """Whether the gate lets ``user`` into ``target`` now.

        ``may_enter``, and the admin flag alone opens someone else's unshared application
        only to a confirmed entry (``confirmed``: a browser's gate cookie from the entry
        page's confirmation); a token is never confirmed.
        """
        return self.may_enter(user, target) and (
            confirmed or not self.enters_as_admin(user, target)
        )

    def still_admits(
        self, user: AuthenticatedUser, target: GateTarget, *, was_viewer: bool
    ) -> bool:
        """Whether a connection ``user`` holds open to ``target`` may stay open.

        ``may_enter``, except for an admin who came in as a viewer (``was_viewer``) through a
        share that has since ended: the admin flag alone counts only for a confirmed entry,
        which that was not.
        """
        if not self.may_enter(user, target):
            return False
        ended_share = was_viewer and self.mode_of(user, target, confirmed=False) is None
        return not (ended_share and self.enters_as_admin(user, target))

    def input_allowed(self, url_id: str, user: str, mode: ShareMode) -> bool:
        """Whether a viewer's input (keyboard, mouse, anything but reading) gets through:
        their mode lets it and, for a shared control, they hold it (``Shares``)."""
        return self.shares is not None and self.shares.input_allowed(url_id, user, mode)

    async def record_entry(self, actor: AuthenticatedUser, target: GateTarget) -> None:
        """An admin confirmed entering someone else's application; the one place that says so.

        Logged, and recorded in the audit trail, as the event ``enter`` (actor, owner, url_id).
        """
        log.info("enter", actor=actor.name, owner=target.owner, url_id=target.url_id)
        self._sessions.audit.record(
            actor.name, AuditAction.ENTER, target.url_id, {"owner": target.owner}
        )

    def decision(self, principal: str, url_id: str) -> bool | None:
        """The kept decision for this login session and application (None: decide again)."""
        kept = self._decisions.peek((principal, url_id))
        return None if kept is None else kept[0]

    def decided_mode(self, principal: str, url_id: str) -> ShareMode | None:
        """The viewer's mode kept with an allowing ``decision`` (None: owner or admin)."""
        kept = self._decisions.peek((principal, url_id))
        return None if kept is None else kept[1]

    def remember(
        self, principal: str, url_id: str, allowed: bool, mode: ShareMode | None = None
    ) -> None:
        self._decisions.put((principal, url_id), (allowed, mode))

    def forget_url(self, url_id: str) -> None:
        """Drop the cached target and every decision about session ``url_id``."""
        self.forget(url_id)
        self._decisions.discard_keys(lambda key: key[1] == url_id)

    def forget_principal(self, principal: str) -> None:
        """Drop every decision of a login session (it ended)."""
        self._decisions.discard_keys(lambda key: key[0] == principal)
