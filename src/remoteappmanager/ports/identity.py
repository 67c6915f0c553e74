"""The identity port: who a JupyterHub token belongs to, and the OAuth code flow that gets one.

Contract (``InMemoryIdentityProvider`` / ``HubIdentityProvider``):
- ``authorize_url(state, code_challenge)`` is where a browser goes to sign in: the hub's OAuth
  authorize endpoint with our client id, our redirect URI, ``state`` and a PKCE S256 challenge.
  Pure; no I/O.
- ``exchange_code(code, verifier)`` trades an authorization code (and the PKCE verifier whose
  challenge went with it) for a hub token. A code that is unknown, used, expired or whose
  verifier does not match raises ``Unauthorized``.
- ``user_for_token(token)`` returns the hub's user model of the token's owner, with the scopes
  *that token* holds (as the hub expands them). A token that is unknown, expired or revoked
  raises ``Unauthorized``. The answer may be cached for a short, stated time (the adapter's
  ``cache_ttl``): a revoked token keeps working at most that long. A refusal may be cached too,
  for a shorter time (``negative_ttl``), so that a client repeating a bad token costs the hub
  one request per that time. Whether the scopes grant access is the access service's call.
- ``check()`` returns when the hub answers; used by the health endpoint.
- Every method that talks to the hub raises ``Unavailable`` when it cannot be reached or answers
  nonsense. Messages never contain tokens, codes or the hub's internal URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class HubUser:
    """The part of JupyterHub's user model we use; ``scopes`` are those of the token asked
    about (the hub's ``scopes`` field), not every scope the user could hold."""

    name: str
    admin: bool = False
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Directory:
    """Hub user and group names found by a search, each sorted."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


class IdentityProvider(Protocol):
    def authorize_url(self, state: str, code_challenge: str) -> str: ...

    async def exchange_code(self, code: str, verifier: str) -> str: ...

    async def user_for_token(self, token: str) -> HubUser: ...

    async def check(self) -> None: ...

    async def directory(self, prefix: str, limit: int) -> Directory:
        """Hub users and groups whose names start with ``prefix`` (at most ``limit`` of
        each), asked with the service's own credentials; ``Unavailable`` if the hub cannot
        answer or does not let the service list them."""
        ...

    async def close(self) -> None: ...
