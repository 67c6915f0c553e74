"""``{svc}health``: the state of every dependency, 200 when all answer and 503 otherwise.

Anyone may ask, so asking must stay cheap: the combined answer is kept for ``HEALTH_TTL``
seconds and concurrent callers share one probe of the dependencies, so a flood of requests
costs each dependency at most one check per TTL. Anonymous callers (and users who are not
admins) see the overall status and each dependency's up/down state; only admins also see why
a dependency is down. ``down`` lists the names of the dependencies that do not answer
(``database``, ``docker``, ``proxy``, ``hub``), so a probe or a person reads at once which one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from remoteappmanager.caching import TtlCache
from remoteappmanager.domain.errors import RemoteAppError
from remoteappmanager.web.auth import resolve_auth
from remoteappmanager.web.deps import HealthCheck
from remoteappmanager.web.keys import DEPS, HEALTH

log = structlog.get_logger(__name__)

# A dependency that takes longer than this to answer counts as down: probes must not hang.
CHECK_TIMEOUT = 5.0
# How long one probe's answer is served: short enough for a load balancer's readiness check,
# long enough that anonymous requests cannot make the service hammer its dependencies.
HEALTH_TTL = 1.5


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: bool
    # name -> {"ok": bool} or {"ok": False, "error": why}
    checks: Mapping[str, Mapping[str, Any]]

    @property
    def down(self) -> list[str]:
        """The dependencies that do not answer, by name."""
        return sorted(name for name, result in self.checks.items() if not result["ok"])

    def public(self) -> dict[str, Any]:
        """What anyone may see: the status and each dependency's state, no reasons."""
        return {
            "status": "ok" if self.healthy else "unavailable",
            "down": self.down,
            "checks": {name: {"ok": bool(result["ok"])} for name, result in self.checks.items()},
        }

    def detailed(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unavailable",
            "down": self.down,
            "checks": {name: dict(result) for name, result in self.checks.items()},
        }


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


class CachedHealth:
    """The dependencies' combined state, probed at most once per ``ttl`` (single-flight).

    ``probes`` counts the probes run (each checks every dependency once).
    """

    def __init__(
        self,
        checks: Mapping[str, HealthCheck],
        *,
        clock: Callable[[], float],
        ttl: float = HEALTH_TTL,
    ) -> None:
        self._checks = dict(checks)
        self._reports: TtlCache[None, HealthReport] = TtlCache(ttl=ttl, maxsize=1, clock=clock)

    @property
    def probes(self) -> int:
        return self._reports.loads

    async def report(self) -> HealthReport:
        return await self._reports.get(None, self._run_probe)

    async def _run_probe(self) -> HealthReport:
        names = sorted(self._checks)
        results = await asyncio.gather(*(_run(name, self._checks[name]) for name in names))
        return HealthReport(
            healthy=all(result["ok"] for result in results),
            checks=dict(zip(names, results, strict=True)),
        )

    async def close(self) -> None:
        await self._reports.close()


async def _is_admin(request: web.Request) -> bool:
    try:
        auth = await resolve_auth(request)
    except RemoteAppError:
        # A bad or unusable credential makes the caller anonymous here, not an error.
        return False
    return auth is not None and auth.user.admin


async def health_handler(request: web.Request) -> web.Response:
    report = await request.app[HEALTH].report()
    body = report.detailed() if await _is_admin(request) else report.public()
    # Whether this replica runs the reconciler (one replica at a time does).
    body["leader"] = request.app[DEPS].leadership.leading
    return web.json_response(
        body,
        status=200 if report.healthy else 503,
        headers={"Cache-Control": "no-store"},
    )
