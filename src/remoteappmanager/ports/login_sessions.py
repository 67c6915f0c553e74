"""Stored login sessions: what every replica of the service needs to recognise a browser.

A row never holds the session id the browser's cookie carries, nor the hub token in the
clear: it is found by a one-way ``key`` derived from the id, and the hub token is sealed with
another key derived from the id (``web.login_sessions``). Reading the table alone opens no
session and reveals no hub token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_LOGIN_SESSION_KEY_LENGTH = 64
MAX_SEALED_TOKEN_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class StoredLoginSession:
    """One signed-in browser; times are seconds since the epoch (shared by every replica)."""

    key: str
    user: str
    sealed_token: bytes
    created: float
    last_seen: float


class LoginSessionRecords(Protocol):
    """The login sessions of every replica, in the database. Each call is its own transaction.

    Ended sessions are kept (with the time they ended) until ``purge``, so that other
    replicas notice the end through ``ended_since``. Raises ``Unavailable`` when the database
    cannot be reached.
    """

    async def add(self, session: StoredLoginSession, *, keep_per_user: int) -> list[str]:
        """Store a new session; the user's sessions beyond ``keep_per_user`` (least recently
        used first) end. Returns the keys it ended."""
        ...

    async def get(self, key: str) -> StoredLoginSession | None:
        """The session with this key if it has not ended (expiry is the caller's to judge)."""
        ...

    async def touch(self, last_seen: Mapping[str, float]) -> None:
        """Record when sessions were last used (key -> time); unknown keys are ignored."""
        ...

    async def end(self, keys: Sequence[str], at: float) -> None:
        """End these sessions at ``at``; unknown or already ended keys are ignored."""
        ...

    async def end_user(self, user: str, at: float) -> list[str]:
        """End every live session of ``user``; returns their keys."""
        ...

    async def ended_since(self, since: float) -> list[str]:
        """Keys of the sessions that ended at ``since`` or later."""
        ...

    async def purge(self, *, ended_before: float, seen_before: float, created_before: float) -> int:
        """Forget sessions that ended before ``ended_before``, or were last used before
        ``seen_before``, or were created before ``created_before``; returns how many."""
        ...
