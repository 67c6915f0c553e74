"""How the SQL adapters reach their database: the session factory, where the database is
(for messages), and on SQLite the gate that keeps the audit trail's writes out of the way of
units of work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


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


@dataclass(frozen=True, slots=True)
class SqlAccess:
    """What a unit of work and the event store are built on."""

    sessions: async_sessionmaker[AsyncSession]
    location: str
    """Where the database is, for messages (``engine.describe``: no password)."""
    gate: SqliteWriteGate | None = None
    """On SQLite only; elsewhere the database's own locking is enough."""

    async def enter_unit(self) -> None:
        """A unit of work opens (it waits for an event batch being written on SQLite)."""
        if self.gate is not None:
            await self.gate.enter_unit()

    async def leave_unit(self) -> None:
        if self.gate is not None:
            await self.gate.leave_unit()

    def writing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around an event batch's write: alone, on SQLite, with no unit of work open."""
        return self.gate.writing() if self.gate is not None else contextlib.nullcontext()
