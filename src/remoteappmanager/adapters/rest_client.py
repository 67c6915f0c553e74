"""HTTP clients of a SimPhoNy-Remote service's REST API and of JupyterHub's token API (aiohttp)."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from pydantic import BaseModel, ValidationError
from yarl import URL

from remoteappmanager.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteAppError,
    Unable,
    Unauthorized,
)
from remoteappmanager.domain.models import Policy, Volume
from remoteappmanager.ports.remote_api import (
    IssuedToken,
    RemoteApplication,
    RemoteContainer,
    RemoteUser,
    ServiceUnreachable,
)

DEFAULT_TIMEOUT = 120.0
# Connecting takes milliseconds when the server is there; waiting longer only delays the
# message that it is not.
CONNECT_TIMEOUT = 10.0

_ERROR_OF_STATUS: Mapping[int, type[RemoteAppError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}
_URL_ID_RE = re.compile(r"^[a-z0-9]{1,128}$")
_XSRF_FIELD_RE = re.compile(r"""name=["']_xsrf["'][^>]*?value=["']([^"']+)["']""")
_Model = TypeVar("_Model", bound=BaseModel)
_Value = TypeVar("_Value")


# ------------------------------------------------------------------------------ wire shapes
class _Wire(BaseModel):
    """What we read of an answer; fields added by newer servers are ignored."""


class _UserWire(_Wire):
    name: str
    admin: bool = False


class _ContainerWire(_Wire):
    url_id: str
    mapping_id: str
    image_name: str
    urlpath: str
    state: str

    def value(self) -> RemoteContainer:
        return RemoteContainer(
            url_id=self.url_id,
            mapping_id=self.mapping_id,
            image=self.image_name,
            urlpath=self.urlpath,
            state=self.state,
        )


class _ImageWire(_Wire):
    name: str
    ui_name: str
    configurables: list[str]


class _PolicyWire(_Wire):
    app_license: str | None = None
    allow_home: bool = False
    allow_view: bool = False
    allow_common: bool = False
    volume_source: str | None = None
    volume_target: str | None = None
    volume_mode: Literal["ro", "rw"] | None = None
    allow_startup_data: bool = False
    placement: list[str] = []

    def value(self) -> Policy:
        volume = None
        if self.volume_source and self.volume_target and self.volume_mode:
            volume = Volume.of(self.volume_source, self.volume_target, self.volume_mode)
        return Policy(
            app_license=self.app_license,
            allow_home=self.allow_home,
            allow_view=self.allow_view,
            allow_common=self.allow_common,
            volume=volume,
            allow_startup_data=self.allow_startup_data,
            placement=tuple(self.placement),
        )


class _ApplicationWire(_Wire):
    mapping_id: str
    available: bool = True
    image: _ImageWire
    policy: _PolicyWire
    container: _ContainerWire | None = None

    def value(self) -> RemoteApplication:
        return RemoteApplication(
            mapping_id=self.mapping_id,
            image=self.image.name,
            ui_name=self.image.ui_name,
            available=self.available,
            configurables=tuple(self.image.configurables),
            policy=self.policy.value(),
            container=self.container.value() if self.container is not None else None,
        )


class _ApplicationListWire(_Wire):
    items: dict[str, _ApplicationWire]
    identifiers: list[str]


class _ContainerListWire(_Wire):
    items: dict[str, _ContainerWire]
    identifiers: list[str]


class _HubTokenWire(_Wire):
    token: str
    expires_at: datetime | None = None


class _ErrorWire(_Wire):
    message: str


# ------------------------------------------------------------------------------ plumbing
class _Http:
    """One aiohttp session and the translation of its failures into our errors."""

    def __init__(
        self,
        shown_url: str,
        *,
        timeout: float,
        resolver: AbstractResolver | None,
        keep_cookies: bool,
    ) -> None:
        self.shown_url = shown_url
        self.timeout = timeout
        self._client_timeout = aiohttp.ClientTimeout(
            total=timeout, connect=min(timeout, CONNECT_TIMEOUT)
        )
        self._resolver = resolver
        self._keep_cookies = keep_cookies
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=self._resolver) if self._resolver else None
            # The hub's sign-in needs its cookies, kept for 127.0.0.1 too (an "unsafe" jar);
            # the API is token-authenticated and must not pick up any.
            jar: aiohttp.abc.AbstractCookieJar = (
                aiohttp.CookieJar(unsafe=True) if self._keep_cookies else aiohttp.DummyCookieJar()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=jar, timeout=self._client_timeout
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
    ) -> tuple[int, str, Mapping[str, str], bytes]:
        """Status, reason, headers and body; redirects are answers, not followed."""
        try:
            async with self.session().request(
                method,
                url,
                headers=headers,
                json=json,
                data=data,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return response.status, response.reason or "", response.headers, body
        except TimeoutError:
            self.unreachable(f"no answer within {self.timeout:g} s")
        except aiohttp.ClientConnectorDNSError:
            self.unreachable("its host name does not resolve")
        except aiohttp.ClientConnectorCertificateError as exc:
            self.unreachable(f"its TLS certificate is not accepted ({exc.certificate_error})")
        except aiohttp.ClientSSLError:
            self.unreachable("the TLS handshake failed")
        except aiohttp.ClientConnectorError as exc:
            self.unreachable(_os_reason(exc.os_error))
        except aiohttp.ServerDisconnectedError:
            self.unreachable("the server closed the connection")
        except aiohttp.InvalidURL:
            self.unreachable("the URL is not valid")
        except aiohttp.ClientError as exc:
            self.unreachable(type(exc).__name__)

    def unreachable(self, reason: str) -> NoReturn:
        raise ServiceUnreachable(f"cannot reach {self.shown_url}: {reason}")

    def error(self, status: int, reason: str, body: bytes) -> RemoteAppError:
        """The error for a failed answer (the API's message if it sent one)."""
        phrase = reason or _status_phrase(status)
        message = _api_message(body) or f"{self.shown_url} answered {status} {phrase}".rstrip()
        kind = _ERROR_OF_STATUS.get(status)
        if kind is None:
            kind = InvalidRequest if 400 <= status < 500 else Unable
        return kind(message)

    def parse(self, model: type[_Model], body: bytes, value: Callable[[_Model], _Value]) -> _Value:
        """``body`` read as ``model`` and turned into our ``value``; ``Unable`` if it is not."""
        try:
            return value(model.model_validate_json(body))
        except (ValidationError, InvalidRequest):
            raise Unable(
                f"{self.shown_url} answered something other than the SimPhoNy-Remote API"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _api_message(body: bytes) -> str | None:
    """The ``message`` of an API error body (ours, or JupyterHub's), if it is one."""
    try:
        parsed = _ErrorWire.model_validate_json(body)
    except ValidationError:
        return None
    return " ".join(parsed.message.split()) or None


def _os_reason(error: OSError) -> str:
    if error.errno is not None:
        if error.errno == errno.ECONNREFUSED:
            return "connection refused"
        return os.strerror(error.errno).lower()
    return error.strerror or type(error).__name__


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# ------------------------------------------------------------------------------ the service
class AiohttpRemoteAppClient:
    """``RemoteAppClient`` over aiohttp: ``Authorization: token <token>`` on every request.

    ``service_url`` is the service's public URL (``.../services/remoteapp/``); ``timeout``
    bounds each request, a start included (which lasts until the application serves).
    ``resolver`` replaces the DNS resolver (tests).
    """

    def __init__(
        self,
        service_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._service_url = service_url if service_url.endswith("/") else service_url + "/"
        self._api = self._service_url + "api/v1/"
        self._headers = {"Authorization": f"token {token}", "Accept": "application/json"}
        self._http = _Http(
            self._service_url, timeout=timeout, resolver=resolver, keep_cookies=False
        )

    async def whoami(self) -> RemoteUser:
        return self._http.parse(
            _UserWire, await self._get("user"), lambda user: RemoteUser(user.name, user.admin)
        )

    async def list_applications(self) -> list[RemoteApplication]:
        return self._http.parse(
            _ApplicationListWire, await self._get("applications/"), _listed_applications
        )

    async def get_application(self, mapping_id: str) -> RemoteApplication:
        body = await self._get(f"applications/{_segment(mapping_id)}/")
        return self._http.parse(_ApplicationWire, body, _ApplicationWire.value)

    async def list_containers(self) -> list[RemoteContainer]:
        return self._http.parse(
            _ContainerListWire, await self._get("containers/"), _listed_containers
        )

    async def start_container(
        self, mapping_id: str, configurables: Mapping[str, str]
    ) -> RemoteContainer:
        payload = {
            "mapping_id": mapping_id,
            "configurables": {name: {name: value} for name, value in configurables.items()},
        }
        status, reason, headers, body = await self._http.request(
            "POST", self._api + "containers/", headers=self._headers, json=payload
        )
        if status != 201:
            raise self._failure(status, reason, body)
        # The id is read from the Location and fetched from our own base URL: the token
        # never follows a Location to wherever it points.
        url_id = urlsplit(headers.get("Location", "")).path.rstrip("/").rpartition("/")[2]
        if not _URL_ID_RE.match(url_id):
            raise Unable(f"{self._service_url} started the application but did not say where")
        body = await self._get(f"containers/{url_id}/")
        return self._http.parse(_ContainerWire, body, _ContainerWire.value)

    async def stop_container(self, url_id: str) -> None:
        status, reason, _headers, body = await self._http.request(
            "DELETE", self._api + f"containers/{_segment(url_id)}/", headers=self._headers
        )
        if status not in (200, 204):
            raise self._failure(status, reason, body)

    async def close(self) -> None:
        await self._http.close()

    async def _get(self, path: str) -> bytes:
        status, reason, _headers, body = await self._http.request(
            "GET", self._api + path, headers=self._headers
        )
        if status != 200:
            raise self._failure(status, reason, body)
        return body

    def _failure(self, status: int, reason: str, body: bytes) -> RemoteAppError:
        if 300 <= status < 400:
            # The hub sends what it does not serve to its login page: not our API.
            return Unable(f"{self._service_url} redirects elsewhere: it is not the service's URL")
        return self._http.error(status, reason, body)


def _listed_applications(listing: _ApplicationListWire) -> list[RemoteApplication]:
    return [listing.items[key].value() for key in listing.identifiers if key in listing.items]


def _listed_containers(listing: _ContainerListWire) -> list[RemoteContainer]:
    return [listing.items[key].value() for key in listing.identifiers if key in listing.items]


def _segment(value: str) -> str:
    return quote(value, safe="")


# ------------------------------------------------------------------------------ the hub
class AiohttpHubTokenIssuer:
    """``HubTokenIssuer`` over aiohttp: the hub's login form, then its token API.

    JupyterHub creates tokens only for an authenticated request. Signing in through the
    login form works with every form-based authenticator (PAM, dummy, LDAP, native) exactly
    as a browser does; the token request then carries the hub's login cookie and, as the
    hub requires of cookie-authenticated API calls, its ``_xsrf`` cookie in ``X-XSRFToken``.
    ``hub_url`` is the hub's public base URL (``http://host:8000/``).
    """

    def __init__(
        self,
        hub_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._hub_url = hub_url if hub_url.endswith("/") else hub_url + "/"
        self._http = _Http(self._hub_url, timeout=timeout, resolver=resolver, keep_cookies=True)

    async def create_token(
        self,
        user: str,
        password: str,
        *,
        scopes: Sequence[str],
        note: str,
        expires_in: int | None,
    ) -> IssuedToken:
        await self._sign_in(user, password)
        name = await self._signed_in_name()
        request: dict[str, Any] = {"note": note, "scopes": list(scopes)}
        if expires_in is not None:
            request["expires_in"] = expires_in
        status, reason, _headers, body = await self._http.request(
            "POST",
            self._hub_url + f"hub/api/users/{_segment(name)}/tokens",
            headers=self._xsrf_headers(),
            json=request,
        )
        if status not in (200, 201):
            raise self._http.error(status, reason, body)
        return self._http.parse(
            _HubTokenWire,
            body,
            lambda issued: IssuedToken(issued.token, user=name, expires_at=issued.expires_at),
        )

    async def close(self) -> None:
        await self._http.close()

    async def _sign_in(self, user: str, password: str) -> None:
        login_url = self._hub_url + "hub/login"
        status, reason, _headers, body = await self._http.request("GET", login_url)
        if 300 <= status < 400:
            raise Unable(
                f"the hub at {self._hub_url} signs users in elsewhere (no login form): create "
                "a token on its token page and log in without --username"
            )
        if status != 200:
            raise self._http.error(status, reason, body)
        form = {"username": user, "password": password, "_xsrf": self._form_xsrf(body)}
        status, _reason, _headers, _body = await self._http.request("POST", login_url, data=form)
        # A successful sign-in redirects onwards; a refused one shows the form again.
        if not 300 <= status < 400:
            raise Unauthorized(f"the hub at {self._hub_url} refused this user name or password")

    async def _signed_in_name(self) -> str:
        # The hub may normalise the name it was given (case, for instance).
        status, reason, _headers, body = await self._http.request(
            "GET", self._hub_url + "hub/api/user", headers=self._xsrf_headers()
        )
        if status != 200:
            raise self._http.error(status, reason, body)
        return self._http.parse(_UserWire, body, lambda user: user.name)

    def _form_xsrf(self, page: bytes) -> str:
        match = _XSRF_FIELD_RE.search(page.decode("utf-8", "replace"))
        if match is not None:
            return match.group(1)
        cookie = self._xsrf_cookie()
        if cookie is None:
            raise Unable(f"{self._hub_url}hub/login is not a JupyterHub login form")
        return cookie

    def _xsrf_cookie(self) -> str | None:
        cookies = self._http.session().cookie_jar.filter_cookies(URL(self._hub_url + "hub/api/"))
        morsel = cookies.get("_xsrf")
        return morsel.value if morsel is not None else None

    def _xsrf_headers(self) -> dict[str, str]:
        cookie = self._xsrf_cookie()
        return {"X-XSRFToken": cookie} if cookie is not None else {}
