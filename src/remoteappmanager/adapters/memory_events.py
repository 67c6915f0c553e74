"""An in-memory fake of the audit trail's store, for fast service tests."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from remoteappmanager.domain.audit import AuditEvent, EventPage, EventQuery, NewEvent
from remoteappmanager.domain.errors import Unavailable


class InMemoryEventStore:
    """Keeps events in a list; ``failing`` makes every call raise ``Unavailable``, as a
    database that cannot be reached does."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.failing = False
        self.appends = 0
        self._next_id = 1

    async def append(self, events: Sequence[NewEvent]) -> None:
        self._check()
        self.appends += 1
        for event in events:
            self.events.append(
                AuditEvent(
                    id=self._next_id,
                    time=event.time.astimezone(datetime.UTC),
                    actor=event.actor,
                    action=event.action,
                    target=event.target,
                    detail=dict(event.detail),
                )
            )
            self._next_id += 1

    async def query(self, query: EventQuery) -> EventPage:
        self._check()
        matching = [
            event
            for event in self.events
            if (query.actor is None or event.actor == query.actor)
            and (query.action is None or event.action is query.action)
            and (query.since is None or event.time >= query.since)
            and (query.until is None or event.time < query.until)
        ]
        matching.sort(key=lambda event: (event.time, event.id), reverse=True)
        page = matching[query.offset : query.offset + query.limit]
        return EventPage.counted(query, len(matching), tuple(page))

    async def prune(self, before: datetime.datetime, limit: int) -> int:
        self._check()
        doomed = sorted(
            (event for event in self.events if event.time < before),
            key=lambda event: (event.time, event.id),
        )[:limit]
        ids = {event.id for event in doomed}
        self.events = [event for event in self.events if event.id not in ids]
        return len(ids)

    def _check(self) -> None:
        if self.failing:
            raise Unavailable("the in-memory event store is set to fail")
