"""Timing of the calls the service makes to the hub, the proxy, the engine and the database.

Each adapter takes an ``observe`` callback and times its one choke point with ``timing``:
``observe(dependency, operation, seconds, outcome)`` hears of every call once it ends, cached
answers excepted. ``operation`` is drawn from a small fixed set (``create container``,
``GET /user``...), never a name or an id, so the metrics keep a bounded number of series.
``outcome`` is ``ok``; ``refused`` when the system answered with one of our errors that is an
answer, not a fault (a container not found, a bad token); ``failed`` when it could not be
reached or answered nonsense (``Unavailable``, or anything unexpected).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from remoteappmanager.domain.errors import RemoteAppError, Unavailable

Observe = Callable[[str, str, float, str], None]
"""(dependency, operation, seconds, outcome) of one call."""


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, RemoteAppError) and not isinstance(error, Unavailable):
        return "refused"
    status = getattr(error, "status", None)  # a client library's HTTP error (e.g. a 404)
    if isinstance(status, int) and 400 <= status < 500:
        return "refused"
    return "failed"


def operation_of(action: str) -> str:
    """The bounded part of an action described for people: its verb and object
    (``"create container remoteapp.alice.3"`` → ``"create container"``)."""
    return " ".join(action.split()[:2])


@contextmanager
def timing(observe: Observe | None, dependency: str, operation: str) -> Iterator[None]:
    """Report the duration and outcome of the block to ``observe`` (if any)."""
    if observe is None:
        yield
        return
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        observe(dependency, operation, time.perf_counter() - started, outcome_of(error))
