"""What replicas share through the database: login sessions, start claims, the lead, and who
controls each shared session."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence

import structlog
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from remoteappmanager.adapters.db.errors import translated_errors
from remoteappmanager.adapters.db.models import LoginSessionRow, ShareControlRow, StartClaimRow
from remoteappmanager.domain.shares import ControlState
from remoteappmanager.ports.login_sessions import StoredLoginSession

log = structlog.get_logger(__name__)

# Touches are written in batches of this many rows per statement.
_TOUCH_BATCH = 500


class SqlLoginSessionRecords:
    """``LoginSessionRecords`` on the ``login_session`` table."""

    def __init__(self, engine: AsyncEngine, location: str) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._location = location

    async def add(self, session: StoredLoginSession, *, keep_per_user: int) -> list[str]:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                db.add(
                    LoginSessionRow(
                        key=session.key,
                        user_name=session.user,
                        sealed_token=session.sealed_token,
                        created=session.created,
                        last_seen=session.last_seen,
                        ended_at=None,
                    )
                )
                await db.flush()
                live = (
                    await db.scalars(
                        select(LoginSessionRow.key)
                        .where(
                            LoginSessionRow.user_name == session.user,
                            LoginSessionRow.ended_at.is_(None),
                        )
                        .order_by(LoginSessionRow.last_seen.desc(), LoginSessionRow.created.desc())
                    )
                ).all()
                doomed = [key for key in live if key != session.key][max(keep_per_user - 1, 0) :]
                if doomed:
                    await db.execute(
                        update(LoginSessionRow)
                        .where(LoginSessionRow.key.in_(doomed))
                        .values(ended_at=session.created)
                    )
                return list(doomed)

    async def get(self, key: str) -> StoredLoginSession | None:
        with translated_errors(self._location):
            async with self._sessions() as db:
                row = await db.get(LoginSessionRow, key)
                if row is None or row.ended_at is not None:
                    return None
                return StoredLoginSession(
                    key=row.key,
                    user=row.user_name,
                    sealed_token=bytes(row.sealed_token),
                    created=row.created,
                    last_seen=row.last_seen,
                )

    async def touch(self, last_seen: Mapping[str, float]) -> None:
        items = list(last_seen.items())
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                for start in range(0, len(items), _TOUCH_BATCH):
                    for key, seen in items[start : start + _TOUCH_BATCH]:
                        await db.execute(
                            update(LoginSessionRow)
                            .where(LoginSessionRow.key == key, LoginSessionRow.last_seen < seen)
                            .values(last_seen=seen)
                        )

    async def end(self, keys: Sequence[str], at: float) -> None:
        if not keys:
            return
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                await db.execute(
                    update(LoginSessionRow)
                    .where(LoginSessionRow.key.in_(list(keys)), LoginSessionRow.ended_at.is_(None))
                    .values(ended_at=at)
                )

    async def end_user(self, user: str, at: float) -> list[str]:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                keys = (
                    await db.scalars(
                        update(LoginSessionRow)
                        .where(
                            LoginSessionRow.user_name == user, LoginSessionRow.ended_at.is_(None)
                        )
                        .values(ended_at=at)
                        .returning(LoginSessionRow.key)
                    )
                ).all()
                return list(keys)

    async def ended_since(self, since: float) -> list[str]:
        with translated_errors(self._location):
            async with self._sessions() as db:
                keys = await db.scalars(
                    select(LoginSessionRow.key).where(LoginSessionRow.ended_at >= since)
                )
                return list(keys.all())

    async def purge(self, *, ended_before: float, seen_before: float, created_before: float) -> int:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                result = await db.execute(
                    delete(LoginSessionRow).where(
                        or_(
                            LoginSessionRow.ended_at < ended_before,
                            LoginSessionRow.last_seen < seen_before,
                            LoginSessionRow.created < created_before,
                        )
                    )
                )
                return int(getattr(result, "rowcount", 0) or 0)


class SqlStartClaims:
    """``StartClaims`` on the ``start_claim`` table: the primary key makes one claim win."""

    def __init__(self, engine: AsyncEngine, location: str) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._location = location

    async def claim(
        self, user: str, mapping_id: str, *, holder: str, now: float, until: float
    ) -> bool:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                # A lapsed claim (its holder died) is cleared first; a live one stays.
                await db.execute(
                    delete(StartClaimRow).where(
                        StartClaimRow.user_name == user,
                        StartClaimRow.mapping_id == mapping_id,
                        StartClaimRow.until <= now,
                    )
                )
            try:
                async with self._sessions.begin() as db:
                    db.add(
                        StartClaimRow(
                            user_name=user, mapping_id=mapping_id, holder=holder, until=until
                        )
                    )
            except IntegrityError:
                return False
            return True

    async def release(self, user: str, mapping_id: str, *, holder: str) -> None:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                await db.execute(
                    delete(StartClaimRow).where(
                        StartClaimRow.user_name == user,
                        StartClaimRow.mapping_id == mapping_id,
                        StartClaimRow.holder == holder,
                    )
                )

    async def renew(self, user: str, mapping_id: str, *, holder: str, until: float) -> bool:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                renewed = await db.execute(
                    update(StartClaimRow)
                    .where(
                        StartClaimRow.user_name == user,
                        StartClaimRow.mapping_id == mapping_id,
                        StartClaimRow.holder == holder,
                    )
                    .values(until=until)
                    .returning(StartClaimRow.holder)
                )
                return renewed.first() is not None

    async def held(self, now: float) -> set[tuple[str, str]]:
        with translated_errors(self._location):
            async with self._sessions() as db:
                rows = await db.execute(
                    select(StartClaimRow.user_name, StartClaimRow.mapping_id).where(
                        StartClaimRow.until > now
                    )
                )
                return {(user, mapping_id) for user, mapping_id in rows.all()}


class SqlControlStates:
    """``ControlStates`` on the ``share_control`` table: the first version is an insert (the
    primary key lets one win), later ones an update guarded by the version read."""

    def __init__(self, engine: AsyncEngine, location: str) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._location = location

    async def get(self, url_id: str) -> tuple[int, ControlState] | None:
        with translated_errors(self._location):
            async with self._sessions() as db:
                row = await db.get(ShareControlRow, url_id)
                if row is None:
                    return None
                return row.version, ControlState(
                    controller=row.controller,
                    owner_holds=row.owner_holds,
                    everyone=row.everyone,
                    requests=tuple(str(name) for name in row.requests),
                )

    async def put(self, url_id: str, state: ControlState, *, version: int) -> bool:
        values = {
            "controller": state.controller,
            "owner_holds": state.owner_holds,
            "everyone": state.everyone,
            "requests": list(state.requests),
        }
        with translated_errors(self._location):
            if version == 0:
                try:
                    async with self._sessions.begin() as db:
                        db.add(ShareControlRow(url_id=url_id, version=1, **values))
                except IntegrityError:
                    return False
                return True
            async with self._sessions.begin() as db:
                changed = await db.execute(
                    update(ShareControlRow)
                    .where(ShareControlRow.url_id == url_id, ShareControlRow.version == version)
                    .values(version=version + 1, **values)
                    .returning(ShareControlRow.version)
                )
                return changed.first() is not None

    async def remove(self, url_id: str) -> None:
        with translated_errors(self._location):
            async with self._sessions.begin() as db:
                await db.execute(delete(ShareControlRow).where(ShareControlRow.url_id == url_id))


def advisory_lock_id(name: str) -> int:
    """A PostgreSQL advisory lock number (signed 64 bits) for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresLeaderElection:
    """``LeaderElection`` by a session-level advisory lock held on a connection of its own.

    PostgreSQL releases the lock when that connection ends, so a holder that dies (process
    killed, machine gone, network cut) hands the lead over as soon as the server notices;
    a live holder checks at each ``try_lead`` that its connection still answers.
    """

    def __init__(self, engine: AsyncEngine, name: str, *, timeout: float = 5.0) -> None:
        self._engine = engine
        self._lock = advisory_lock_id(name)
        self._timeout = timeout
        self._connection: AsyncConnection | None = None
        self._leading = False

    async def try_lead(self) -> bool:
        try:
            self._leading = await asyncio.wait_for(self._try(), self._timeout)
        except Exception as exc:  # whatever it is, this process does not lead
            if self._leading or self._connection is not None:
                log.warning("leadership.unreachable", error=type(exc).__name__)
            await self._drop()
        return self._leading

    async def _try(self) -> bool:
        if self._connection is None:
            connection = await self._engine.connect()
            # No transaction stays open on the connection between two checks.
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if self._leading:
            await self._connection.exec_driver_sql("SELECT 1")
            return True
        result = await self._connection.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({self._lock})"
        )
        return bool(result.scalar())

    async def resign(self) -> None:
        if self._connection is not None and self._leading:
            # Failing, the connection's end below releases the lock anyway.
            with contextlib.suppress(Exception):
                await self._connection.exec_driver_sql(f"SELECT pg_advisory_unlock({self._lock})")
        await self._drop()

    async def _drop(self) -> None:
        self._leading = False
        connection, self._connection = self._connection, None
        if connection is not None:
            # Thrown away, not returned to the pool: a lock it might hold ends with it.
            with contextlib.suppress(Exception):
                await connection.invalidate()
                await connection.close()


class SingleProcessElection:
    """``LeaderElection`` for SQLite: one service process uses the file, and it leads."""

    async def try_lead(self) -> bool:
        return True

    async def resign(self) -> None:
        return None
