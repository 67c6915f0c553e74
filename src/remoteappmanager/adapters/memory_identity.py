"""An in-memory JupyterHub stand-in implementing the identity port, for tests and demos."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.errors import Unauthorized, Unavailable
from remoteappmanager.domain.oauth import pkce_challenge
from remoteappmanager.ports.identity import Directory, HubUser

AUTHORIZE_PATH = "/hub/api/oauth2/authorize"
# The real adapter's defaults (adapters/jupyterhub.py), so that tests run what production runs.
DEFAULT_CACHE_TTL = 30.0
DEFAULT_NEGATIVE_TTL = 10.0


@dataclass(frozen=True, slots=True)
class _PendingCode:
    user: str
    code_challenge: str


class InMemoryIdentityProvider:
    """An ``IdentityProvider`` whose "hub" is a few dictionaries.

    Test controls: ``add_user`` / ``set_admin`` / ``set_groups`` edit the hub's users,
    ``approve(name, code_challenge)`` plays the hub's authorize endpoint for a signed-in user
    and returns the code it would redirect with, ``issue_token`` makes an API token (by
    default with the scopes the hub's ``user`` role gives: this service's access scope and
    the user's own identity; ``scopes=`` narrows or widens it, as the hub's token API does),
    ``revoke_user`` plays a hub logout, ``available = False`` makes every call raise
    ``Unavailable``.

    Like ``HubIdentityProvider``, ``user_for_token`` answers are cached for ``cache_ttl``
    seconds and refusals for ``negative_ttl`` (the same defaults), on the injected ``clock``:
    a hub-side edit shows once the cached answer expires, as it does with the real hub.
    ``forget()`` drops what is cached (as a restart of the service would).
    """

    def __init__(
        self,
        *,
        client_id: str = "service-remoteapp",
        redirect_uri: str = "/services/remoteapp/oauth_callback",
        service_name: str = "remoteapp",
        cache_ttl: float = DEFAULT_CACHE_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.service_name = service_name
        self.redirect_uri = redirect_uri
        self.available = True
        self._users: dict[str, HubUser] = {}
        self._codes: dict[str, _PendingCode] = {}
        # token -> (owner, the token's scopes as the hub would expand them)
        self._tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self._answers: TtlCache[str, HubUser] = TtlCache(
            ttl=cache_ttl,
            maxsize=10_000,
            clock=clock,
            refusals=(Unauthorized,),
            refusal_ttl=negative_ttl,
        )
        self.user_lookups = 0

    async def directory(self, prefix: str, limit: int) -> Directory:
        if not self.available:
            raise Unavailable("JupyterHub cannot be reached")
        users = sorted(name for name in self._users if name.startswith(prefix))
        groups = sorted({group for user in self._users.values() for group in user.groups})
        return Directory(
            users=tuple(users[:limit]),
            groups=tuple([group for group in groups if group.startswith(prefix)][:limit]),
        )

    # ------------------------------------------------------------------ test controls
    def add_user(
        self, name: str, *, admin: bool = False, groups: frozenset[str] = frozenset()
    ) -> HubUser:
        user = HubUser(name=name, admin=admin, groups=frozenset(groups))
        self._users[name] = user
        return user

    def set_admin(self, name: str, admin: bool) -> None:
        self._users[name] = replace(self._users[name], admin=admin)

    def set_groups(self, name: str, groups: frozenset[str]) -> None:
        self._users[name] = replace(self._users[name], groups=frozenset(groups))

    def approve(self, name: str, code_challenge: str) -> str:
        if name not in self._users:
            raise KeyError(name)
        code = secrets.token_urlsafe(16)
        self._codes[code] = _PendingCode(user=name, code_challenge=code_challenge)
        return code

    def default_scopes(self, name: str) -> frozenset[str]:
        """What a token of ``name`` holds by default: this service's access and identity."""
        return frozenset(
            {
                f"access:services!service={self.service_name}",
                f"read:users:name!user={name}",
                f"read:users:groups!user={name}",
            }
        )

    def issue_token(self, name: str, *, scopes: frozenset[str] | None = None) -> str:
        if name not in self._users:
            raise KeyError(name)
        token = secrets.token_hex(16)
        self._tokens[token] = (name, self.default_scopes(name) if scopes is None else scopes)
        return token

    def forget(self) -> None:
        """Drop every cached answer: the next lookups see the hub as it is now."""
        self._answers.clear()

    @property
    def cache_ttl(self) -> float:
        return self._answers.ttl

    def revoke_user(self, name: str) -> None:
        for token in [t for t, (owner, _) in self._tokens.items() if owner == name]:
            del self._tokens[token]

    # ------------------------------------------------------------------ the port
    def authorize_url(self, state: str, code_challenge: str) -> str:
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "response_type": "code",
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{AUTHORIZE_PATH}?{query}"

    async def exchange_code(self, code: str, verifier: str) -> str:
        self._check_available()
        pending = self._codes.pop(code, None)
        if pending is None or not secrets.compare_digest(
            pkce_challenge(verifier), pending.code_challenge
        ):
            raise Unauthorized("the sign-in code is not valid (any more); sign in again")
        return self.issue_token(pending.user)

    async def user_for_token(self, token: str) -> HubUser:
        self._check_available()
        if not token:
            raise Unauthorized("the JupyterHub token is not valid (any more); sign in again")
        return await self._answers.get(token, lambda: self._look_up(token))

    async def _look_up(self, token: str) -> HubUser:
        self.user_lookups += 1
        held = self._tokens.get(token)
        if held is None or held[0] not in self._users:
            raise Unauthorized("the JupyterHub token is not valid (any more); sign in again")
        name, scopes = held
        return replace(self._users[name], scopes=scopes)

    async def check(self) -> None:
        self._check_available()

    async def close(self) -> None:
        await self._answers.close()

    def _check_available(self) -> None:
        if not self.available:
            raise Unavailable("JupyterHub cannot be reached; try again shortly")
