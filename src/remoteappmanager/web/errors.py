"""The one error middleware: errors become API JSON under ``{svc}api/`` and HTML pages elsewhere."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping
from http import HTTPStatus

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.domain.errors import (
    Conflict,
    Exists,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteAppError,
    TooManyRequests,
    Unable,
    Unauthorized,
    Unavailable,
)
from remoteappmanager.web.keys import URLS
from remoteappmanager.web.logs import request_id_of

log = structlog.get_logger(__name__)

# Each error's status and its name in the API (the ``type`` of ``{type, message}``, kept from
# SimPhoNy-Remote's REST API for its clients). Most specific class first: ``status_of`` and
# ``wire_name_of`` walk the error's MRO.
ERROR_STATUS: Mapping[type[RemoteAppError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Exists: 409,
    Conflict: 409,
    TooManyRequests: 429,
    Unavailable: 503,
    Unable: 500,
    RemoteAppError: 500,
}
WIRE_NAME: Mapping[type[RemoteAppError], str] = {
    InvalidRequest: "BadRepresentation",
    Unauthorized: "Unauthorized",
    Forbidden: "Forbidden",
    NotFound: "NotFound",
    Exists: "Exists",
    Conflict: "Exists",
    TooManyRequests: "TooManyRequests",
    Unavailable: "Unable",
    Unable: "Unable",
    RemoteAppError: "Unable",
}

# aiohttp's own errors (no route, wrong method, body too large...) in the API's vocabulary.
_WIRE_NAME_OF_STATUS: Mapping[int, str] = {
    400: WIRE_NAME[InvalidRequest],
    401: WIRE_NAME[Unauthorized],
    403: WIRE_NAME[Forbidden],
    404: WIRE_NAME[NotFound],
    405: WIRE_NAME[InvalidRequest],
    409: WIRE_NAME[Exists],
    411: WIRE_NAME[InvalidRequest],
    413: WIRE_NAME[InvalidRequest],
    415: WIRE_NAME[InvalidRequest],
    422: WIRE_NAME[InvalidRequest],
    429: WIRE_NAME[TooManyRequests],
}
# Headers of an aiohttp error worth keeping (``Allow`` on 405, for instance).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
<p>{message}</p>
<p><a href="{home}">Back to the applications</a></p>{request_id}
</body>
</html>
"""


def error_page(status: int, message: str, home: str, request_id: str | None = None) -> str:
    """The small HTML page of an error (the service's and the gate's), every value escaped."""
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    quoted = (
        ""
        if request_id is None
        else f"\n<p><small>Request id: {html.escape(request_id)}</small></p>"
    )
    return _PAGE.format(
        title=html.escape(title),
        message=html.escape(message),
        home=html.escape(home),
        request_id=quoted,
    )


def status_of(error: RemoteAppError) -> int:
    for cls in type(error).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def wire_name_of(error: RemoteAppError) -> str:
    for cls in type(error).__mro__:
        name = WIRE_NAME.get(cls)
        if name is not None:
            return name
    return WIRE_NAME[RemoteAppError]


def error_response(
    request: web.Request,
    status: int,
    wire_name: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The error in the shape the caller expects: API JSON or a small escaped HTML page."""
    urls = request.app[URLS]
    extra = dict(headers or {})
    if urls.is_api(request.path):
        if status == 401:
            extra.setdefault("WWW-Authenticate", "token")
        return web.json_response(
            {"type": wire_name, "message": message}, status=status, headers=extra
        )
    page = error_page(status, message, urls.home, request_id_of(request))
    return web.Response(text=page, status=status, content_type="text/html", headers=extra)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RemoteAppError as exc:
        status = status_of(exc)
        if status >= 500:
            log.warning("request_failed", error=type(exc).__name__, message=exc.message)
        headers = (
            {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        )
        return error_response(request, status, wire_name_of(exc), exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        wire_name = _WIRE_NAME_OF_STATUS.get(exc.status, WIRE_NAME[Unable])
        return error_response(request, exc.status, wire_name, exc.reason, kept)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected_error", method=request.method, path=request.path)
        message = (
            "Something went wrong on our side. If it persists, tell your administrator "
            f"the request id {request_id_of(request)}."
        )
        return error_response(request, 500, WIRE_NAME[Unable], message)
