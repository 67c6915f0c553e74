"""Signed-in browsers: an in-memory store of hub tokens, keyed by an opaque session id."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A session unused this long ends; the next page visit goes through the hub again, silently
# while the hub's own login is still valid.
DEFAULT_IDLE_TIMEOUT = 8 * 3600.0
# No session outlives this, however busy.
DEFAULT_MAX_AGE = 24 * 3600.0
# About 0.5 KB each: the bound keeps the store under ~10 MB. Past it the least recently used
# session ends (its owner signs in again, usually without noticing).
DEFAULT_MAX_SESSIONS = 20_000


@dataclass(slots=True)
class LoginSession:
    id: str
    user: str
    hub_token: str
    created: float
    last_seen: float


class LoginSessionStore:
    """Sessions ordered by last use; expired ones are dropped as they are met.

    The hub token never leaves the server: the browser holds only the session id (in a signed
    cookie). Being in-process, sessions end when the service restarts; the browser then signs
    in again through the hub. Whatever ends a session (sign-out, the hub refusing its token,
    expiry, eviction) tells every ``on_end`` listener its id, at once.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_age: float = DEFAULT_MAX_AGE,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, LoginSession] = OrderedDict()
        self._listeners: list[Callable[[str], None]] = []

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(session_id)`` whenever a session ends (it must not raise)."""
        self._listeners.append(listener)

    def _ended(self, session_id: str) -> None:
        for listener in self._listeners:
            listener(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, hub_token: str) -> LoginSession:
        now = self._clock()
        self._drop_idle(now)
        session = LoginSession(
            id=secrets.token_urlsafe(32),
            user=user,
            hub_token=hub_token,
            created=now,
            last_seen=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max_sessions:
            self._ended(self._sessions.popitem(last=False)[0])
        return session

    def get(self, session_id: str) -> LoginSession | None:
        """The live session with this id (marking it used), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[session_id]
            self._ended(session_id)
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def delete(self, session_id: str) -> None:
        if self._sessions.pop(session_id, None) is not None:
            self._ended(session_id)

    def delete_user(self, user: str) -> int:
        """End every session of ``user``; returns how many there were."""
        doomed = [sid for sid, session in self._sessions.items() if session.user == user]
        for sid in doomed:
            del self._sessions[sid]
            self._ended(sid)
        return len(doomed)

    def _expired(self, session: LoginSession, now: float) -> bool:
        return now - session.last_seen > self.idle_timeout or now - session.created > self.max_age

    def _drop_idle(self, now: float) -> None:
        # The oldest-used sessions come first, so the idle ones form a prefix.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now):
                break
            del self._sessions[oldest.id]
            self._ended(oldest.id)
