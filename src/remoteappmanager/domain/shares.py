"""Shares of a running session: who else may see it, and whether their input gets through."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.models import MAX_NAME_LENGTH


class ShareMode(enum.StrEnum):
    """``view``: the viewer's keyboard, mouse and clipboard never reach the application;
    ``control``: they do."""

    VIEW = "view"
    CONTROL = "control"


class ShareKind(enum.StrEnum):
    """Whom a share names: one hub user, the members of a hub group, or anyone signed in
    who holds the session's address."""

    USER = "user"
    GROUP = "group"
    LINK = "link"


@dataclass(frozen=True, slots=True)
class Share:
    """Session ``url_id`` shared with ``subject`` (a user or group name; empty for a link)."""

    id: int
    url_id: str
    kind: ShareKind
    subject: str
    mode: ShareMode
    created_at: datetime

    def names(self, user: str, groups: Iterable[str]) -> bool:
        """Whether this share lets ``user`` (a member of ``groups``) in."""
        if self.kind is ShareKind.LINK:
            return True
        if self.kind is ShareKind.USER:
            return self.subject == user
        return self.subject in frozenset(groups)


@dataclass(frozen=True, slots=True)
class ControlState:
    """Who controls a shared session besides its owner: the viewer control was handed to,
    whether the owner took it back, whether everyone may control, and the viewers who asked
    for it (oldest first)."""

    controller: str | None = None
    owner_holds: bool = False
    everyone: bool = False
    requests: tuple[str, ...] = ()


def share_mode_for(shares: Iterable[Share], user: str, groups: Iterable[str]) -> ShareMode | None:
    """The widest mode the shares give ``user`` (None: no share names them)."""
    member_of = frozenset(groups)
    best: ShareMode | None = None
    for share in shares:
        if share.names(user, member_of):
            if share.mode is ShareMode.CONTROL:
                return ShareMode.CONTROL
            best = ShareMode.VIEW
    return best


def validate_share_subject(kind: ShareKind, subject: str) -> str:
    """A user or group name as JupyterHub allows it (non-empty, printable, no slash,
    bounded); the empty string for a link share. ``InvalidRequest`` otherwise."""
    if kind is ShareKind.LINK:
        if subject:
            raise InvalidRequest("a link share names nobody")
        return ""
    what = "user" if kind is ShareKind.USER else "group"
    if not isinstance(subject, str) or not subject or subject != subject.strip():
        raise InvalidRequest(f"the {what} name must be non-empty and without surrounding spaces")
    if len(subject) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"the {what} name is longer than {MAX_NAME_LENGTH} characters")
    if "/" in subject or not subject.isprintable():
        raise InvalidRequest(f"the {what} name contains '/' or unprintable characters")
    return subject
