"""JupyterHub as the identity provider: OAuth code exchange and token → user, over aiohttp."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog

from remoteappmanager.adapters.observed import Observe, timing
from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.errors import Unable, Unauthorized, Unavailable
from remoteappmanager.ports.identity import Directory, HubUser
from remoteappmanager.settings import Settings

# Hub logout revokes the tokens the hub issued during that login, but a user model we cached
# keeps the session alive until it expires: this is the longest a hub logout (or a change of
# the admin flag or of groups) takes to reach us. The hub's /api/user is cheap; at 30 s a
# thousand active users cost it about 33 requests per second at worst.
DEFAULT_CACHE_TTL = 30.0
DEFAULT_CACHE_SIZE = 10_000
# A token the hub refused is refused again without asking for this long: a client (or an
# attacker) repeating a bad token costs the hub one request per token per this time. Tokens
# are random, so a refused one does not become valid meanwhile (a new one is issued instead).
DEFAULT_NEGATIVE_TTL = 10.0
DEFAULT_NEGATIVE_SIZE = 10_000
DEFAULT_TIMEOUT = 10.0

_log = structlog.get_logger(__name__)

_HUB_UNREACHABLE = "JupyterHub cannot be reached; try again shortly"
# Groups asked for per directory search (the hub has no name filter for groups).
_GROUP_SCAN = 1000
_CREDENTIALS_REFUSED = "the JupyterHub token is not valid (any more); sign in again"


class HubIdentityProvider:
    """``IdentityProvider`` backed by a JupyterHub's REST API and OAuth provider.

    ``api_url`` is the hub's internal API (``JUPYTERHUB_API_URL``, e.g.
    ``http://127.0.0.1:8081/hub/api``); the browser is sent to the *public* authorize URL
    (``<base_url>hub/api/oauth2/authorize``, relative, so it goes through the proxy).
    ``user_for_token`` answers are cached for ``cache_ttl`` seconds (at most ``cache_size``
    tokens, least recently used evicted first); concurrent lookups of one token share a
    single hub request. Tokens the hub refused are remembered (by digest) for
    ``negative_ttl`` seconds (at most ``negative_size``, oldest forgotten first) and refused
    without a request. ``user_lookups`` counts the requests made to the hub's ``/user``,
    ``refusals_cached`` the refusals answered from memory.
    """

    def __init__(
        self,
        *,
        api_url: str,
        api_token: str,
        client_id: str,
        redirect_uri: str,
        base_url: str = "/",
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        negative_size: int = DEFAULT_NEGATIVE_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        observe: Observe | None = None,
    ) -> None:
        if cache_size < 1 or negative_size < 1:
            raise ValueError("cache_size and negative_size must be at least 1")
        self._api_url = api_url.rstrip("/")
        self._api_token = api_token
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._authorize_endpoint = base_url.rstrip("/") + "/hub/api/oauth2/authorize"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._observe = observe
        # Keyed by the token's digest, so that no token sits in memory longer than a request.
        self._users: TtlCache[bytes, HubUser] = TtlCache(
            ttl=cache_ttl,
            maxsize=cache_size,
            clock=clock,
            refusals=(Unauthorized,),
            refusal_ttl=negative_ttl,
            refusal_maxsize=negative_size,
        )
        self._client: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> HubIdentityProvider:
        """The hub as ``JUPYTERHUB_*`` describe it; ``options`` as for the constructor."""
        if settings.jupyterhub_api_token is None:
            raise ValueError("JUPYTERHUB_API_TOKEN is needed to talk to the hub")
        prefix = settings.jupyterhub_service_prefix
        return cls(
            api_url=settings.jupyterhub_api_url,
            api_token=settings.jupyterhub_api_token.get_secret_value(),
            client_id=settings.jupyterhub_client_id
            or f"service-{settings.jupyterhub_service_name}",
            redirect_uri=settings.jupyterhub_oauth_callback_url or prefix + "oauth_callback",
            base_url=settings.jupyterhub_base_url,
            **options,
        )

    @property
    def cache_ttl(self) -> float:
        return self._users.ttl

    @property
    def user_lookups(self) -> int:
        """Requests made to the hub's ``/user``."""
        return self._users.loads

    @property
    def refusals_cached(self) -> int:
        """Refusals answered from memory."""
        return self._users.refusals_answered

    @property
    def refusals_remembered(self) -> int:
        return self._users.refusals

    # ------------------------------------------------------------------ the port
    def authorize_url(self, state: str, code_challenge: str) -> str:
        query = urlencode(
            {
                "client_id": self._client_id,
                "redirect_uri": self._redirect_uri,
                "response_type": "code",
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self._authorize_endpoint}?{query}"

    async def exchange_code(self, code: str, verifier: str) -> str:
        form = {
            "client_id": self._client_id,
            "client_secret": self._api_token,
            "grant_type": "authorization_code",
            "code": code,
            # The hub compares it with the registered one byte for byte.
            "redirect_uri": self._redirect_uri,
            "code_verifier": verifier,
        }
        status, body = await self._call("POST", "/oauth2/token", data=form)
        if status == 200 and isinstance(body, Mapping):
            token = body.get("access_token")
            if isinstance(token, str) and token:
                return token
            raise Unavailable("JupyterHub answered the sign-in without a token")
        error = body.get("error") if isinstance(body, Mapping) else None
        if error == "invalid_client":
            _log.error("hub_rejected_client_credentials", client_id=self._client_id)
            raise Unable("JupyterHub does not accept this service's credentials")
        if 400 <= status < 500:
            raise Unauthorized("the sign-in code is not valid (any more); sign in again")
        raise Unavailable(_HUB_UNREACHABLE)

    async def user_for_token(self, token: str) -> HubUser:
        if not token:
            raise Unauthorized(_CREDENTIALS_REFUSED)
        key = hashlib.sha256(token.encode()).digest()
        return await self._users.get(key, lambda: self._fetch_user(token))

    async def check(self) -> None:
        status, _body = await self._call("GET", "/")
        if status != 200:
            raise Unavailable(f"JupyterHub answered {status}")

    async def directory(self, prefix: str, limit: int) -> Directory:
        # The service's own token: it needs list:users, read:users:name, list:groups and
        # read:groups:name (config/jupyterhub_config.py gives them). The hub filters users
        # by prefix itself (name_filter); groups are few, so they are filtered here.
        auth = {"Authorization": f"token {self._api_token}"}
        query = urlencode({"name_filter": prefix, "limit": str(limit)})
        status, users = await self._call("GET", "/users?" + query, headers=auth)
        groups_status, groups = await self._call(
            "GET", "/groups?" + urlencode({"limit": str(_GROUP_SCAN)}), headers=auth
        )
        if status in (401, 403) or groups_status in (401, 403):
            _log.error("hub_refused_directory", users=status, groups=groups_status)
            raise Unavailable("JupyterHub does not let this service list its users and groups")
        if status != 200 or groups_status != 200:
            raise Unavailable(_HUB_UNREACHABLE)
        return Directory(
            users=_names(users, lambda name: name.startswith(prefix), limit),
            groups=_names(groups, lambda name: name.startswith(prefix), limit),
        )

    async def close(self) -> None:
        await self._users.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------ internals
    async def _fetch_user(self, token: str) -> HubUser:
        status, body = await self._call("GET", "/user", headers={"Authorization": f"token {token}"})
        if status in (401, 403):
            # A revoked token answers 403 (the hub sees no user), an unknown one 403 or 401.
            raise Unauthorized(_CREDENTIALS_REFUSED)
        if status != 200 or not isinstance(body, Mapping):
            raise Unavailable(_HUB_UNREACHABLE)
        return _user_from_model(body)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            # One client serves every user: it must never carry cookies from one to another.
            self._client = aiohttp.ClientSession(
                timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = self._api_url + path
        try:
            with timing(self._observe, "hub", f"{method} {path}"):
                async with self._session().request(
                    method, url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    try:
                        body: Any = await response.json(content_type=None)
                    except ValueError:
                        body = None
                    return response.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            _log.warning("hub_unreachable", method=method, path=path, error=type(exc).__name__)
            raise Unavailable(_HUB_UNREACHABLE) from None


def _names(models: Any, keep: Callable[[str], bool], limit: int) -> tuple[str, ...]:
    """The names of a hub listing (a list, or the paginated form's ``items``), sorted."""
    if isinstance(models, Mapping):
        models = models.get("items")
    if not isinstance(models, list):
        raise Unavailable("JupyterHub answered a listing of an unknown shape")
    names = {
        model["name"]
        for model in models
        if isinstance(model, Mapping) and isinstance(model.get("name"), str) and keep(model["name"])
    }
    return tuple(sorted(names)[:limit])


def _user_from_model(model: Mapping[str, Any]) -> HubUser:
    kind = model.get("kind", "user")
    name = model.get("name")
    if kind != "user":
        raise Unauthorized("only JupyterHub users can sign in here, not services")
    if not isinstance(name, str) or not name:
        raise Unavailable("JupyterHub answered a user model without a name")
    groups = model.get("groups") or []
    # The scopes of the token asked about; a hub that names none grants none.
    scopes = model.get("scopes")
    if not isinstance(scopes, list):
        scopes = []
    return HubUser(
        name=name,
        admin=model.get("admin") is True,
        groups=frozenset(g for g in groups if isinstance(g, str)),
        scopes=frozenset(s for s in scopes if isinstance(s, str)),
    )
