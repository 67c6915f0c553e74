"""Sharing a running application: ``{svc}api/v1/containers/<url_id>/shares/`` and
``.../control``."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from remoteappmanager.domain.errors import NotFound
from remoteappmanager.domain.models import Grant
from remoteappmanager.domain.shares import ShareMode
from remoteappmanager.services.access import AuthenticatedUser
from remoteappmanager.services.shares import ControlAction, Shares, check_may_search
from remoteappmanager.web.api import (
    ApiOperation,
    ApiRegistry,
    QueryParameter,
    json_response,
    parse_body,
    parse_query_json,
)
from remoteappmanager.web.api_models import (
    _ROW_ID_RE,
    SHARE_ID,
    URL_ID,
    ConnectedOut,
    ControlIn,
    ControlOut,
    DirectoryOut,
    DirectoryQuery,
    ShareCreate,
    ShareList,
    ShareOut,
)
from remoteappmanager.web.auth import require_user, signed_in_user
from remoteappmanager.web.keys import APPLICATIONS, GATE, IDENTITY, SHARES, URLS

SHARES_PATH = "v1/containers/{url_id}/shares/"
DIRECTORY_PATH = "v1/directory"
DIRECTORY_LIMIT = 20
CONTROL_PATH = "v1/containers/{url_id}/control"
_TAG = "sharing"


def _shares(request: web.Request) -> Shares:
    return request.app[SHARES]


def _acting(request: web.Request) -> tuple[Shares, AuthenticatedUser, str]:
    """What every sharing route acts with: the service, who asks, and the session's url id
    (whether they may is the service's to check)."""
    return _shares(request), signed_in_user(request), request.match_info["url_id"]


def _connected(request: web.Request, url_id: str, owner: str) -> list[ConnectedOut]:
    gate = request.app.get(GATE)
    if gate is None:
        return []
    return [
        ConnectedOut.model_construct(
            user=user, mode=None if mode is None else mode.value, input=allowed
        )
        for user, mode, allowed in gate.connected(url_id)
        if user != owner
    ]


def _share_id(request: web.Request) -> int:
    text = request.match_info["share_id"]
    if not _ROW_ID_RE.match(text):
        raise NotFound("there is no such share")
    return int(text)


# ------------------------------------------------------------------------------ handlers
@require_user
async def list_shares(request: web.Request) -> web.StreamResponse:
    shares_of, user, url_id = _acting(request)
    session, shares = await shares_of.list(user, url_id)
    listing = ShareList.of(shares, key=lambda share: str(share.id), item=ShareOut.of)
    return json_response(
        ShareList.model_construct(
            total=listing.total,
            items=listing.items,
            identifiers=listing.identifiers,
            connected=_connected(request, url_id, session.user),
        )
    )


@require_user
async def create_share(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, ShareCreate)
    shares, user, url_id = _acting(request)
    kind, subject = wanted.subject()
    share = await shares.create(user, url_id, kind, subject, ShareMode(wanted.mode))
    location = f"{request.app[URLS].api}v1/containers/{url_id}/shares/{share.id}/"
    return web.Response(status=201, headers={"Location": location})


@require_user
async def delete_share(request: web.Request) -> web.StreamResponse:
    shares, user, url_id = _acting(request)
    await shares.delete(user, url_id, _share_id(request))
    return web.Response(status=204)


@require_user
async def get_control(request: web.Request) -> web.StreamResponse:
    shares, user, url_id = _acting(request)
    view = await shares.control_view(user, url_id)
    return json_response(ControlOut.of(view))


@require_user
async def change_control(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, ControlIn)
    shares, user, url_id = _acting(request)
    view = await shares.control(user, url_id, ControlAction(wanted.action), wanted.user)
    return json_response(ControlOut.of(view))


@require_user
async def search_directory(request: web.Request) -> web.StreamResponse:
    wanted = parse_query_json(request, "query", DirectoryQuery, example='{"prefix": "al"}')
    user = signed_in_user(request)
    applications = request.app[APPLICATIONS]

    async def grants() -> Sequence[Grant]:
        return await applications.grants_of(user.name, user.groups)

    await check_may_search(user, _shares(request).rules, grants)
    found = await request.app[IDENTITY].directory(wanted.prefix, DIRECTORY_LIMIT)
    return json_response(
        DirectoryOut.model_construct(users=list(found.users), groups=list(found.groups))
    )


# ------------------------------------------------------------------------------ routes
def register(registry: ApiRegistry) -> None:
    """Declare the sharing routes (owner and admins; ``control`` for viewers too)."""
    signed_in = (401,)
    url_id = {"url_id": URL_ID}
    for operation in (
        ApiOperation(
            "GET",
            SHARES_PATH,
            list_shares,
            operation_id="list_shares",
            summary="The shares of one of my running applications, and who is connected",
            tag=_TAG,
            path_parameters=url_id,
            responses={200: ShareList},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "POST",
            SHARES_PATH,
            create_share,
            operation_id="create_share",
            summary="Share one of my running applications",
            description="With a hub `user`, a hub `group`, or `link: true` (anyone signed in "
            "who holds the application's address), in `mode` `view` (the default: the "
            "viewer's keyboard, mouse and clipboard never reach the application) or "
            "`control`. The grant's policy must allow viewing, and the site may forbid "
            "sharing, link shares or control (403). Sharing with the same one again changes "
            "that share's mode and answers its `Location`.",
            tag=_TAG,
            path_parameters=url_id,
            request=ShareCreate,
            responses={201: None},
            headers={201: {"Location": "The share's URL (ends in `<id>/`)."}},
            errors=(400, *signed_in, 403, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            SHARES_PATH + "{share_id}/",
            delete_share,
            operation_id="delete_share",
            summary="End a share; the connections it let in are closed within seconds",
            tag=_TAG,
            path_parameters={**url_id, "share_id": SHARE_ID},
            responses={204: None},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "GET",
            CONTROL_PATH,
            get_control,
            operation_id="get_control",
            summary="Who controls a shared application, and whether my input gets through",
            tag=_TAG,
            path_parameters=url_id,
            responses={200: ControlOut},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "POST",
            CONTROL_PATH,
            change_control,
            operation_id="change_control",
            summary="Ask for, give, refuse, take back or release control of a shared application",
            description="Viewers `request` and `release`; the owner and admins `give` (to "
            "`user`), `refuse` (`user`'s request), `take` (no viewer has input), `release` "
            "(viewers' input as their shares' modes say) or let `everyone` control. Only one "
            "viewer controls at a time unless the owner chose `everyone`. Answers the new "
            "state; viewers' open connections follow it at once.",
            tag=_TAG,
            path_parameters=url_id,
            request=ControlIn,
            responses={200: ControlOut},
            errors=(400, *signed_in, 403, 404, 503),
        ),
        ApiOperation(
            "GET",
            DIRECTORY_PATH,
            search_directory,
            operation_id="search_directory",
            summary="Hub users and groups to share with, by the start of their names",
            description="For admins and for users holding a grant whose policy allows "
            "sharing (`allow_view`); anyone else, and everyone while sharing is turned off "
            f"on the site, gets 403. At most {DIRECTORY_LIMIT} users and {DIRECTORY_LIMIT} groups.",
            tag=_TAG,
            query={
                "query": QueryParameter(
                    'What to look for, as JSON: {"prefix": "al"}', DirectoryQuery
                )
            },
            responses={200: DirectoryOut},
            errors=(400, *signed_in, 403, 503),
        ),
    ):
        registry.add(operation)
