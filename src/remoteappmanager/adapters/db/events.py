"""The audit trail in SQL: the ``EventStore`` port over the ``event`` table."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, literal, select

from remoteappmanager.adapters.db.access import SqlAccess
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


class SqlEventStore:
    """Each call is its own short transaction (events are never part of catalogue work)."""

    def __init__(self, access: SqlAccess) -> None:
        self._db = access

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
        async with self._db.writing():
            with translated_errors(self._db.location):
                async with self._db.sessions() as session, session.begin():
                    await session.execute(insert(EventRow), rows)

    async def query(self, query: EventQuery) -> EventPage:
        conditions = _conditions(query)
        with translated_errors(self._db.location):
            async with self._db.sessions() as session:
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
        async with self._db.writing():
            with translated_errors(self._db.location):
                async with self._db.sessions() as session, session.begin():
                    result = await session.execute(
                        delete(EventRow)
                        .where(EventRow.id.in_(oldest.scalar_subquery()))
                        .returning(EventRow.id)
                    )
                    return len(result.all())
