"""Signed cookie values (HMAC-SHA256 with a timestamp) and the key they are signed with."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import structlog

from remoteappmanager.settings import Settings

log = structlog.get_logger(__name__)

_KEY_LABEL = b"remoteapp-cookie"


def cookie_key(settings: Settings) -> bytes:
    """The signing key: ``cookie_secret``, else derived from the service's hub token.

    Deriving (HMAC of a fixed label keyed by the token) rather than using the token itself
    means a leaked cookie key does not reveal the hub token. Without either, a random key is
    used: sessions then end when the process restarts, which in-memory sessions do anyway.
    """
    if settings.cookie_secret is not None and settings.cookie_secret.get_secret_value():
        return settings.cookie_secret.get_secret_value().encode()
    if settings.jupyterhub_api_token is not None:
        token = settings.jupyterhub_api_token.get_secret_value().encode()
        if token:
            return hmac.new(token, _KEY_LABEL, hashlib.sha256).digest()
    log.warning("cookie_key_random", reason="neither cookie_secret nor JUPYTERHUB_API_TOKEN set")
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Signs a value for one purpose; a value signed for one purpose is refused for another.

    Format: ``<base64url value>.<issued, seconds>.<base64url HMAC>`` — only characters that
    are safe in a cookie.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the cookie signing key must be at least 16 bytes")
        self._key = key
        self._clock = clock

    def sign(self, purpose: str, value: str) -> str:
        payload = _b64(value.encode())
        issued = str(int(self._clock()))
        return f"{payload}.{issued}.{self._mac(purpose, payload, issued)}"

    def unsign(self, purpose: str, signed: str | None, *, max_age: float) -> str | None:
        """The value, or None if it is absent, forged, for another purpose or too old."""
        if not signed or signed.count(".") != 2:
            return None
        payload, issued, mac = signed.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, payload, issued)):
            return None
        try:
            age = self._clock() - int(issued)
            return _unb64(payload).decode() if -60 <= age <= max_age else None
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None

    def mac(self, purpose: str, *parts: str) -> str:
        """A keyed digest binding ``parts`` together, for tokens that are not cookies."""
        message = "\x00".join((purpose, *parts)).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def _mac(self, purpose: str, payload: str, issued: str) -> str:
        return self.mac(purpose, payload, issued)
