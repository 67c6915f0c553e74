"""Signed-in browsers: hub tokens keyed by an opaque session id, cached in memory in front of
the database that every replica of the service shares."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.ports.login_sessions import LoginSessionRecords, StoredLoginSession

log = structlog.get_logger(__name__)

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
# How often the stored last use of a session is brought up to date (it only decides idle
# expiry, hours away): at most one write per session and period.
TOUCH_PERIOD = 60.0
# An end another replica recorded is looked for again during this long: a session one replica
# loaded just before the end was committed is dropped at a later check.
ENDED_OVERLAP = 10.0
# Ended sessions stay in the database this long (far beyond ``ENDED_OVERLAP``), and the
# database is cleaned of them and of expired ones at most this often.
ENDED_KEPT = 3600.0
PURGE_PERIOD = 600.0
_NONCE_BYTES = 12


@dataclass(slots=True)
class LoginSession:
    id: str
    user: str
    hub_token: str
    created: float
    last_seen: float
    key: str = ""
    """The database's key for it (``session_key``); empty when not stored."""
    stored_seen: float = 0.0
    """The last use the database knows of."""


def session_key(session_id: str) -> str:
    """The database's key for a session: one-way, so the table alone opens no session."""
    return hashlib.sha256(b"remoteapp login session key\0" + session_id.encode()).hexdigest()


def _sealing(session_id: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"remoteapp login session seal\0" + session_id.encode()).digest())


def seal_token(session_id: str, key: str, hub_token: str) -> bytes:
    """The hub token, encrypted with a key only the session id gives (bound to ``key``)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + _sealing(session_id).encrypt(nonce, hub_token.encode(), key.encode())


def unseal_token(session_id: str, key: str, sealed: bytes) -> str | None:
    """The hub token ``seal_token`` sealed, or None if it was not sealed for this session."""
    try:
        plain = _sealing(session_id).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], key.encode()
        )
    except (InvalidTag, ValueError):
        return None
    return plain.decode()


class LoginSessionStore:
    """Sessions ordered by last use; expired ones are dropped as they are met.

    The hub token never leaves the server: the browser holds only the session id (in a signed
    cookie).

    With ``records`` (the database every replica shares), this store is a cache in front of
    it: ``open`` stores a new session before the browser learns its id, ``load`` finds a
    session another replica opened, ``end`` ends it for every replica, and ``sync`` (every
    second or so, see ``syncing``) notices the sessions other replicas ended, so that the
    ``on_end`` listeners hear of them within a couple of seconds. The database holds a one-way
    key of each session id and the hub token sealed with another key of the id, never the id
    itself. Without ``records`` sessions live in this process alone and end when it stops.

    ``get``, ``create`` and ``delete`` look at this process's memory only.

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
        records: LoginSessionRecords | None = None,
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
        self._records = records
        # key -> session id, for the cached sessions (ends arrive from the database by key).
        self._by_key: dict[str, str] = {}
        # Sessions used since their stored last use is more than ``TOUCH_PERIOD`` old.
        self._dirty: set[str] = set()
        # Ids the database did not know or had ended: a session never comes back, so a browser
        # repeating a stale cookie costs one query, not one per request (bounded, oldest out).
        self._absent: OrderedDict[str, None] = OrderedDict()
        self._ended_checked: float | None = None
        self._purged = 0.0

    @property
    def persistent(self) -> bool:
        """Whether sessions are kept in the database (shared by every replica)."""
        return self._records is not None

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
            # Stored, it may have been used through another replica since: ``load`` decides.
            self._remove(session_id, notify=not self.persistent)
            return None
        session.last_seen = now
        if session.key and now - session.stored_seen >= TOUCH_PERIOD:
            self._dirty.add(session_id)
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

    def _remove(self, session_id: str, *, notify: bool = True) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._by_user[session.user]
        del mine[session_id]
        if not mine:
            del self._by_user[session.user]
        self._by_key.pop(session.key, None)
        self._dirty.discard(session_id)
        if notify:
            for listener in self._listeners:
                listener(session_id)

    # ------------------------------------------------------------ shared by every replica
    async def open(self, user: str, hub_token: str) -> LoginSession:
        """A new session for ``user``, stored (when persistent) before it is returned.

        The user's sessions beyond ``max_sessions_per_user`` end, least recently used first,
        on every replica. ``Unavailable`` (and no session) when the database cannot be used.
        """
        if self._records is None:
            return self.create(user, hub_token)
        now = self._clock()
        self._drop_idle(now)
        session_id = secrets.token_urlsafe(32)
        key = session_key(session_id)
        stored = StoredLoginSession(
            key=key,
            user=user,
            sealed_token=seal_token(session_id, key, hub_token),
            created=now,
            last_seen=now,
        )
        ended = await self._records.add(stored, keep_per_user=self._max_per_user)
        for other in ended:
            self._remove_key(other)
        session = LoginSession(session_id, user, hub_token, now, now, key, now)
        self._cache(session)
        return session

    async def load(self, session_id: str) -> LoginSession | None:
        """The live session with this id (marking it used), from memory or else from the
        database; None if there is none, it ended or it expired. ``Unavailable`` when the
        database cannot be used."""
        session = self.get(session_id)
        if session is not None or self._records is None or not session_id:
            return session
        if session_id in self._absent:
            return None
        key = session_key(session_id)
        stored = await self._records.get(key)
        if stored is None:
            self._forget(session_id)
            return None
        now = self._clock()
        if now - stored.last_seen > self.idle_timeout or now - stored.created > self.max_age:
            return None
        hub_token = unseal_token(session_id, key, stored.sealed_token)
        if hub_token is None:
            return None
        cached = self.get(session_id)  # loaded by another request meanwhile
        if cached is not None:
            return cached
        session = LoginSession(
            session_id, stored.user, hub_token, stored.created, now, key, stored.last_seen
        )
        if now - stored.last_seen >= TOUCH_PERIOD:
            self._dirty.add(session_id)
        self._cache(session)
        return session

    async def end(self, session_id: str) -> None:
        """End the session here at once, and for every replica (``Unavailable`` if the
        database cannot be used; this replica has ended it all the same)."""
        self._remove(session_id)
        if self._records is not None and session_id:
            await self._records.end([session_key(session_id)], self._clock())

    async def sync(self) -> None:
        """Write recent uses, drop the sessions other replicas ended (telling the listeners),
        and now and then clean the database of ended and expired sessions."""
        records = self._records
        if records is None:
            return
        now = self._clock()
        dirty, self._dirty = self._dirty, set()
        touched = {
            session.key: session.last_seen
            for session in (self._sessions.get(session_id) for session_id in dirty)
            if session is not None
        }
        if touched:
            try:
                await records.touch(touched)
            except BaseException:
                self._dirty |= dirty
                raise
            for session_id in dirty:
                session = self._sessions.get(session_id)
                if session is not None:
                    session.stored_seen = touched.get(session.key, session.stored_seen)
        since = (self._ended_checked if self._ended_checked is not None else now) - ENDED_OVERLAP
        for key in await records.ended_since(since):
            self._remove_key(key)
        self._ended_checked = now
        if now - self._purged >= PURGE_PERIOD:
            self._purged = now
            purged = await records.purge(
                ended_before=now - ENDED_KEPT,
                seen_before=now - self.idle_timeout,
                created_before=now - self.max_age,
            )
            if purged:
                log.info("login_sessions.purged", sessions=purged)

    async def syncing(self, interval: float) -> None:
        """``sync`` every ``interval`` seconds until cancelled; failures are logged."""
        failing = False
        while True:
            try:
                await self.sync()
                if failing:
                    log.info("login_sessions.sync_recovered")
                failing = False
            except RemoteAppError as exc:
                if not failing:
                    log.warning("login_sessions.sync_failed", error=exc.message)
                failing = True
            await asyncio.sleep(interval)

    def _forget(self, session_id: str) -> None:
        self._absent[session_id] = None
        while len(self._absent) > self._max_sessions:
            self._absent.popitem(last=False)

    def _remove_key(self, key: str) -> None:
        session_id = self._by_key.get(key)
        if session_id is not None:
            self._remove(session_id)

    def _cache(self, session: LoginSession) -> None:
        # Stored sessions leave the cache quietly when it is full: they stay valid, and the
        # next request that needs one loads it again.
        while len(self._sessions) >= self._max_sessions:
            self._remove(next(iter(self._sessions)), notify=False)
        self._sessions[session.id] = session
        self._by_user.setdefault(session.user, OrderedDict())[session.id] = None
        self._by_key[session.key] = session.id

    def _expired(self, session: LoginSession, now: float) -> bool:
        return now - session.last_seen > self.idle_timeout or now - session.created > self.max_age

    def _drop_idle(self, now: float) -> None:
        # The oldest-used sessions come first, so the idle ones form a prefix.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if not self._expired(oldest, now):
                break
            self._remove(oldest.id, notify=not self.persistent)
