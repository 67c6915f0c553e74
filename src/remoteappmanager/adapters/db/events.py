"""The audit trail in SQL: the ``EventStore`` port over the ``event`` table."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
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


def _event(row: EventRow) -> AuditEvent:
    detail: dict[str, DetailValue] = dict(row.detail) if isinstance(row.detail, dict) else {}
    return AuditEvent(
        id=row.id,
        time=row.time.replace(tzinfo=datetime.UTC),
        actor=row.actor,
        action=AuditAction(row.action),
        target=row.target,
        detail=detail,
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


class SqlEventStore:
    """Each call is its own short transaction (events are never part of catalogue work)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], location: str) -> None:
        self._sessions = sessions
        self._location = location

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
        with translated_errors(self._location):
            async with self._sessions() as session, session.begin():
                await session.execute(insert(EventRow), rows)

    async def query(self, query: EventQuery) -> EventPage:
        conditions = _conditions(query)
        with translated_errors(self._location):
            async with self._sessions() as session:
                total = await session.scalar(
                    select(func.count()).select_from(EventRow).where(*conditions)
                )
                rows = await session.scalars(
                    select(EventRow)
                    .where(*conditions)
                    .order_by(EventRow.time.desc(), EventRow.id.desc())
                    .limit(query.limit)
                    .offset(query.offset)
                )
                events = tuple(_event(row) for row in rows)
        return EventPage(total=int(total or 0), events=events)

    async def prune(self, before: datetime.datetime, limit: int) -> int:
        oldest = (
            select(EventRow.id)
            .where(EventRow.time < _naive_utc(before))
            .order_by(EventRow.time, EventRow.id)
            .limit(limit)
        )
        with translated_errors(self._location):
            async with self._sessions() as session, session.begin():
                result = await session.execute(
                    delete(EventRow)
                    .where(EventRow.id.in_(oldest.scalar_subquery()))
                    .returning(EventRow.id)
                )
                return len(result.all())
