"""The user REST API under ``{svc}api/v1/``: my applications (grants) and my containers."""

from __future__ import annotations

import structlog
from aiohttp import web

from remoteappmanager.domain.errors import NotFound, Unavailable
from remoteappmanager.domain.naming import is_url_id
from remoteappmanager.services.access import AuthenticatedUser
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
from remoteappmanager.web.keys import APPLICATION_LISTINGS, APPLICATIONS, DEPS, SESSIONS, URLS
from remoteappmanager.web.pages import whoami

log = structlog.get_logger(__name__)

USER_PATH = "v1/user"
APPLICATIONS_PATH = "v1/applications/"
CONTAINERS_PATH = "v1/containers/"
_TAG = "user"


def container_location(request: web.Request, url_id: str) -> str:
    """The REST URL of container ``url_id`` (the ``Location`` of a create)."""
    return f"{request.app[URLS].api}{CONTAINERS_PATH}{url_id}/"


def _sessions(request: web.Request) -> Sessions:
    return request.app[SESSIONS]


def _applications(request: web.Request) -> Applications:
    return request.app[APPLICATIONS]


def _application_out(request: web.Request, application: UserApplication) -> ApplicationOut:
    sessions = _sessions(request)
    return ApplicationOut.of(application, sessions.realm, sessions.default_limits)


async def _stop_outside_groups(request: web.Request, user: AuthenticatedUser) -> None:
    """End the sessions the user started through a hub group they have left since."""
    try:
        await _sessions(request).stop_outside_groups(user.name, user.groups)
    except Unavailable as exc:
        # The listing answers (or fails) on its own; the next request tries again.
        log.warning("api.group_stop_failed", user=user.name, error=exc.message)


# ------------------------------------------------------------------------------ handlers
@require_user
async def list_applications(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    await _stop_outside_groups(request, user)
    found = await _applications(request).list_for(user.name, user.groups)
    realm = _sessions(request).realm
    defaults = _sessions(request).default_limits
    return request.app[APPLICATION_LISTINGS].response(
        request,
        user.name,
        found,
        lambda applications: ApplicationList.of(
            applications,
            key=lambda a: a.mapping_id,
            item=lambda a: ApplicationOut.of(a, realm, defaults),
        ),
    )


@require_user
async def get_application(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    found = await _applications(request).get_for(
        user.name, request.match_info["mapping_id"], user.groups
    )
    return json_response(_application_out(request, found))


@require_user
async def list_containers(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    sessions = _sessions(request)
    await _stop_outside_groups(request, user)
    found = await sessions.list_for_user(user.name)
    times = await _applications(request).session_times(user.name, found, user.groups)
    return json_response(
        ContainerList.of(
            found,
            key=lambda s: s.url_id,
            item=lambda s: ContainerOut.of(s, sessions.realm, times.get(s.url_id)),
        )
    )


@require_user
async def create_container(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    wanted = await parse_body(request, ContainerCreate)
    session = await _sessions(request).start_for(
        user.name, wanted.mapping_id, wanted.configurable_values(), user.groups
    )
    return web.Response(
        status=201, headers={"Location": container_location(request, session.url_id)}
    )


@require_user
async def get_container(request: web.Request) -> web.StreamResponse:
    user = signed_in_user(request)
    sessions = _sessions(request)
    url_id = request.match_info["url_id"]
    try:
        found = await sessions.get(user.name, url_id)
    except NotFound:
        # Gone: the user is told why it ended, as long as that is remembered.
        record = None
        if sessions.stop_log is not None and is_url_id(url_id):
            record = await sessions.stop_log.stop_of(user.name, url_id)
        if record is None:
            raise
        return json_response(ContainerOut.stopped(record, sessions.realm))
    times = await _applications(request).session_times(user.name, [found], user.groups)
    return json_response(ContainerOut.of(found, sessions.realm, times.get(found.url_id)))


@require_user
async def container_activity(request: web.Request) -> web.StreamResponse:
    """The user is still there ("Keep working"): counts as client input."""
    user = signed_in_user(request)
    sessions = _sessions(request)
    found = await sessions.get(user.name, request.match_info["url_id"])
    request.app[DEPS].activity.client_input(found.url_id)
    times = await _applications(request).session_times(user.name, [found], user.groups)
    return json_response(ContainerOut.of(found, sessions.realm, times.get(found.url_id)))


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
            summary="One of my applications: running, or why it stopped",
            description="A session that ended in the last days answers with `state` "
            "`stopped` and its `stop_reason`.",
            tag=_TAG,
            path_parameters={"url_id": URL_ID},
            responses={200: ContainerOut},
            errors=(*signed_in, 404, 503),
        ),
        ApiOperation(
            "POST",
            CONTAINERS_PATH + "{url_id}/activity",
            container_activity,
            operation_id="container_activity",
            summary="Keep one of my running applications from being stopped as idle",
            description="Counts as client input: the idle deadline starts again. Answers "
            "the container with its new `expires_at`.",
            tag=_TAG,
            path_parameters={"url_id": URL_ID},
            responses={200: ContainerOut},
            errors=(*signed_in, 403, 404, 503),
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
