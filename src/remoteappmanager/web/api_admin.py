"""The admin REST API under ``{svc}api/v1/admin/``: users, applications, grants, containers."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from pydantic import BaseModel

from remoteappmanager.domain.errors import InvalidRequest, NotFound
from remoteappmanager.domain.models import Grant, GroupGrant
from remoteappmanager.domain.naming import is_url_id
from remoteappmanager.domain.sessions import Session
from remoteappmanager.services.activity import SessionTimes
from remoteappmanager.services.admin import Administration
from remoteappmanager.web import paging
from remoteappmanager.web.api import (
    ApiOperation,
    ApiRegistry,
    Handler,
    PathParameter,
    QueryField,
    QueryParameter,
    json_response,
    parse_body,
    parse_query_json,
)
from remoteappmanager.web.api_models import (
    MAPPING_ID,
    ROW_ID,
    URL_ID,
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
from remoteappmanager.web.auth import require_admin, signed_in_user
from remoteappmanager.web.keys import ADMIN, APPLICATIONS, URLS

ADMIN_PATH = "v1/admin/"
USERS_PATH = ADMIN_PATH + "users/"
APPLICATIONS_PATH = ADMIN_PATH + "applications/"
ACCOUNTING_PATH = ADMIN_PATH + "accounting/"
CONTAINERS_PATH = ADMIN_PATH + "containers/"
STATS_PATH = ADMIN_PATH + "stats/"
FILTER_EXAMPLE = '{"user_id": "<id>"} or {"group": "<hub group>"}'
_TAG = "admin"

_ROW_ID_RE = re.compile(ROW_ID.pattern)
_MAPPING_ID_RE = re.compile(MAPPING_ID.pattern)


def _admin(request: web.Request) -> Administration:
    return request.app[ADMIN]


def _actor(request: web.Request) -> str:
    return signed_in_user(request).name


def _created(request: web.Request, collection: str, identifier: object) -> web.Response:
    return web.Response(
        status=201, headers={"Location": f"{request.app[URLS].api}{collection}{identifier}/"}
    )


def _no_content() -> web.Response:
    return web.Response(status=204)


def _path_part(request: web.Request, key: str, valid: Callable[[str], object], message: str) -> str:
    # Checked before any service call, so a malformed id is a 400 and never a lookup.
    raw = request.match_info[key]
    if not valid(raw):
        raise InvalidRequest(message)
    return raw


def _row_id(request: web.Request, what: str) -> int:
    return int(_path_part(request, "id", _ROW_ID_RE.match, f"a {what} id is a number"))


def _mapping_id(request: web.Request) -> str:
    return _path_part(
        request,
        "mapping_id",
        _MAPPING_ID_RE.match,
        "a mapping id is made of letters, digits, '-' and '_'",
    )


def _url_id(request: web.Request) -> str:
    return _path_part(
        request,
        "url_id",
        is_url_id,
        "a container's url id is made of lower-case letters and digits",
    )


# ------------------------------------------------------------------------------ users
@require_admin
async def list_users(request: web.Request) -> web.StreamResponse:
    limit, offset = paging.optional_paging(request)
    contains = paging.text(request, "name")
    if limit is None and offset == 0 and contains is None:
        users = await _admin(request).list_users()
        return json_response(AdminUserList.of(users, key=lambda u: str(u.id), item=AdminUserOut.of))
    total, page = await _admin(request).users_page(
        contains=contains, limit=limit or paging.MAX_OFFSET, offset=offset
    )
    return json_response(
        AdminUserList.page(
            page, key=lambda u: str(u.id), item=AdminUserOut.of, total=total, offset=offset
        )
    )


@require_admin
async def get_user(request: web.Request) -> web.StreamResponse:
    user = await _admin(request).get_user(_row_id(request, "user"))
    return json_response(AdminUserOut.of(user))


@require_admin
async def create_user(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, AdminUserCreate)
    user = await _admin(request).create_user(wanted.name, actor=_actor(request))
    return _created(request, USERS_PATH, user.id)


@require_admin
async def delete_user(request: web.Request) -> web.StreamResponse:
    await _admin(request).remove_user(_row_id(request, "user"), actor=_actor(request))
    return _no_content()


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
    application = await _admin(request).create_application(wanted.image_name, actor=_actor(request))
    return _created(request, APPLICATIONS_PATH, application.id)


@require_admin
async def delete_application(request: web.Request) -> web.StreamResponse:
    await _admin(request).remove_application(_row_id(request, "application"), actor=_actor(request))
    return _no_content()


# ------------------------------------------------------------------------------ grants
@require_admin
async def list_grants(request: web.Request) -> web.StreamResponse:
    limit, offset = paging.optional_paging(request)
    if "filter" not in request.query:
        total, page = await _admin(request).grants_page(
            limit=limit or paging.DEFAULT_LIMIT, offset=offset
        )
        return json_response(
            AdminGrantList.page(
                page, key=lambda g: g.mapping_id, item=AdminGrantOut.of, total=total, offset=offset
            )
        )
    wanted = parse_query_json(request, "filter", AdminGrantFilter, example=FILTER_EXAMPLE)
    found: Sequence[Grant | GroupGrant]
    if wanted.group is not None:
        found = await _admin(request).group_grants(wanted.group)
    else:
        assert wanted.user_id is not None
        found = (await _admin(request).grants_of(wanted.user_id)).grants
    end = None if limit is None else offset + limit
    shown: list[Grant | GroupGrant] = list(found[offset:end])
    return json_response(
        AdminGrantList.page(
            shown,
            key=_grant_key,
            item=AdminGrantOut.of,
            total=len(found),
            offset=offset,
        )
    )


def _grant_key(grant: Grant | GroupGrant) -> str:
    return grant.mapping_id


@require_admin
async def create_grant(request: web.Request) -> web.StreamResponse:
    wanted = await parse_body(request, AdminGrantCreate)
    admin = _admin(request)
    granted: Grant | GroupGrant
    if wanted.group is not None:
        granted = await admin.grant_group(
            wanted.group, wanted.application(), wanted.policy(), actor=_actor(request)
        )
    else:
        assert wanted.user_id is not None
        granted = await admin.grant(
            wanted.user_id, wanted.application(), wanted.policy(), actor=_actor(request)
        )
    return _created(request, ACCOUNTING_PATH, granted.mapping_id)


@require_admin
async def get_grant(request: web.Request) -> web.StreamResponse:
    admin, mapping_id = _admin(request), _mapping_id(request)
    try:
        return json_response(AdminGrantOut.of(await admin.get_grant(mapping_id)))
    except NotFound:
        return json_response(AdminGrantOut.of(await admin.get_group_grant(mapping_id)))


@require_admin
async def delete_grant(request: web.Request) -> web.StreamResponse:
    admin, mapping_id = _admin(request), _mapping_id(request)
    try:
        await admin.get_grant(mapping_id)
    except NotFound:
        await admin.revoke_group(mapping_id, actor=_actor(request))
    else:
        await admin.revoke(mapping_id, actor=_actor(request))
    return _no_content()


# ------------------------------------------------------------------------------ containers
@require_admin
async def list_containers(request: web.Request) -> web.StreamResponse:
    admin = _admin(request)
    limit, offset = paging.optional_paging(request)
    total, found = await admin.sessions_page(
        user=paging.text(request, "user"), limit=limit, offset=offset
    )
    times = await _session_times(request, found)
    return json_response(
        AdminContainerList.page(
            found,
            key=lambda s: s.url_id,
            item=lambda s: AdminContainerOut.of(s, admin.realm, times.get(s.url_id)),
            total=total,
            offset=offset,
        )
    )


async def _session_times(
    request: web.Request, sessions: Sequence[Session]
) -> dict[str, SessionTimes]:
    return await request.app[APPLICATIONS].session_times(None, sessions)


@require_admin
async def get_container(request: web.Request) -> web.StreamResponse:
    admin = _admin(request)
    found = await admin.get_session(_url_id(request))
    times = await _session_times(request, [found])
    return json_response(AdminContainerOut.of(found, admin.realm, times.get(found.url_id)))


@require_admin
async def delete_container(request: web.Request) -> web.StreamResponse:
    await _admin(request).stop_session(_url_id(request), actor=_actor(request))
    return _no_content()


@require_admin
async def get_stats(request: web.Request) -> web.StreamResponse:
    return json_response(AdminStatsOut.of(await _admin(request).statistics()))


# ------------------------------------------------------------------------------ routes
_ADMINS = (401, 403)
# What each kind of admin route may answer besides success; the OpenAPI document lists them.
_READ_ALL_ERRORS = (*_ADMINS, 503)
_LIST_ERRORS = (400, *_ADMINS, 503)
_ALL_BY_DEFAULT = (
    "Without `limit` every entry is listed (from `offset`), as the original did; `total` "
    "counts every match, `offset` says where the page starts."
)
_READ_ONE_ERRORS = (400, *_ADMINS, 404, 503)
_CREATE_ERRORS = (400, *_ADMINS, 409, 503)
_DELETE_ERRORS = (400, *_ADMINS, 404, 409, 503)
_NEW_ENTRY = {"Location": "The new entry's URL (ends in `<id>/`)."}


def _get(
    path: str,
    handler: Handler,
    operation_id: str,
    summary: str,
    answer: type[BaseModel],
    *,
    errors: tuple[int, ...] = _READ_ONE_ERRORS,
    query: Mapping[str, QueryParameter] | None = None,
    query_fields: Mapping[str, QueryField] | None = None,
    description: str = "",
) -> ApiOperation:
    return ApiOperation(
        "GET",
        path,
        handler,
        operation_id=operation_id,
        summary=summary,
        description=description,
        tag=_TAG,
        query=query or {},
        query_fields=query_fields or {},
        path_parameters=_placeholders(path),
        responses={200: answer},
        errors=errors,
    )


def _post(
    path: str,
    handler: Handler,
    operation_id: str,
    summary: str,
    body: type[BaseModel],
    *,
    description: str = "",
    errors: tuple[int, ...] = _CREATE_ERRORS,
    location: Mapping[str, str] = _NEW_ENTRY,
) -> ApiOperation:
    return ApiOperation(
        "POST",
        path,
        handler,
        operation_id=operation_id,
        summary=summary,
        description=description,
        tag=_TAG,
        request=body,
        path_parameters=_placeholders(path),
        responses={201: None},
        headers={201: location},
        errors=errors,
    )


def _delete(
    path: str, handler: Handler, operation_id: str, summary: str, *, description: str = ""
) -> ApiOperation:
    return ApiOperation(
        "DELETE",
        path,
        handler,
        operation_id=operation_id,
        summary=summary,
        description=description,
        tag=_TAG,
        path_parameters=_placeholders(path),
        responses={204: None},
        errors=_DELETE_ERRORS,
    )


# Each placeholder of the admin paths, with the pattern its handler checks (400 otherwise).
_PLACEHOLDERS: Mapping[str, PathParameter] = {
    "id": ROW_ID,
    "mapping_id": MAPPING_ID,
    "url_id": URL_ID,
}


def _placeholders(path: str) -> dict[str, PathParameter]:
    return {
        part[1:-1]: _PLACEHOLDERS[part[1:-1]]
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    }


def register(registry: ApiRegistry) -> None:
    """Declare the admin API's routes."""
    user, application = USERS_PATH + "{id}/", APPLICATIONS_PATH + "{id}/"
    grant, container = ACCOUNTING_PATH + "{mapping_id}/", CONTAINERS_PATH + "{url_id}/"
    for operation in (
        _get(
            USERS_PATH,
            list_users,
            "admin_list_users",
            "Every user, or one page of those whose name contains a text",
            AdminUserList,
            errors=_LIST_ERRORS,
            description=_ALL_BY_DEFAULT,
            query_fields={
                "name": paging.text_field("Only users whose name contains this (any case)."),
                "limit": paging.LIMIT_ALL,
                "offset": paging.OFFSET,
            },
        ),
        _post(
            USERS_PATH,
            create_user,
            "admin_create_user",
            "Add a user (by hub name)",
            AdminUserCreate,
        ),
        _get(user, get_user, "admin_get_user", "One user", AdminUserOut),
        _delete(
            user,
            delete_user,
            "admin_delete_user",
            "Remove a user, their grants, and stop their running applications",
        ),
        _get(
            APPLICATIONS_PATH,
            list_applications,
            "admin_list_applications",
            "Every registered image, with what the engine says of it",
            AdminApplicationList,
            errors=_READ_ALL_ERRORS,
        ),
        _post(
            APPLICATIONS_PATH,
            create_application,
            "admin_create_application",
            "Register a Docker image",
            AdminApplicationCreate,
            description="The image need not be on the engine yet (the list says whether it "
            "is); it is never pulled.",
        ),
        _get(
            application,
            get_application,
            "admin_get_application",
            "One registered image",
            AdminApplicationOut,
        ),
        _delete(
            application,
            delete_application,
            "admin_delete_application",
            "Remove an application, its grants, and stop what runs under them",
            description="Running containers of its grants are stopped first; if one cannot "
            "be stopped, nothing is removed (409 or 503) and the call may be repeated.",
        ),
        _get(
            ACCOUNTING_PATH,
            list_grants,
            "admin_list_grants",
            "One user's grants, or one page of everyone's",
            AdminGrantList,
            description="With `filter`, the user's grants (every one without `limit`); "
            f"without it, everyone's by user, application and mapping id, "
            f"{paging.DEFAULT_LIMIT} at a time unless `limit` says otherwise.",
            query={
                "filter": QueryParameter(
                    f"Whose grants, as JSON: {FILTER_EXAMPLE}", AdminGrantFilter, required=False
                )
            },
            query_fields={"limit": paging.LIMIT_ALL, "offset": paging.OFFSET},
        ),
        _post(
            ACCOUNTING_PATH,
            create_grant,
            "admin_create_grant",
            "Let a user, or every member of a hub group, run an application under a policy",
            AdminGrantCreate,
            description="Exactly one of `user_id` and `group` (400 otherwise). Idempotent: "
            "the same grant again answers 201 with the same `Location` (the same mapping id).",
            # A grant names a user and an application that must exist; it is never a duplicate.
            errors=_READ_ONE_ERRORS,
            location={"Location": "The grant's URL (ends in `<mapping_id>/`)."},
        ),
        _get(grant, get_grant, "admin_get_grant", "One grant", AdminGrantOut),
        _delete(
            grant, delete_grant, "admin_delete_grant", "Revoke a grant, and stop what runs under it"
        ),
        _get(
            CONTAINERS_PATH,
            list_containers,
            "admin_list_containers",
            "Every user's running applications in this realm (or one user's)",
            AdminContainerList,
            errors=_LIST_ERRORS,
            description=_ALL_BY_DEFAULT,
            query_fields={
                "user": paging.text_field("Only this user's (their exact name)."),
                "limit": paging.LIMIT_ALL,
                "offset": paging.OFFSET,
            },
        ),
        _get(
            container,
            get_container,
            "admin_get_container",
            "Anybody's running application",
            AdminContainerOut,
        ),
        _delete(
            container,
            delete_container,
            "admin_delete_container",
            "Stop anybody's running application",
        ),
        _get(
            STATS_PATH,
            get_stats,
            "admin_get_stats",
            "Counts of users, applications and running containers",
            AdminStatsOut,
            errors=_READ_ALL_ERRORS,
        ),
    ):
        registry.add(operation)
