"""The error hierarchy every layer raises; it knows nothing of HTTP.

The web layer maps each class to the REST API's ``{"type", "message"}`` shape and a status
(``web/errors.py`` names both), the command-line tools to one line on stderr and an exit code.
Messages are shown to users verbatim, so they never carry tokens or internal URLs.
"""

from __future__ import annotations


class RemoteAppError(Exception):
    """Base of every error the product reports on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(RemoteAppError):
    """The input is malformed or not acceptable (bad JSON, bad volume, bad resolution...)."""


class Unauthorized(RemoteAppError):
    """Nobody is signed in, or the credentials are not valid (any more)."""


class Forbidden(RemoteAppError):
    """Signed in, but not allowed to do this."""


class NotFound(RemoteAppError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Exists(RemoteAppError):
    """Creating something that already exists."""


class Conflict(RemoteAppError):
    """The request clashes with work in progress (e.g. a second start of the same grant)."""


class TooManyRequests(RemoteAppError):
    """The caller asked for this too often; ``retry_after`` whole seconds until it may again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class Unavailable(RemoteAppError):
    """A system we depend on (database, Docker engine, proxy, hub) cannot be reached."""


class Unable(RemoteAppError):
    """The request was valid but could not be carried out (e.g. the application never started)."""
