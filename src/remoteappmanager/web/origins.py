"""Which origin answers what: the service never answers on an application's own host."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.domain.errors import NotFound
from remoteappmanager.domain.routing import is_any_app_host
from remoteappmanager.web.keys import SETTINGS


@web.middleware
async def app_hosts_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With applications on hosts of their own, the service's pages, API and sign-in answer
    404 there: the proxy routes by path, so they would otherwise answer on an application's
    origin (without the service's cookies, which belong to its own host)."""
    template = request.app[SETTINGS].app_origin_template
    if template is not None and is_any_app_host(template, request.host):
        raise NotFound("this is an application's address, not the service's")
    return await handler(request)
