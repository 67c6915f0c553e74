"""The pages under ``{svc}``: for now a placeholder home page, and who-am-I for API clients."""

from __future__ import annotations

import html

from aiohttp import web

from remoteappmanager.web.auth import require_user, signed_in_user
from remoteappmanager.web.keys import URLS

_HOME = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>SimPhoNy-Remote</title></head>
<body>
<p>Signed in as <strong id="user">{name}</strong>{admin}.</p>
<p><a href="{logout}">Sign out</a></p>
</body>
</html>
"""


@require_user
async def home(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    page = _HOME.format(
        name=html.escape(user.name),
        admin=" (administrator)" if user.admin else "",
        logout=html.escape(request.app[URLS].logout),
    )
    response = web.Response(text=page, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@require_user
async def whoami(request: web.Request) -> web.StreamResponse:
    """``GET {svc}api/v1/user``: the caller as we see them (name, admin, groups)."""
    user = signed_in_user(request)
    return web.json_response(
        {"name": user.name, "admin": user.admin, "groups": sorted(user.groups)}
    )


async def add_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[URLS].prefix)
