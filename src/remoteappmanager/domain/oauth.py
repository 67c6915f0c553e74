"""OAuth 2 with PKCE (RFC 7636), as the hub's authorize endpoint speaks it: pure functions."""

from __future__ import annotations

import base64
import hashlib
import secrets


def new_pkce_verifier() -> str:
    """A fresh PKCE code verifier: 43 characters of the unreserved set (RFC 7636 §4.1)."""
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
