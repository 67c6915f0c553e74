"""Sharing a running session: shares as resources, and who controls it right now.

Contract:
- ``list``, ``create`` and ``delete`` are for the session's owner and admins; to anyone else
  the session does not exist (``NotFound``, as someone else's container is). ``create``
  needs the session running, its grant's policy ``allow_view`` and the site's rules
  (``SharingRules``), else ``Forbidden`` saying which; a bad name is ``InvalidRequest``.
  Sharing with the same user, group or link again changes that share's mode. Each change is
  told to the ``ShareListener`` (audit) and to every ``on_change`` callback (the gate, which
  then cuts the connections a deleted share let in).
- ``end_all(url_id)`` removes every share of a session and its control state (the session
  stopped); ``Sessions.on_stopped`` calls it.
- ``check_may_search(actor, rules, grants_of)`` guards the directory of hub user and group names
  the share dialog suggests: ``Forbidden`` when sharing is off on the site, and for anyone
  but an admin or a user holding a grant (by name or through a hub group) whose policy
  allows sharing (``allow_view``), so that no other tenant can list who else uses the hub.
- ``mode_for(user, url_id)`` is how a signed-in user may enter someone else's session: the
  widest mode their shares give them, None when none does or the policy no longer allows
  viewing.
- Control: the owner and admins always have input. A viewer has input when the owner made
  everyone a controller, when control was handed to them, or — while nobody was handed
  control and the owner has not taken it — when their share's mode is ``control``. Viewers
  ask for control and give it back; the owner gives, refuses, takes it back, or lets
  everyone control (``control``). With ``SharingRules.control`` off no viewer ever has
  input. This state is kept in ``ControlStates`` (the database, shared by every replica;
  without one, this process's memory) and ends with the session. A change is written over
  the state it was made from, and made again from the newer one when another replica
  changed it first (``Unavailable`` if that keeps happening). ``input_allowed`` answers from
  the state this process last read or wrote; ``control_view`` and ``shares_of`` (which the
  gate calls whenever it looks a session up, and so every few seconds for each session
  with open connections) read it afresh.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from remoteappmanager.domain.audit import AuditAction
from remoteappmanager.domain.errors import Forbidden, InvalidRequest, NotFound, Unavailable
from remoteappmanager.domain.models import Grant
from remoteappmanager.domain.sessions import Session, SessionState
from remoteappmanager.domain.shares import (
    ControlState,
    Share,
    ShareKind,
    ShareMode,
    share_mode_for,
    validate_share_subject,
)
from remoteappmanager.ports.coordination import ControlStates
from remoteappmanager.ports.repositories import UnitOfWorkFactory
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.audit import Recorder
from remoteappmanager.services.sessions import Sessions

log = structlog.get_logger(__name__)

SYSTEM = "system"
# Requests for control waiting for the owner's answer, per session.
MAX_PENDING_REQUESTS = 100
# Tries of one change of control while other replicas keep changing it first.
CONTROL_WRITE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class SharingRules:
    """What the site allows: sharing at all, link shares, and any viewer input."""

    enabled: bool = True
    links: bool = True
    control: bool = True


async def check_may_search(
    actor: AuthenticatedUser,
    rules: SharingRules,
    grants_of: Callable[[], Awaitable[Sequence[Grant]]],
) -> None:
    """``Forbidden`` unless ``actor`` may search the directory of names to share with
    (see the module); ``grants_of`` reads the grants ``actor`` holds."""
    if not rules.enabled:
        raise Forbidden("sharing is turned off on this site")
    if actor.admin:
        return
    if not any(grant.policy.allow_view for grant in await grants_of()):
        log.info("share.directory_refused", user=actor.name)
        raise Forbidden("only users who may share an application can search for users and groups")


class ShareListener(Protocol):
    """Told of every share made and ended (the audit trail); must not raise."""

    async def shared(self, actor: str, owner: str, share: Share) -> None: ...

    async def unshared(self, actor: str, owner: str, share: Share) -> None: ...


class AuditedShares:
    """A ``ShareListener`` that leaves every share and unshare in the audit trail."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def shared(self, actor: str, owner: str, share: Share) -> None:
        self._recorder.record(actor, AuditAction.SHARE, share.url_id, _detail(owner, share))

    async def unshared(self, actor: str, owner: str, share: Share) -> None:
        self._recorder.record(actor, AuditAction.UNSHARE, share.url_id, _detail(owner, share))


def _detail(owner: str, share: Share) -> dict[str, object]:
    return {
        "owner": owner,
        "with": share.kind.value if share.kind is ShareKind.LINK else share.subject,
        "kind": share.kind.value,
        "mode": share.mode.value,
    }


class NoShareListener:
    async def shared(self, actor: str, owner: str, share: Share) -> None:
        return None

    async def unshared(self, actor: str, owner: str, share: Share) -> None:
        return None


class ControlAction(enum.StrEnum):
    REQUEST = "request"
    RELEASE = "release"
    GIVE = "give"
    REFUSE = "refuse"
    TAKE = "take"
    EVERYONE = "everyone"


@dataclass(frozen=True, slots=True)
class ControlView:
    """The control state as one caller sees it."""

    owner: str
    urlpath: str
    controller: str | None
    owner_holds: bool
    everyone: bool
    requests: tuple[str, ...]
    mode: ShareMode | None
    """The caller's share mode; None for the owner and admins."""
    input_allowed: bool


ChangeCallback = Callable[[str], None]


def has_input(state: ControlState, user: str, mode: ShareMode) -> bool:
    """Whether viewer ``user``, entering with ``mode``, has input under ``state`` (site rules
    aside)."""
    if state.everyone:
        return True
    if state.controller is not None:
        return state.controller == user
    return not state.owner_holds and mode is ShareMode.CONTROL


@dataclass(frozen=True, slots=True)
class _ControlChange:
    """One asked change of control, with what deciding it needs to know."""

    actor: str
    mode: ShareMode | None
    """The actor's share mode; None for the owner and admins."""
    action: ControlAction
    user: str | None
    owner: str
    named: bool
    """Whether ``user`` has a share of their own by name."""
    control_allowed: bool


# One branch per action of the hand-over (request, release, give, refuse, take, everyone),
# each with who may ask it: kept together so the rules read as one table.
def _next_control(state: ControlState, change: _ControlChange) -> ControlState:  # noqa: C901
    """The state after ``change`` (pure); ``Forbidden`` for an action that is not the
    actor's to take, ``InvalidRequest`` for a missing or unknown user."""
    action, user, requests = change.action, change.user, state.requests
    if change.mode is not None:  # a viewer
        if action is ControlAction.REQUEST:
            if not change.control_allowed:
                raise Forbidden("viewers may not control applications on this site")
            if has_input(state, change.actor, change.mode) or change.actor in requests:
                return state
            kept = requests[-(MAX_PENDING_REQUESTS - 1) :] if MAX_PENDING_REQUESTS > 1 else ()
            return replace(state, requests=(*kept, change.actor))
        if action is ControlAction.RELEASE:
            state = replace(state, requests=tuple(r for r in requests if r != change.actor))
            if state.controller == change.actor:
                state = replace(state, controller=None, owner_holds=True)
            return state
        raise Forbidden("only the owner of the application can do that")
    if action is ControlAction.GIVE:
        if not change.control_allowed:
            raise Forbidden("viewers may not control applications on this site")
        if not user:
            raise InvalidRequest("say whom to give control to")
        if user == change.owner:
            raise InvalidRequest("the owner always has control")
        if user not in requests and not change.named:
            raise InvalidRequest(f"{user!r} has not asked for control and has no share")
        return ControlState(controller=user, requests=tuple(r for r in requests if r != user))
    if action is ControlAction.REFUSE:
        if not user:
            raise InvalidRequest("say whose request to refuse")
        return replace(state, requests=tuple(r for r in requests if r != user))
    if action is ControlAction.TAKE:
        return ControlState(owner_holds=True, requests=requests)
    if action is ControlAction.RELEASE:
        return ControlState(requests=requests)
    if action is ControlAction.EVERYONE:
        if not change.control_allowed:
            raise Forbidden("viewers may not control applications on this site")
        return ControlState(everyone=True)
    raise Forbidden("only a viewer asks for control")


class Shares:
    """The sharing use cases (see the module's contract)."""

    def __init__(
        self,
        sessions: Sessions,
        uow_factory: UnitOfWorkFactory,
        *,
        controls: ControlStates,
        rules: SharingRules = SharingRules(),
        listener: ShareListener | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._uow_factory = uow_factory
        self.rules = rules
        self._listener: ShareListener = listener or NoShareListener()
        self._now = now
        self._changed: list[ChangeCallback] = []
        self._controls = controls
        # The control state last read or written, per session (default states are not kept).
        self._control: dict[str, ControlState] = {}
        sessions.on_stopped(self.end_all)

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(url_id)`` whenever a session's shares or control change."""
        self._changed.append(callback)

    def _notify(self, url_id: str) -> None:
        for callback in self._changed:
            callback(url_id)

    # ----------------------------------------------------------------- shares
    async def _owned(self, actor: AuthenticatedUser, url_id: str) -> Session:
        session = await self._sessions.get_any(url_id)
        if session.user != actor.name and not actor.admin:
            raise NotFound(f"there is no application {url_id} running")
        return session

    async def _allows_viewing(self, session: Session) -> bool:
        # The grant may be the user's own or one to a hub group they belong to.
        async with self._uow_factory() as uow:
            policies = await uow.grants.policies_of([session.mapping_id])
        policy = policies.get(session.mapping_id)
        return policy is not None and policy.allow_view

    async def list(self, actor: AuthenticatedUser, url_id: str) -> tuple[Session, list[Share]]:
        """The session and its shares, for its owner or an admin."""
        session = await self._owned(actor, url_id)
        async with self._uow_factory() as uow:
            return session, list(await uow.shares.list_for(url_id))

    async def create(
        self,
        actor: AuthenticatedUser,
        url_id: str,
        kind: ShareKind,
        subject: str,
        mode: ShareMode,
    ) -> Share:
        """Share the session (or change the mode of the share it has for ``subject``)."""
        subject = validate_share_subject(kind, subject)
        session = await self._owned(actor, url_id)
        if session.state is not SessionState.RUNNING:
            raise Forbidden("only a running application can be shared")
        if not self.rules.enabled:
            raise Forbidden("sharing is turned off on this site")
        if kind is ShareKind.LINK and not self.rules.links:
            raise Forbidden("link shares are turned off on this site")
        if mode is ShareMode.CONTROL and not self.rules.control:
            raise Forbidden("control shares are turned off on this site")
        if kind is ShareKind.USER and subject == session.user:
            raise InvalidRequest("the owner of an application needs no share of it")
        if not await self._allows_viewing(session):
            raise Forbidden("the policy of this application does not allow sharing it")
        async with self._uow_factory() as uow:
            share = await uow.shares.put(url_id, kind, subject, mode, self._now())
            await uow.commit()
        log.info(
            "share",
            actor=actor.name,
            owner=session.user,
            url_id=url_id,
            kind=kind.value,
            subject=subject,
            mode=mode.value,
        )
        self._notify(url_id)
        await self._listener.shared(actor.name, session.user, share)
        return share

    async def delete(self, actor: AuthenticatedUser, url_id: str, share_id: int) -> None:
        """End one share; ``NotFound`` if the session has none with this id."""
        session = await self._owned(actor, url_id)
        async with self._uow_factory() as uow:
            try:
                share = await uow.shares.get(share_id)
            except NotFound:
                share = None
            if share is None or share.url_id != url_id:
                raise NotFound(f"application {url_id} has no share {share_id}")
            await uow.shares.remove(share_id)
            await uow.commit()
        log.info("unshare", actor=actor.name, owner=session.user, url_id=url_id, share=share_id)
        if share.kind is ShareKind.USER:
            await self._change_control(url_id, lambda state: _without(state, share.subject))
        self._notify(url_id)
        await self._listener.unshared(actor.name, session.user, share)

    async def end_all(self, url_id: str) -> None:
        """The session stopped: every share of it ends."""
        async with self._uow_factory() as uow:
            shares = list(await uow.shares.list_for(url_id))
            await uow.shares.remove_all(url_id)
            await uow.commit()
        await self._controls.remove(url_id)
        self._control.pop(url_id, None)
        self._notify(url_id)
        for share in shares:
            await self._listener.unshared(SYSTEM, SYSTEM, share)

    async def shares_of(self, url_id: str) -> Sequence[Share]:
        """The session's shares as stored, its control state read afresh along with them
        (no access check: for the gate)."""
        async with self._uow_factory() as uow:
            shares = list(await uow.shares.list_for(url_id))
        await self._read_control(url_id)
        return shares

    async def mode_for(self, user: AuthenticatedUser, url_id: str) -> ShareMode | None:
        """How ``user`` may enter someone else's session ``url_id`` (None: not at all)."""
        if not self.rules.enabled:
            return None
        session = await self._sessions.get_any(url_id)
        if session.user == user.name or not await self._allows_viewing(session):
            return None
        return self.effective_mode(await self.shares_of(url_id), user.name, user.groups)

    def effective_mode(
        self, shares: Sequence[Share], user: str, groups: frozenset[str]
    ) -> ShareMode | None:
        """The mode ``shares`` give ``user`` under the site's rules (pure)."""
        if not self.rules.enabled:
            return None
        usable = [s for s in shares if s.kind is not ShareKind.LINK or self.rules.links]
        return share_mode_for(usable, user, groups)

    # ----------------------------------------------------------------- control
    def input_allowed(self, url_id: str, user: str, mode: ShareMode) -> bool:
        """Whether viewer ``user`` (entering with ``mode``) has input now, by the control
        state last read or written here (no I/O)."""
        if not self.rules.control:
            return False
        return has_input(self._control.get(url_id, _NO_CONTROL), user, mode)

    async def control_view(self, actor: AuthenticatedUser, url_id: str) -> ControlView:
        """The control state for the owner, an admin or a viewer (else ``NotFound``)."""
        session, mode = await self._participant(actor, url_id)
        _version, state = await self._read_control(url_id)
        return self._view(actor, session, mode, state)

    def _view(
        self,
        actor: AuthenticatedUser,
        session: Session,
        mode: ShareMode | None,
        state: ControlState,
    ) -> ControlView:
        return ControlView(
            owner=session.user,
            urlpath=session.urlpath,
            controller=state.controller,
            owner_holds=state.owner_holds,
            everyone=state.everyone,
            requests=state.requests if mode is None else (),
            mode=mode,
            input_allowed=mode is None
            or (self.rules.control and has_input(state, actor.name, mode)),
        )

    async def control(
        self,
        actor: AuthenticatedUser,
        url_id: str,
        action: ControlAction,
        user: str | None = None,
    ) -> ControlView:
        """Change who controls the session (see the module); ``Forbidden`` for an action
        that is not the caller's to take, ``InvalidRequest`` for a missing or unknown user."""
        session, mode = await self._participant(actor, url_id)
        named = (
            mode is None
            and action is ControlAction.GIVE
            and bool(user)
            and await self._named(url_id, user or "")
        )
        change = _ControlChange(
            actor=actor.name,
            mode=mode,
            action=action,
            user=user,
            owner=session.user,
            named=named,
            control_allowed=self.rules.control,
        )
        state = await self._change_control(url_id, lambda current: _next_control(current, change))
        log.info("share.control", actor=actor.name, url_id=url_id, action=action.value, user=user)
        self._notify(url_id)
        return self._view(actor, session, mode, state)

    async def _read_control(self, url_id: str) -> tuple[int, ControlState]:
        found = await self._controls.get(url_id)
        version, state = found if found is not None else (0, _NO_CONTROL)
        self._keep(url_id, state)
        return version, state

    def _keep(self, url_id: str, state: ControlState) -> None:
        if state == _NO_CONTROL:
            self._control.pop(url_id, None)
        else:
            self._control[url_id] = state

    async def _change_control(
        self, url_id: str, change: Callable[[ControlState], ControlState]
    ) -> ControlState:
        """Apply ``change`` to the stored state, again from the newer one when another
        replica wrote first."""
        for _attempt in range(CONTROL_WRITE_ATTEMPTS):
            version, state = await self._read_control(url_id)
            changed = change(state)
            if changed == state:
                return state
            if await self._controls.put(url_id, changed, version=version):
                self._keep(url_id, changed)
                return changed
        raise Unavailable("who controls this application keeps changing; try again")

    async def _participant(
        self, actor: AuthenticatedUser, url_id: str
    ) -> tuple[Session, ShareMode | None]:
        session = await self._sessions.get_any(url_id)
        if session.user == actor.name:
            return session, None
        mode = await self.mode_for(actor, url_id)
        if mode is not None:
            return session, mode
        if actor.admin:
            return session, None
        raise NotFound(f"there is no application {url_id} running")

    async def _named(self, url_id: str, user: str) -> bool:
        return any(
            share.kind is ShareKind.USER and share.subject == user
            for share in await self.shares_of(url_id)
        )


_NO_CONTROL = ControlState()


def _without(state: ControlState, user: str) -> ControlState:
    """``state`` once ``user``'s own share ended: their request and control go."""
    state = replace(state, requests=tuple(r for r in state.requests if r != user))
    if state.controller == user:
        state = replace(state, controller=None)
    return state
