"""In-memory fakes of what replicas share through the database (unit tests, demos).

Several fakes built on one ``InMemorySharedState`` behave as replicas of one database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from remoteappmanager.domain.shares import ControlState
from remoteappmanager.ports.login_sessions import StoredLoginSession


@dataclass
class _Row:
    session: StoredLoginSession
    ended_at: float | None = None


@dataclass
class InMemorySharedState:
    """The "database" several fakes share."""

    login_sessions: dict[str, _Row] = field(default_factory=dict)
    claims: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    leader: object | None = None
    controls: dict[str, tuple[int, ControlState]] = field(default_factory=dict)


class InMemoryLoginSessionRecords:
    def __init__(self, state: InMemorySharedState | None = None) -> None:
        self.state = state or InMemorySharedState()

    async def add(self, session: StoredLoginSession, *, keep_per_user: int) -> list[str]:
        rows = self.state.login_sessions
        rows[session.key] = _Row(session)
        live = sorted(
            (
                row.session
                for row in rows.values()
                if row.session.user == session.user
                and row.ended_at is None
                and row.session.key != session.key
            ),
            key=lambda stored: (stored.last_seen, stored.created),
            reverse=True,
        )
        doomed = [stored.key for stored in live[max(keep_per_user - 1, 0) :]]
        for key in doomed:
            rows[key].ended_at = session.created
        return doomed

    async def get(self, key: str) -> StoredLoginSession | None:
        row = self.state.login_sessions.get(key)
        return row.session if row is not None and row.ended_at is None else None

    async def touch(self, last_seen: Mapping[str, float]) -> None:
        for key, seen in last_seen.items():
            row = self.state.login_sessions.get(key)
            if row is not None and row.session.last_seen < seen:
                row.session = replace(row.session, last_seen=seen)

    async def end(self, keys: Sequence[str], at: float) -> None:
        for key in keys:
            row = self.state.login_sessions.get(key)
            if row is not None and row.ended_at is None:
                row.ended_at = at

    async def end_user(self, user: str, at: float) -> list[str]:
        keys = [
            key
            for key, row in self.state.login_sessions.items()
            if row.session.user == user and row.ended_at is None
        ]
        await self.end(keys, at)
        return keys

    async def ended_since(self, since: float) -> list[str]:
        return [
            key
            for key, row in self.state.login_sessions.items()
            if row.ended_at is not None and row.ended_at >= since
        ]

    async def purge(self, *, ended_before: float, seen_before: float, created_before: float) -> int:
        rows = self.state.login_sessions
        doomed = [
            key
            for key, row in rows.items()
            if (row.ended_at is not None and row.ended_at < ended_before)
            or row.session.last_seen < seen_before
            or row.session.created < created_before
        ]
        for key in doomed:
            del rows[key]
        return len(doomed)


class InMemoryStartClaims:
    def __init__(self, state: InMemorySharedState | None = None) -> None:
        self.state = state or InMemorySharedState()

    async def claim(
        self, user: str, mapping_id: str, *, holder: str, now: float, until: float
    ) -> bool:
        current = self.state.claims.get((user, mapping_id))
        if current is not None and current[1] > now:
            return False
        self.state.claims[user, mapping_id] = (holder, until)
        return True

    async def release(self, user: str, mapping_id: str, *, holder: str) -> None:
        current = self.state.claims.get((user, mapping_id))
        if current is not None and current[0] == holder:
            del self.state.claims[user, mapping_id]

    async def renew(self, user: str, mapping_id: str, *, holder: str, until: float) -> bool:
        current = self.state.claims.get((user, mapping_id))
        if current is None or current[0] != holder:
            return False
        self.state.claims[user, mapping_id] = (holder, until)
        return True

    async def held(self, now: float) -> set[tuple[str, str]]:
        return {key for key, (_holder, until) in self.state.claims.items() if until > now}


class InMemoryControlStates:
    def __init__(self, state: InMemorySharedState | None = None) -> None:
        self.state = state or InMemorySharedState()

    async def get(self, url_id: str) -> tuple[int, ControlState] | None:
        return self.state.controls.get(url_id)

    async def put(self, url_id: str, state: ControlState, *, version: int) -> bool:
        current = self.state.controls.get(url_id)
        if (current[0] if current is not None else 0) != version:
            return False
        self.state.controls[url_id] = (version + 1, state)
        return True

    async def remove(self, url_id: str) -> None:
        self.state.controls.pop(url_id, None)


class InMemoryLeaderElection:
    """One lead per shared state; ``die()`` drops this process's hold as a lost connection
    would, ``reachable = False`` makes the "database" unreachable for it."""

    def __init__(self, state: InMemorySharedState | None = None) -> None:
        self.state = state or InMemorySharedState()
        self.reachable = True
        self._lost = False

    async def try_lead(self) -> bool:
        if not self.reachable:
            self.die()
            return False
        if self._lost:
            # The check that finds the connection dead fails; the next one starts afresh.
            self._lost = False
            return False
        if self.state.leader is None:
            self.state.leader = self
        return self.state.leader is self

    async def resign(self) -> None:
        if self.state.leader is self:
            self.state.leader = None

    def die(self) -> None:
        if self.state.leader is self:
            self.state.leader = None
            self._lost = True
