"""The service's own URL layout under ``{svc}``, derived once from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from remoteappmanager.settings import Settings


@dataclass(frozen=True, slots=True)
class ServiceUrls:
    """Paths of the service (all absolute, as the browser sees them through the proxy)."""

    prefix: str
    api: str
    home: str
    callback: str
    redirect_uri: str
    logout: str
    health: str
    metrics: str
    hub_logout: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceUrls:
        prefix = settings.jupyterhub_service_prefix
        redirect_uri = settings.jupyterhub_oauth_callback_url or prefix + "oauth_callback"
        # The hub may hand us an absolute redirect URI; we serve its path.
        callback = urlsplit(redirect_uri).path or prefix + "oauth_callback"
        return cls(
            prefix=prefix,
            api=prefix + "api/",
            home=prefix,
            callback=callback,
            redirect_uri=redirect_uri,
            logout=prefix + "logout",
            health=prefix + "health",
            metrics=prefix + "metrics",
            hub_logout=settings.jupyterhub_base_url.rstrip("/") + "/hub/logout",
        )

    def is_api(self, path: str) -> bool:
        return path.startswith(self.api)

    def is_local_page(self, target: str) -> bool:
        """Is ``target`` a path of ours that is safe to redirect to after sign-in?"""
        return (
            target.startswith(self.prefix)
            and "\\" not in target
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
        )
