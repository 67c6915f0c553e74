"""Plain query arguments of the admin listings (paging, filters), parsed exactly as their
OpenAPI schemas say: whatever a schema refuses is a 400 here, and the other way round."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.web.api import QueryField

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000_000
MAX_TEXT_LENGTH = 255

_DIGITS = re.compile(r"[0-9]{1,10}")
# No control characters: what a name, an image or a search may hold.
_TEXT_PATTERN = rf"^[^\x00-\x1f\x7f]{{1,{MAX_TEXT_LENGTH}}}$"
_TEXT = re.compile(_TEXT_PATTERN)
# RFC 3339 date-time (JSON Schema's "date-time"); parsed by the standard library.
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

LIMIT = QueryField(
    f"How many entries at most (default {DEFAULT_LIMIT}).",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
)
LIMIT_ALL = QueryField(
    "How many entries at most (default: every one).",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
)
OFFSET = QueryField(
    "How many matching entries to skip (default 0).",
    {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
)


def text_field(description: str) -> QueryField:
    return QueryField(
        description,
        {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH, "pattern": _TEXT_PATTERN},
    )


def choice_field(description: str, choices: Sequence[str]) -> QueryField:
    return QueryField(description, {"type": "string", "enum": list(choices)})


def time_field(description: str) -> QueryField:
    return QueryField(description, {"type": "string", "format": "date-time"})


def _raw(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"the {name} query argument is given more than once")
    return values[0] if values else None


def integer(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = _raw(request, name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def paging(request: web.Request) -> tuple[int, int]:
    """``(limit, offset)`` from the query."""
    limit = integer(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    offset = integer(request, "offset", default=0, low=0, high=MAX_OFFSET)
    return limit, offset


def optional_paging(request: web.Request) -> tuple[int | None, int]:
    """``(limit, offset)`` from the query; no ``limit`` means every entry from ``offset``."""
    limit = integer(request, "limit", default=0, low=1, high=MAX_LIMIT) or None
    offset = integer(request, "offset", default=0, low=0, high=MAX_OFFSET)
    return limit, offset


def text(request: web.Request, name: str) -> str | None:
    raw = _raw(request, name)
    if raw is None:
        return None
    if not _TEXT.fullmatch(raw):
        raise InvalidRequest(
            f"{name} must be 1 to {MAX_TEXT_LENGTH} characters without control characters"
        )
    return raw


def choice(request: web.Request, name: str, choices: Sequence[str]) -> str | None:
    raw = _raw(request, name)
    if raw is None:
        return None
    if raw not in choices:
        raise InvalidRequest(f"{name} must be one of: {', '.join(choices)}")
    return raw


def moment(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 date-time with its offset, as an aware UTC datetime."""
    raw = _raw(request, name)
    if raw is None:
        return None
    match = _DATE_TIME.fullmatch(raw)
    problem = f"{name} must be an ISO 8601 date-time with its offset (2026-12-04T10:00:00Z)"
    if match is None:
        raise InvalidRequest(problem)
    date, clock, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # the point and at most six digits
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}{fraction}{offset}")
    except ValueError:
        raise InvalidRequest(problem) from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # Within a day of the calendar's ends: as early or as late as can be.
        return (
            datetime.min.replace(tzinfo=UTC)
            if parsed.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )
