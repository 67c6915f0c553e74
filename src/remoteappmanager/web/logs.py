"""Structured logging (console or JSON) and the per-request id bound into every log line."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.settings import LogFormat
from remoteappmanager.web.keys import REQUEST_ID

log = structlog.get_logger("remoteappmanager.access")

REQUEST_ID_HEADER = "X-Request-Id"
# An id from upstream is kept only if it cannot smuggle anything into a log line.
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def configure_logging(log_format: LogFormat | str = LogFormat.CONSOLE, level: str = "INFO") -> None:
    """Route structlog and the standard library (aiohttp, SQLAlchemy...) through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if LogFormat(log_format) is LogFormat.JSON:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log is replaced by the structured ``request`` event below.
    logging.getLogger("aiohttp.access").disabled = True


def request_id_of(request: web.Request) -> str:
    return request.get(REQUEST_ID) or "-"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, bind it to every log line, and log one ``request`` event."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    # 128 random bits, as uuid4 gives, without building a UUID on every request.
    request_id = incoming if _INCOMING_ID.match(incoming) else os.urandom(16).hex()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's convention)
            raise
        finally:
            # The path only: query strings carry OAuth codes and states.
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response names its request id."""
    if REQUEST_ID in request:
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
