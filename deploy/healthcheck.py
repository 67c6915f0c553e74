#!/opt/remoteapp/venv/bin/python3
"""The service image's health check: ``GET {svc}health`` through the proxy's public port.

Going through the proxy rather than to the service's own port checks the whole path a user's
request takes: configurable-http-proxy answers, JupyterHub has registered the service's
route, and the service answers; the service's own answer then covers the database, the
Docker engine, the proxy's API and the hub's API (200 only when all of them work). The body
is printed, so ``docker inspect`` shows which dependency failed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 4.0  # below the HEALTHCHECK's own --timeout
SERVICE_NAME = "remoteapp"


def health_url() -> str:
    # The same variables and defaults as config/jupyterhub_config.py.
    ip = os.environ.get("REMOTEAPP_HUB_IP") or "127.0.0.1"
    if ip in {"0.0.0.0", "::", "*"}:  # noqa: S104 - every interface includes loopback
        ip = "127.0.0.1"
    host = f"[{ip}]" if ":" in ip else ip
    port = os.environ.get("REMOTEAPP_HUB_PORT") or "8000"
    base = "/" + (os.environ.get("REMOTEAPP_HUB_BASE_URL") or "/").strip("/") + "/"
    base = "/" if base == "//" else base
    return f"http://{host}:{port}{base}services/{SERVICE_NAME}/health"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect (to the hub's login, say) means the route is wrong, not healthy.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def main() -> int:
    url = health_url()
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            print(response.status, response.read(2000).decode(errors="replace"))
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(exc.code, url, exc.read(2000).decode(errors="replace"))
    except OSError as exc:
        print(url, exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
