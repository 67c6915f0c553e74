"""The REST API of a running SimPhoNy-Remote service as its clients see it, and their hub tokens.

Contract (``AiohttpRemoteAppClient`` / ``AiohttpHubTokenIssuer``):
- A ``RemoteAppClient`` speaks for one user to one service (``{svc}``, ending in ``/``) with a
  JupyterHub API token. It returns the API's answers as the values below; ``start_container``
  answers once the application serves (the API's ``POST`` does) and returns the new container.
- A ``HubTokenIssuer`` signs in to a JupyterHub with a user name and password, the way its
  login form does, and has the hub create an API token for that user with the given scopes
  and lifetime (``expires_in`` seconds, None: the hub's default).
- Answers map to the error hierarchy by status: 400 ``InvalidRequest``, 401 ``Unauthorized``,
  403 ``Forbidden``, 404 ``NotFound``, 409 ``Conflict``, other 4xx ``InvalidRequest``, 5xx
  ``Unable``, each with the API's message when it sent one. A refused user name or password
  is ``Unauthorized``. An answer that is not the API's (a web page, a wrong shape) is
  ``Unable``.
- A server that cannot be reached (connection refused, unknown host name, TLS failure, no
  answer in time) raises ``ServiceUnreachable`` naming the URL and the reason.
- Messages never contain the token or the password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from remoteappmanager.domain.errors import Unavailable
from remoteappmanager.domain.models import Policy


class ServiceUnreachable(Unavailable):
    """No answer at all from the server: refused, unknown host, TLS failure or timeout."""


@dataclass(frozen=True, slots=True)
class RemoteUser:
    """The caller as the service sees them."""

    name: str
    admin: bool = False


@dataclass(frozen=True, slots=True)
class RemoteContainer:
    """One of the user's running (or starting, stopping) applications."""

    url_id: str
    mapping_id: str
    image: str
    urlpath: str
    """Where it is served, from the proxy's root (``/user/<name>/containers/<url_id>``)."""
    state: str


@dataclass(frozen=True, slots=True)
class RemoteApplication:
    """One of the user's grants: the image, the policy, and its container if one runs."""

    mapping_id: str
    image: str
    ui_name: str
    available: bool
    configurables: tuple[str, ...]
    """The start-up choices offered under this grant (``resolution``, ``startupdata``)."""
    policy: Policy
    container: RemoteContainer | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token the hub created; ``user`` is the hub's spelling of the name."""

    token: str = field(repr=False)
    user: str
    expires_at: datetime | None


class RemoteAppClient(Protocol):
    async def whoami(self) -> RemoteUser: ...

    async def list_applications(self) -> Sequence[RemoteApplication]: ...

    async def get_application(self, mapping_id: str) -> RemoteApplication: ...

    async def list_containers(self) -> Sequence[RemoteContainer]: ...

    async def start_container(
        self, mapping_id: str, configurables: Mapping[str, str]
    ) -> RemoteContainer: ...

    async def stop_container(self, url_id: str) -> None: ...

    async def close(self) -> None: ...


class HubTokenIssuer(Protocol):
    async def create_token(
        self,
        user: str,
        password: str,
        *,
        scopes: Sequence[str],
        note: str,
        expires_in: int | None,
    ) -> IssuedToken: ...

    async def close(self) -> None: ...
