"""JupyterHub as the identity provider: OAuth code exchange and token → user, over aiohttp."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog

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
    ) -> None:
        if cache_size < 1 or negative_size < 1:
            raise ValueError("cache_size and negative_size must be at least 1")
        self._api_url = api_url.rstrip("/")
        self._api_token = api_token
        self._client_id = client_id
        self._redirect_uri = redirect_uri
        self._authorize_endpoint = base_url.rstrip("/") + "/hub/api/oauth2/authorize"
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, HubUser]] = OrderedDict()
        self._negative_ttl = negative_ttl
        self._negative_size = negative_size
        # token digest -> until when the hub's refusal stands; oldest first
        self._refused: OrderedDict[bytes, float] = OrderedDict()
        self.user_lookups = 0
        self.refusals_cached = 0
        self._inflight: dict[bytes, asyncio.Task[HubUser]] = {}
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
        return self._cache_ttl

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
        cached = self._cache.get(key)
        if cached is not None:
            expires, user = cached
            if self._clock() < expires:
                self._cache.move_to_end(key)
                return user
            del self._cache[key]
        refused_until = self._refused.get(key)
        if refused_until is not None:
            if self._clock() < refused_until:
                self.refusals_cached += 1
                raise Unauthorized(_CREDENTIALS_REFUSED)
            del self._refused[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch_user(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one caller giving up must not cancel the lookup the others wait for.
        return await asyncio.shield(task)

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
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        self._cache.clear()
        self._refused.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------ internals
    async def _fetch_user(self, key: bytes, token: str) -> HubUser:
        self.user_lookups += 1
        status, body = await self._call("GET", "/user", headers={"Authorization": f"token {token}"})
        if status in (401, 403):
            # A revoked token answers 403 (the hub sees no user), an unknown one 403 or 401.
            self._refused[key] = self._clock() + self._negative_ttl
            self._refused.move_to_end(key)
            while len(self._refused) > self._negative_size:
                self._refused.popitem(last=False)
            raise Unauthorized(_CREDENTIALS_REFUSED)
        if status != 200 or not isinstance(body, Mapping):
            raise Unavailable(_HUB_UNREACHABLE)
        user = _user_from_model(body)
        self._cache[key] = (self._clock() + self._cache_ttl, user)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return user

    def _forget(self, key: bytes, task: asyncio.Task[HubUser]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # Marks the outcome as seen even when every waiter has gone away meanwhile.
            task.exception()

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
