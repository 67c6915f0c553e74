"""The user REST API under ``{svc}api/v1/``: my applications (grants) and my containers."""

from __future__ import annotations

from aiohttp import web

from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.services.applications import Applications, UserApplication
from remoteappmanager.services.sessions import Sessions
from remoteappmanager.web.api import ApiOperation, ApiRegistry, json_response, parse_body
from remoteappmanager.web.api_models import (
    MAPPING_ID,
    URL_ID,
    ApplicationList,
    ApplicationOut,
    ContainerCreate,
    ContainerList,
    ContainerOut,
    UserOut,
)
from remoteappmanager.web.auth import require_user, signed_in_user
from remoteappmanager.web.keys import APPLICATION_LISTINGS, APPLICATIONS, SESSIONS, URLS
from remoteappmanager.web.pages import whoami

USER_PATH = "v1/user"
APPLICATIONS_PATH = "v1/applications/"
CONTAINERS_PATH = "v1/containers/"
_TAG = "user"


def container_location(request: web.Request, url_id: str) -> str:
    """The REST URL of container ``url_id`` (the ``Location`` of a create)."""
    return f"{request.app[URLS].api}{CONTAINERS_PATH}{url_id}/"


def _sessions(request: web.Request) -> Sessions:
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        raise Unavailable("this service is not connected to a container engine")
    return sessions


def _applications(request: web.Request) -> Applications:
    applications = request.app.get(APPLICATIONS)
    if applications is None:
        raise Unavailable("this service is not connected to a container engine")
    return applications


def _application_out(request: web.Request, application: UserApplication) -> ApplicationOut:
    return ApplicationOut.of(application, _sessions(request).realm)


# ------------------------------------------------------------------------------ handlers
@require_user
async def list_applications(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    found = await _applications(request).list_for(user.name)
    realm = _sessions(request).realm
    return request.app[APPLICATION_LISTINGS].response(
        request,
        user.name,
        found,
        lambda applications: ApplicationList.of(
            applications, key=lambda a: a.mapping_id, item=lambda a: ApplicationOut.of(a, realm)
        ),
    )


@require_user
async def get_application(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    found = await _applications(request).get_for(user.name, request.match_info["mapping_id"])
    return json_response(_application_out(request, found))


@require_user
async def list_containers(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    sessions = _sessions(request)
    found = await sessions.list_for_user(user.name)
    return json_response(
        ContainerList.of(
            found, key=lambda s: s.url_id, item=lambda s: ContainerOut.of(s, sessions.realm)
        )
    )


@require_user
async def create_container(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    wanted = await parse_body(request, ContainerCreate)
    session = await _sessions(request).start_for(
        user.name, wanted.mapping_id, wanted.configurable_values()
    )
    return web.Response(
        status=201, headers={"Location": container_location(request, session.url_id)}
    )


@require_user
async def get_container(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    sessions = _sessions(request)
    found = await sessions.get(user.name, request.match_info["url_id"])
    return json_response(ContainerOut.of(found, sessions.realm))


@require_user
async def delete_container(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    await _sessions(request).stop(user.name, request.match_info["url_id"])
    return web.Response(status=204)


# ------------------------------------------------------------------------------ routes
def register(registry: ApiRegistry) -> None:
    """Declare the user API's routes.

    A malformed mapping or url id names nothing of the caller's: it is a 404 like any other
    unknown one (the patterns in the document say what an id can look like).
    """
    signed_in = (401,)
    for operation in (
        ApiOperation(
            "GET",
            USER_PATH,
            whoami,
            operation_id="api_whoami",
            summary="Who I am (name, admin, hub groups)",
            tag=_TAG,
            responses={200: UserOut},
            errors=(*signed_in, 503),
        ),
        ApiOperation(
            "GET",
            APPLICATIONS_PATH,
            list_applications,
            operation_id="list_applications",
            summary="My applications (grants), with image, policy and running container",
            tag=_TAG,
            responses={200: ApplicationList},
            errors=(*signed_in, 503),
        ),
        ApiOperation(
            "GET",
            APPLICATIONS_PATH + "{mapping_id}/",
            get_application,
            operation_id="get_application",
            summary="One of my applications",
            tag=_TAG,
            path_parameters={"mapping_id": MAPPING_ID},
            responses={200: ApplicationOut},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "GET",
            CONTAINERS_PATH,
            list_containers,
            operation_id="list_containers",
            summary="My running applications",
            tag=_TAG,
            responses={200: ContainerList},
            errors=(*signed_in, 503),
        ),
        ApiOperation(
            "POST",
            CONTAINERS_PATH,
            create_container,
            operation_id="create_container",
            summary="Start the application of one of my grants",
            description="Answers once the application serves at its URL path. Starting a "
            "grant that runs already replaces its container; a start while another start or "
            "stop of the same grant is under way is refused (409). One user may ask for "
            "`REMOTEAPP_START_RATE_PER_MINUTE` starts a minute; beyond it 429 with "
            "`Retry-After`.",
            tag=_TAG,
            request=ContainerCreate,
            responses={201: None},
            headers={
                201: {"Location": "The new container's URL (ends in `<url_id>/`)."},
                429: {"Retry-After": "Seconds until this user may start again."},
            },
            errors=(400, *signed_in, 403, 404, 409, 429, 503),
        ),
        ApiOperation(
            "GET",
            CONTAINERS_PATH + "{url_id}/",
            get_container,
            operation_id="get_container",
            summary="One of my running applications",
            tag=_TAG,
            path_parameters={"url_id": URL_ID},
            responses={200: ContainerOut},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "DELETE",
            CONTAINERS_PATH + "{url_id}/",
            delete_container,
            operation_id="delete_container",
            summary="Stop one of my running applications",
            tag=_TAG,
            path_parameters={"url_id": URL_ID},
            responses={204: None},
            errors=(*signed_in, 403, 404, 409, 503),
        ),
    ):
        registry.add(operation)
