"""The admin REST API under ``{svc}api/v1/admin/``: users, applications, grants, containers."""

from __future__ import annotations

import re

from aiohttp import web

from remoteappmanager.domain.errors import InvalidRequest
from remoteappmanager.domain.naming import is_url_id
from remoteappmanager.services.admin import Administration
from remoteappmanager.web.api import (
    ApiOperation,
    ApiRegistry,
    json_response,
    parse_body,
    parse_query_json,
)
from remoteappmanager.web.api_models import (
    AdminApplicationCreate,
    AdminApplicationList,
    AdminApplicationOut,
    AdminContainerList,
    AdminContainerOut,
    AdminGrantCreate,
    AdminGrantFilter,
    AdminGrantList,
    AdminGrantOut,
    AdminStatsOut,
    AdminUserCreate,
    AdminUserList,
    AdminUserOut,
)
from remoteappmanager.web.auth import require_admin
from remoteappmanager.web.keys import ADMIN, URLS

ADMIN_PATH = "v1/admin/"
USERS_PATH = ADMIN_PATH + "users/"
APPLICATIONS_PATH = ADMIN_PATH + "applications/"
ACCOUNTING_PATH = ADMIN_PATH + "accounting/"
CONTAINERS_PATH = ADMIN_PATH + "containers/"
STATS_PATH = ADMIN_PATH + "stats/"
FILTER_EXAMPLE = '{"user_id": "<id>"}'
_TAG = "admin"

# Digits only, and few enough that the id is a number the database could hold.
_ROW_ID_RE = re.compile(r"[0-9]{1,18}")
_MAPPING_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _admin(request: web.Request) -> Administration:
    return request.app[ADMIN]


def _location(request: web.Request, collection: str, identifier: object) -> dict[str, str]:
    return {"Location": f"{request.app[URLS].api}{collection}{identifier}/"}


def _row_id(request: web.Request, what: str) -> int:
    raw = request.match_info["id"]
    if not _ROW_ID_RE.fullmatch(raw):
        raise InvalidRequest(f"a {what} id is a number")
    return int(raw)


def _mapping_id(request: web.Request) -> str:
    raw = request.match_info["mapping_id"]
    if not _MAPPING_ID_RE.fullmatch(raw):
        raise InvalidRequest("a mapping id is made of letters, digits, '-' and '_'")
    return raw


def _url_id(request: web.Request) -> str:
    raw = request.match_info["url_id"]
    if not is_url_id(raw):
        raise InvalidRequest("a container's url id is made of lower-case letters and digits")
    return raw


# ------------------------------------------------------------------------------ users
@require_admin
async def list_users(request: web.Request) -> web.StreamResponse:
    users = await _admin(request).list_users()
    return json_response(AdminUserList.of(users, key=lambda u: str(u.id), item=AdminUserOut.of))


@require_admin
async def get_user(request: web.Request) -> web.StreamResponse:
    user = await _admin(request).get_user(_row_id(request, "user"))
    return json_response(AdminUserOut.of(user))


@require_admin
async def create_user(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, AdminUserCreate)
    user = await _admin(request).create_user(wanted.name)
    return web.Response(status=201, headers=_location(request, USERS_PATH, user.id))


@require_admin
async def delete_user(request: web.Request) -> web.StreamResponse:
    await _admin(request).remove_user(_row_id(request, "user"))
    return web.Response(status=204)


# ------------------------------------------------------------------------------ applications
@require_admin
async def list_applications(request: web.Request) -> web.StreamResponse:
    found = await _admin(request).list_applications()
    return json_response(
        AdminApplicationList.of(
            found, key=lambda a: str(a.application.id), item=AdminApplicationOut.of
        )
    )


@require_admin
async def get_application(request: web.Request) -> web.StreamResponse:
    found = await _admin(request).get_application(_row_id(request, "application"))
    return json_response(AdminApplicationOut.of(found))


@require_admin
async def create_application(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, AdminApplicationCreate)
    application = await _admin(request).create_application(wanted.image_name)
    return web.Response(status=201, headers=_location(request, APPLICATIONS_PATH, application.id))


@require_admin
async def delete_application(request: web.Request) -> web.StreamResponse:
    await _admin(request).remove_application(_row_id(request, "application"))
    return web.Response(status=204)


# ------------------------------------------------------------------------------ grants
@require_admin
async def list_grants(request: web.Request) -> web.StreamResponse:
    wanted = parse_query_json(request, "filter", AdminGrantFilter, example=FILTER_EXAMPLE)
    found = await _admin(request).grants_of(wanted.user_id)
    return json_response(
        AdminGrantList.of(found.grants, key=lambda g: g.mapping_id, item=AdminGrantOut.of)
    )


@require_admin
async def create_grant(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, AdminGrantCreate)
    grant = await _admin(request).grant(wanted.user_id, wanted.application(), wanted.policy())
    return web.Response(status=201, headers=_location(request, ACCOUNTING_PATH, grant.mapping_id))


@require_admin
async def get_grant(request: web.Request) -> web.StreamResponse:
    return json_response(AdminGrantOut.of(await _admin(request).get_grant(_mapping_id(request))))


@require_admin
async def delete_grant(request: web.Request) -> web.StreamResponse:
    await _admin(request).revoke(_mapping_id(request))
    return web.Response(status=204)


# ------------------------------------------------------------------------------ containers
@require_admin
async def list_containers(request: web.Request) -> web.StreamResponse:
    admin = _admin(request)
    found = await admin.list_sessions()
    return json_response(
        AdminContainerList.of(
            found, key=lambda s: s.url_id, item=lambda s: AdminContainerOut.of(s, admin.realm)
        )
    )


@require_admin
async def get_container(request: web.Request) -> web.StreamResponse:
    admin = _admin(request)
    found = await admin.get_session(_url_id(request))
    return json_response(AdminContainerOut.of(found, admin.realm))


@require_admin
async def delete_container(request: web.Request) -> web.StreamResponse:
    await _admin(request).stop_session(_url_id(request))
    return web.Response(status=204)


@require_admin
async def get_stats(request: web.Request) -> web.StreamResponse:
    return json_response(AdminStatsOut.of(await _admin(request).statistics()))


# ------------------------------------------------------------------------------ routes
def register(registry: ApiRegistry) -> None:
    """Declare the admin API's routes."""
    admins = (401, 403)
    created = {201: {"Location": "The new entry's URL (ends in `<id>/`)."}}
    for operation in (
        ApiOperation(
            "GET",
            USERS_PATH,
            list_users,
            operation_id="admin_list_users",
            summary="Every user",
            tag=_TAG,
            responses={200: AdminUserList},
            errors=(*admins, 503),
        ),
        ApiOperation(
            "POST",
            USERS_PATH,
            create_user,
            operation_id="admin_create_user",
            summary="Add a user (by hub name)",
            tag=_TAG,
            request=AdminUserCreate,
            responses={201: None},
            headers=created,
            errors=(400, *admins, 409, 503),
        ),
        ApiOperation(
            "GET",
            USERS_PATH + "{id}/",
            get_user,
            operation_id="admin_get_user",
            summary="One user",
            tag=_TAG,
            responses={200: AdminUserOut},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            USERS_PATH + "{id}/",
            delete_user,
            operation_id="admin_delete_user",
            summary="Remove a user, their grants, and stop their running applications",
            tag=_TAG,
            responses={204: None},
            errors=(400, *admins, 404, 409, 503),
        ),
        ApiOperation(
            "GET",
            APPLICATIONS_PATH,
            list_applications,
            operation_id="admin_list_applications",
            summary="Every registered image, with what the engine says of it",
            tag=_TAG,
            responses={200: AdminApplicationList},
            errors=(*admins, 503),
        ),
        ApiOperation(
            "POST",
            APPLICATIONS_PATH,
            create_application,
            operation_id="admin_create_application",
            summary="Register a Docker image",
            description="The image need not be on the engine yet (the list says whether it "
            "is); it is never pulled.",
            tag=_TAG,
            request=AdminApplicationCreate,
            responses={201: None},
            headers=created,
            errors=(400, *admins, 409, 503),
        ),
        ApiOperation(
            "GET",
            APPLICATIONS_PATH + "{id}/",
            get_application,
            operation_id="admin_get_application",
            summary="One registered image",
            tag=_TAG,
            responses={200: AdminApplicationOut},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            APPLICATIONS_PATH + "{id}/",
            delete_application,
            operation_id="admin_delete_application",
            summary="Remove an application, its grants, and stop what runs under them",
            description="Running containers of its grants are stopped first; if one cannot "
            "be stopped, nothing is removed (409 or 503) and the call may be repeated.",
            tag=_TAG,
            responses={204: None},
            errors=(400, *admins, 404, 409, 503),
        ),
        ApiOperation(
            "GET",
            ACCOUNTING_PATH,
            list_grants,
            operation_id="admin_list_grants",
            summary="One user's grants",
            tag=_TAG,
            query={"filter": f"JSON, required: {FILTER_EXAMPLE}"},
            responses={200: AdminGrantList},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "POST",
            ACCOUNTING_PATH,
            create_grant,
            operation_id="admin_create_grant",
            summary="Let a user run an application under a policy",
            description="Idempotent: the same grant again answers 201 with the same "
            "`Location` (the same mapping id).",
            tag=_TAG,
            request=AdminGrantCreate,
            responses={201: None},
            headers={201: {"Location": "The grant's URL (ends in `<mapping_id>/`)."}},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "GET",
            ACCOUNTING_PATH + "{mapping_id}/",
            get_grant,
            operation_id="admin_get_grant",
            summary="One grant",
            tag=_TAG,
            responses={200: AdminGrantOut},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            ACCOUNTING_PATH + "{mapping_id}/",
            delete_grant,
            operation_id="admin_delete_grant",
            summary="Revoke a grant, and stop what runs under it",
            tag=_TAG,
            responses={204: None},
            errors=(400, *admins, 404, 409, 503),
        ),
        ApiOperation(
            "GET",
            CONTAINERS_PATH,
            list_containers,
            operation_id="admin_list_containers",
            summary="Every user's running applications in this realm",
            tag=_TAG,
            responses={200: AdminContainerList},
            errors=(*admins, 503),
        ),
        ApiOperation(
            "GET",
            CONTAINERS_PATH + "{url_id}/",
            get_container,
            operation_id="admin_get_container",
            summary="Anybody's running application",
            tag=_TAG,
            responses={200: AdminContainerOut},
            errors=(400, *admins, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            CONTAINERS_PATH + "{url_id}/",
            delete_container,
            operation_id="admin_delete_container",
            summary="Stop anybody's running application",
            tag=_TAG,
            responses={204: None},
            errors=(400, *admins, 404, 409, 503),
        ),
        ApiOperation(
            "GET",
            STATS_PATH,
            get_stats,
            operation_id="admin_get_stats",
            summary="Counts of users, applications and running containers",
            tag=_TAG,
            responses={200: AdminStatsOut},
            errors=(*admins, 503),
        ),
    ):
        registry.add(operation)
