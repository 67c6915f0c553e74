"""SQLAlchemy and driver exceptions translated into the domain's error types."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from remoteappmanager.domain.errors import Exists, NotFound, RemoteAppError, Unavailable

# SQLSTATE of a foreign key violation (PostgreSQL); SQLite only says it in words.
_FOREIGN_KEY_VIOLATION = "23503"


@contextmanager
def translated_errors(location: str) -> Iterator[None]:
    """Turn what the database layer raises inside the block into domain errors.

    ``location`` (from ``engine.describe``) names the database in messages; driver messages
    are reduced to their first line, which never holds the password or the SQL parameters.
    """
    try:
        yield
    except RemoteAppError:
        raise
    except IntegrityError as exc:
        if _is_foreign_key_violation(exc):
            raise NotFound("a user, application or policy it refers to no longer exists") from exc
        raise Exists("it already exists (changed concurrently)") from exc
    except DBAPIError as exc:
        raise Unavailable(f"cannot use the {location}: {_driver_reason(exc)}") from exc
    except SQLAlchemyError as exc:
        raise Unavailable(f"cannot use the {location}: {type(exc).__name__}") from exc
    except OSError as exc:
        raise Unavailable(f"the {location} is unreachable: {_os_reason(exc)}") from exc


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == _FOREIGN_KEY_VIOLATION or "FOREIGN KEY constraint" in str(exc.orig)


def _driver_reason(exc: DBAPIError) -> str:
    reason = str(exc.orig).strip().splitlines()
    return reason[0] if reason and reason[0] else type(exc.orig).__name__


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__
