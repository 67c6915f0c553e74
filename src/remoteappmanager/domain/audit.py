"""The audit trail's values: who did what to what, when, and which details may be kept.

An event's ``detail`` is a small JSON object of plain values. It never holds a secret: keys
that name one (a licence, a token, a password, an environment) are dropped when the event is
made, whatever the caller passed, so that no code path can write one by mistake.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.sessions import StopReason

__all__ = ["StopReason"]  # why a session stopped, as the audit trail records it

MAX_ACTOR_LENGTH = 255
MAX_TARGET_LENGTH = 512
MAX_DETAIL_VALUE_LENGTH = 512
MAX_DETAIL_KEYS = 16
SYSTEM_ACTOR = "system"
CLI_ACTOR = "cli"

# Substrings of detail keys that may name a secret; such keys are never recorded.
_SECRET_KEY_RE = re.compile(
    r"licen[cs]e|token|secret|passw|credential|cookie|env|key|authori", re.IGNORECASE
)

DetailValue = str | int | float | bool | None


class AuditAction(enum.StrEnum):
    LOGIN = "login"
    START = "start"
    STOP = "stop"
    CULL = "cull"
    GRANT = "grant"
    REVOKE = "revoke"
    APP_CREATE = "app_create"
    APP_DELETE = "app_delete"
    USER_CREATE = "user_create"
    USER_DELETE = "user_delete"
    ENTER = "enter"
    SHARE = "share"
    UNSHARE = "unshare"


def safe_detail(detail: Mapping[str, object] | None) -> dict[str, DetailValue]:
    """What of ``detail`` may be recorded: plain values under keys that name no secret,
    strings shortened, at most ``MAX_DETAIL_KEYS`` keys."""
    kept: dict[str, DetailValue] = {}
    for key, value in (detail or {}).items():
        if len(kept) >= MAX_DETAIL_KEYS:
            break
        if not isinstance(key, str) or _SECRET_KEY_RE.search(key):
            continue
        if isinstance(value, str):
            kept[key] = value[:MAX_DETAIL_VALUE_LENGTH]
        elif value is None or isinstance(value, bool | int | float):
            kept[key] = value
    return kept


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be recorded (the store gives it an id)."""

    time: datetime
    actor: str
    action: AuditAction
    target: str
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        time: datetime,
        actor: str,
        action: AuditAction | str,
        target: str,
        detail: Mapping[str, object] | None = None,
    ) -> NewEvent:
        """A checked event: a known action, bounded texts, a detail without secrets.
        ``InvalidRequest`` for an unknown action."""
        try:
            checked = AuditAction(action)
        except ValueError:
            raise InvalidRequest(f"unknown audit action {action!r}") from None
        if time.tzinfo is None:
            raise InvalidRequest("an event's time must carry its time zone")
        return cls(
            time=time,
            actor=(actor or SYSTEM_ACTOR)[:MAX_ACTOR_LENGTH],
            action=checked,
            target=target[:MAX_TARGET_LENGTH],
            detail=safe_detail(detail),
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A recorded event."""

    id: int
    time: datetime
    actor: str
    action: AuditAction
    target: str
    detail: Mapping[str, DetailValue]


# How far past a page the events matching a listing are counted. Counting every match of a
# million-event trail costs most of a listing's time; a pager needs to know only whether there is
# more, and a person reading "at least 10,100" learns what a full count would tell them.
COUNT_AHEAD = 10_000


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to list: every condition given must hold; newest first, then paged.

    Matches are counted up to ``count_ahead`` events past the end of the page, no further.
    """

    actor: str | None = None
    action: AuditAction | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0
    count_ahead: int = COUNT_AHEAD

    @property
    def count_bound(self) -> int:
        """The most matches a listing counts exactly; one more means "at least that many"."""
        return self.offset + self.limit + self.count_ahead


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a listing and how many events match: exactly ``total`` when
    ``total_exact``, otherwise at least ``total`` (counting stopped there)."""

    total: int
    events: tuple[AuditEvent, ...]
    total_exact: bool = True

    @classmethod
    def counted(cls, query: EventQuery, counted: int, events: tuple[AuditEvent, ...]) -> EventPage:
        """The page for ``counted`` matches, counted up to one past ``query.count_bound``."""
        if counted > query.count_bound:
            return cls(total=query.count_bound + 1, events=events, total_exact=False)
        return cls(total=counted, events=events)
