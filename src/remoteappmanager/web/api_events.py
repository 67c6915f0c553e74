"""The audit trail's admin API: ``{svc}api/v1/admin/events/`` as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json

from aiohttp import web

from remoteappmanager.domain.audit import COUNT_AHEAD, AuditAction, AuditEvent, EventQuery
from remoteappmanager.services.audit import AuditTrail
from remoteappmanager.web import paging
from remoteappmanager.web.api import ApiOperation, ApiRegistry, json_response
from remoteappmanager.web.api_models import EventList, iso_time
from remoteappmanager.web.auth import require_admin
from remoteappmanager.web.keys import DEPS

EVENTS_PATH = "v1/admin/events/"
ACTIONS = tuple(action.value for action in AuditAction)
FORMATS = ("json", "csv")
CSV_COLUMNS = ("id", "time", "actor", "action", "target", "detail")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _trail(request: web.Request) -> AuditTrail:
    return request.app[DEPS].audit


def event_query(request: web.Request) -> EventQuery:
    """The listing asked for by the query arguments; ``InvalidRequest`` for a bad one."""
    limit, offset = paging.paging(request)
    action = paging.choice(request, "action", ACTIONS)
    since = paging.moment(request, "since")
    until = paging.moment(request, "until")
    return EventQuery(
        actor=paging.text(request, "actor"),
        action=AuditAction(action) if action is not None else None,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )


def neutralised(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading quote before what would start a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def events_csv(events: tuple[AuditEvent, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for event in events:
        writer.writerow(
            [
                str(event.id),
                iso_time(event.time),
                neutralised(event.actor),
                event.action.value,
                neutralised(event.target),
                neutralised(json.dumps(dict(event.detail), sort_keys=True)),
            ]
        )
    return out.getvalue()


@require_admin
async def list_events(request: web.Request) -> web.StreamResponse:
    wanted_format = paging.choice(request, "format", FORMATS) or "json"
    query = event_query(request)
    page = await _trail(request).events(query)
    if wanted_format == "csv":
        return web.Response(
            text=events_csv(page.events),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="events.csv"'},
        )
    return json_response(EventList.counted(page, offset=query.offset))


def register(registry: ApiRegistry) -> None:
    """Declare the audit trail's route."""
    registry.add(
        ApiOperation(
            "GET",
            EVENTS_PATH,
            list_events,
            operation_id="admin_list_events",
            summary="The audit trail, newest first",
            description="Sign-ins, starts, stops, grants, catalogue changes and admins "
            "entering someone else's application. `?format=csv` answers the same page as "
            "CSV (cells that a spreadsheet would run as a formula start with a quote). "
            f"Matches are counted up to {COUNT_AHEAD:,} events past the page, so that a page "
            "costs the same on any size of trail: past that, `total` says how many at least "
            "and `total_exact` is false.",
            tag="admin",
            responses={200: EventList},
            other_content={"text/csv": {"type": "string"}},
            errors=(400, 401, 403, 503),
            query_fields={
                "actor": paging.text_field("Only events by this actor (exactly)."),
                "action": paging.choice_field("Only events of this action.", ACTIONS),
                "since": paging.time_field("Only events at or after this time (ISO 8601)."),
                "until": paging.time_field("Only events before this time (ISO 8601)."),
                "limit": paging.LIMIT,
                "offset": paging.OFFSET,
                "format": paging.choice_field("`json` (default) or `csv`.", FORMATS),
            },
        )
    )
