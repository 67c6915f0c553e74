"""What replicas of the service sharing one database agree on: who leads, who starts what,
who controls a shared session."""

from __future__ import annotations

from typing import Protocol

from remoteappmanager.domain.shares import ControlState


class LeaderElection(Protocol):
    """At most one holder at a time among every process using the same database.

    A holder that dies (its process, its connection) loses the lead without doing anything,
    so that another process takes it at its next ``try_lead``.
    """

    async def try_lead(self) -> bool:
        """Take the lead if nobody holds it, or check that this process still does.

        True while this process leads. Never raises for an unreachable database: that is
        False (a leader that cannot reach the database must not act as one).
        """
        ...

    async def resign(self) -> None:
        """Give the lead up (at shutdown), so that another process takes it at once."""
        ...


class StartClaims(Protocol):
    """Who is starting or stopping a grant's application, across processes.

    A claim names its holder (one per process) and lasts until released or ``until`` (seconds
    since the epoch), whichever comes first: a holder that died leaves a claim that lapses.
    Raises ``Unavailable`` when the database cannot be reached.
    """

    async def claim(
        self, user: str, mapping_id: str, *, holder: str, now: float, until: float
    ) -> bool:
        """Claim the grant for ``holder``; False while another holder's claim runs."""
        ...

    async def release(self, user: str, mapping_id: str, *, holder: str) -> None:
        """Release ``holder``'s claim on the grant (nothing if it holds none)."""
        ...

    async def renew(self, user: str, mapping_id: str, *, holder: str, until: float) -> bool:
        """Extend ``holder``'s claim on the grant to ``until``; False if it holds none (it
        lapsed and went to another holder, or was released)."""
        ...

    async def held(self, now: float) -> set[tuple[str, str]]:
        """The (user, mapping id) pairs claimed and not lapsed at ``now``, by any holder."""
        ...


class ControlStates(Protocol):
    """Who controls each shared session (``ControlState``), across processes.

    Each stored state has a version, starting at 1 and growing with each change; a change is
    written only over the version it was made from, so that two processes changing one
    session's control at once cannot both win (compare and set). Raises ``Unavailable`` when
    the database cannot be reached.
    """

    async def get(self, url_id: str) -> tuple[int, ControlState] | None:
        """The session's state and its version; None when none is stored."""
        ...

    async def put(self, url_id: str, state: ControlState, *, version: int) -> bool:
        """Store ``state`` if the stored version is still ``version`` (0: nothing stored);
        False, changing nothing, when another process changed it first."""
        ...

    async def remove(self, url_id: str) -> None:
        """Forget the session's state (it stopped); nothing if none is stored."""
        ...
