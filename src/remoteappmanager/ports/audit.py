"""The audit trail's store.

Contract (checked against the in-memory fake and the SQL adapter by
``tests/integration/test_repository_contract.py``):

- ``append`` writes a batch of events in one transaction, all or none; ids grow with the
  order of the batch and of the calls.
- ``query`` lists the events that match every condition given (``actor`` and ``action``
  exactly, ``since`` inclusive, ``until`` exclusive), newest first (by time, then by id),
  ``limit`` of them from ``offset``, with the total count of matches.
- ``prune`` deletes at most ``limit`` events older than ``before`` (the oldest first) and
  says how many it deleted, so that a large backlog is removed in bounded slices.
- Every method raises ``Unavailable`` when the database cannot be reached or used.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from remoteappmanager.domain.audit import EventPage, EventQuery, NewEvent


class EventStore(Protocol):
    async def append(self, events: Sequence[NewEvent]) -> None: ...

    async def query(self, query: EventQuery) -> EventPage: ...

    async def prune(self, before: datetime, limit: int) -> int: ...
