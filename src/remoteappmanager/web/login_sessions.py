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
# About 0.5 KB each: the bound keeps the store under ~10 MB. Past it a session ends (see
# ``LoginSessionStore``); its owner signs in again, usually without noticing.
DEFAULT_MAX_SESSIONS = 20_000
# Browsers and devices one user is signed in with at once; a new sign-in beyond it ends that
# user's least recently used session.
DEFAULT_MAX_SESSIONS_PER_USER = 20


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
    in again through the hub.

    Bounds, so that no one can sign everybody else out by signing in over and over:

    - one user holds at most ``max_sessions_per_user``; a sign-in beyond it ends the least
      recently used session *of that user*;
    - the store holds at most ``max_sessions``. When it is full, a user who already has a
      session pays with their own least recently used one; only a user's first session ends
      the least recently used session of the whole store. Pushing other users out therefore
      takes as many distinct hub accounts as sessions to end, and an idle session goes first.

    Whatever ends a session (sign-out, the hub refusing its token, expiry, eviction) tells
    every ``on_end`` listener its id, at once.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_age: float = DEFAULT_MAX_AGE,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
    ) -> None:
        if max_sessions < 1 or max_sessions_per_user < 1:
            raise ValueError("max_sessions and max_sessions_per_user must be at least 1")
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._max_sessions = max_sessions
        self._max_per_user = max_sessions_per_user
        self._sessions: OrderedDict[str, LoginSession] = OrderedDict()
        # user -> their session ids, least recently used first
        self._by_user: dict[str, OrderedDict[str, None]] = {}
        self._listeners: list[Callable[[str], None]] = []

    def on_end(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(session_id)`` whenever a session ends (it must not raise)."""
        self._listeners.append(listener)

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
        mine = self._by_user.get(user)
        if mine is not None and len(mine) >= self._max_per_user:
            self._remove(next(iter(mine)))
        if len(self._sessions) >= self._max_sessions:
            mine = self._by_user.get(user)
            self._remove(next(iter(mine)) if mine else next(iter(self._sessions)))
        self._sessions[session.id] = session
        self._by_user.setdefault(user, OrderedDict())[session.id] = None
        return session

    def count_for(self, user: str) -> int:
        """How many sessions ``user`` holds (expired ones included until they are met)."""
        return len(self._by_user.get(user, ()))

    def get(self, session_id: str) -> LoginSession | None:
        """The live session with this id (marking it used), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            self._remove(session_id)
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        self._by_user[session.user].move_to_end(session_id)
        return session

    def delete(self, session_id: str) -> None:
        self._remove(session_id)

    def delete_user(self, user: str) -> int:
        """End every session of ``user``; returns how many there were."""
        doomed = list(self._by_user.get(user, ()))
        for sid in doomed:
            self._remove(sid)
        return len(doomed)

    def _remove(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._by_user[session.user]
        del mine[session_id]
        if not mine:
            del self._by_user[session.user]
        for listener in self._listeners:
            listener(session_id)

    def _expired(self, session: LoginSession, now: float) -> bool:
        return now - session.last_seen > self.idle_timeout or now - session.created > self.max_age

    def _drop_idle(self, now: float) -> None:
        # The oldest-used sessions come first, so the idle ones form a prefix.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now):
                break
            self._remove(oldest.id)
