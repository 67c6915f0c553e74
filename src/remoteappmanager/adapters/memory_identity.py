"""An in-memory JupyterHub stand-in implementing the identity port, for tests and demos."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from remoteappmanager.domain.errors import Unauthorized, Unavailable
from remoteappmanager.ports.identity import HubUser

AUTHORIZE_PATH = "/hub/api/oauth2/authorize"


@dataclass(frozen=True, slots=True)
class _PendingCode:
    user: str
    code_challenge: str


def s256_challenge(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class InMemoryIdentityProvider:
    """An ``IdentityProvider`` whose "hub" is a few dictionaries.

    Test controls: ``add_user`` / ``set_admin`` / ``set_groups`` edit the hub's users,
    ``approve(name, code_challenge)`` plays the hub's authorize endpoint for a signed-in user
    and returns the code it would redirect with, ``issue_token`` makes an API token,
    ``revoke_user`` plays a hub logout, ``available = False`` makes every call raise
    ``Unavailable``. Nothing is cached, so edits show on the very next request.
    """

    def __init__(
        self,
        *,
        client_id: str = "service-remoteapp",
        redirect_uri: str = "/services/remoteapp/oauth_callback",
    ) -> None:
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.available = True
        self._users: dict[str, HubUser] = {}
        self._codes: dict[str, _PendingCode] = {}
        self._tokens: dict[str, str] = {}

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

    def issue_token(self, name: str) -> str:
        if name not in self._users:
            raise KeyError(name)
        token = secrets.token_hex(16)
        self._tokens[token] = name
        return token

    def revoke_user(self, name: str) -> None:
        for token in [t for t, owner in self._tokens.items() if owner == name]:
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
            s256_challenge(verifier), pending.code_challenge
        ):
            raise Unauthorized("the sign-in code is not valid (any more); sign in again")
        return self.issue_token(pending.user)

    async def user_for_token(self, token: str) -> HubUser:
        self._check_available()
        name = self._tokens.get(token)
        if name is None or name not in self._users:
            raise Unauthorized("the JupyterHub token is not valid (any more); sign in again")
        return self._users[name]

    async def check(self) -> None:
        self._check_available()

    async def close(self) -> None:
        return None

    def _check_available(self) -> None:
        if not self.available:
            raise Unavailable("JupyterHub cannot be reached; try again shortly")
