"""The audit trail in SQL: the ``EventStore`` port over the ``event`` table."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remoteappmanager.adapters.db.errors import translated_errors
from remoteappmanager.adapters.db.models import EventRow
from remoteappmanager.domain.audit import (
    AuditAction,
    AuditEvent,
    DetailValue,
    EventPage,
    EventQuery,
    NewEvent,
)


def _naive_utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


_COLUMNS = (
    EventRow.id,
    EventRow.time,
    EventRow.actor,
    EventRow.action,
    EventRow.target,
    EventRow.detail,
)


def _event(
    id: int, time: datetime.datetime, actor: str, action: str, target: str, detail: object
) -> AuditEvent:
    kept: dict[str, DetailValue] = dict(detail) if isinstance(detail, dict) else {}
    return AuditEvent(
        id=id,
        time=time.replace(tzinfo=datetime.UTC),
        actor=actor,
        action=AuditAction(action),
        target=target,
        detail=kept,
    )


def _conditions(query: EventQuery) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if query.actor is not None:
        found.append(EventRow.actor == query.actor)
    if query.action is not None:
        found.append(EventRow.action == query.action.value)
    if query.since is not None:
        found.append(EventRow.time >= _naive_utc(query.since))
    if query.until is not None:
        found.append(EventRow.time < _naive_utc(query.until))
    return found


class SqliteWriteGate:
    """Keeps the audit trail's writes out of the way of SQLite units of work in this process.

    In WAL mode a transaction that has read and then writes fails at once ("database is
    locked", whatever the busy timeout) when another connection committed since its read:
    a batch of events written in the middle of a grant would fail the grant. So on SQLite an
    event batch waits until no unit of work is open, and units of work opened meanwhile wait
    for the batch (a few milliseconds). A unit of work never waits for anything but a batch
    being written, so units of work opened inside others cannot deadlock.
    """

    def __init__(self) -> None:
        self._open = 0
        self._writing = False
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def enter_unit(self) -> None:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: not self._writing)
            self._open += 1

    async def leave_unit(self) -> None:
        changed = self._condition()
        async with changed:
            self._open -= 1
            changed.notify_all()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self._open == 0 and not self._writing)
            self._writing = True
        try:
            yield
        finally:
            async with changed:
                self._writing = False
                changed.notify_all()


class SqlEventStore:
    """Each call is its own short transaction (events are never part of catalogue work)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        location: str,
        gate: SqliteWriteGate | None = None,
    ) -> None:
        self._sessions = sessions
        self._location = location
        self._gate = gate

    def _exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._gate.writing() if self._gate is not None else contextlib.nullcontext()

    async def append(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        rows: list[dict[str, Any]] = [
            {
                "time": _naive_utc(event.time),
                "actor": event.actor,
                "action": event.action.value,
                "target": event.target,
                "detail": dict(event.detail),
            }
            for event in events
        ]
        async with self._exclusive():
            with translated_errors(self._location):
                async with self._sessions() as session, session.begin():
                    await session.execute(insert(EventRow), rows)

    async def query(self, query: EventQuery) -> EventPage:
        conditions = _conditions(query)
        with translated_errors(self._location):
            async with self._sessions() as session:
                # Counting stops one row past the bound: a page's cost does not grow with
                # the trail (see ``EventQuery.count_bound``).
                counted = await session.scalar(
                    select(func.count()).select_from(
                        select(literal(1))
                        .select_from(EventRow)
                        .where(*conditions)
                        .limit(query.count_bound + 1)
                        .subquery()
                    )
                )
                # Plain columns, not ORM entities: a page of a thousand costs a tenth as much.
                rows = await session.execute(
                    select(*_COLUMNS)
                    .where(*conditions)
                    .order_by(EventRow.time.desc(), EventRow.id.desc())
                    .limit(query.limit)
                    .offset(query.offset)
                )
                events = tuple(_event(*row) for row in rows)
        return EventPage.counted(query, int(counted or 0), events)

    async def prune(self, before: datetime.datetime, limit: int) -> int:
        oldest = (
            select(EventRow.id)
            .where(EventRow.time < _naive_utc(before))
            .order_by(EventRow.time, EventRow.id)
            .limit(limit)
        )
        async with self._exclusive():
            with translated_errors(self._location):
                async with self._sessions() as session, session.begin():
                    result = await session.execute(
                        delete(EventRow)
                        .where(EventRow.id.in_(oldest.scalar_subquery()))
                        .returning(EventRow.id)
                    )
                    return len(result.all())
