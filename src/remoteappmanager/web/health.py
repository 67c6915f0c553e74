"""``{svc}health``: the state of every dependency, 200 when all answer and 503 otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.services.deps import HealthCheck
from remoteappmanager.web.keys import HEALTH_CHECKS

log = structlog.get_logger(__name__)

# A dependency that takes longer than this to answer counts as down: probes must not hang.
CHECK_TIMEOUT = 5.0


async def _run(name: str, check: HealthCheck) -> dict[str, Any]:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT:g} s"}
    except RemoteAppError as exc:
        return {"ok": False, "error": exc.message}
    except Exception as exc:
        # Anything else may describe internals: logged in full, shown as its kind only.
        log.warning("health_check_failed", check=name, exc_info=True)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def health_handler(request: web.Request) -> web.Response:
    checks = request.app[HEALTH_CHECKS]
    names = sorted(checks)
    results = await asyncio.gather(*(_run(name, checks[name]) for name in names))
    report = dict(zip(names, results, strict=True))
    healthy = all(result["ok"] for result in results)
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "checks": report},
        status=200 if healthy else 503,
        headers={"Cache-Control": "no-store"},
    )
