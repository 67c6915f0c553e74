"""Timing of dependency calls and the reconciler's figures, as Prometheus shows them."""

from __future__ import annotations

from collections import Counter

import pytest

from remoteappmanager.adapters.observed import operation_of, outcome_of, timing
from remoteappmanager.domain.errors import NotFound, Unavailable
from remoteappmanager.services.reconcile import ReconcileReport
from remoteappmanager.web.metrics import Metrics


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (NotFound("gone"), "refused"),
        (_HttpError(404), "refused"),
        (_HttpError(503), "failed"),
        (Unavailable("down"), "failed"),
        (RuntimeError("odd"), "failed"),
    ],
)
def test_outcomes(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_operations_keep_the_verb_and_object_only() -> None:
    assert operation_of("create container remoteapp.alice.3") == "create container"
    assert operation_of("list containers") == "list containers"


def test_timing_reports_each_call_once_with_its_outcome() -> None:
    heard: list[tuple[str, str, str]] = []

    def observe(dependency: str, operation: str, seconds: float, outcome: str) -> None:
        assert seconds >= 0
        heard.append((dependency, operation, outcome))

    with timing(observe, "docker", "start container"):
        pass
    with pytest.raises(Unavailable), timing(observe, "docker", "list containers"):
        raise Unavailable("down")
    with timing(None, "docker", "nobody listens"):
        pass
    assert heard == [("docker", "start container", "ok"), ("docker", "list containers", "failed")]


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_reconcile_passes_count_actions_and_running_sessions_by_image() -> None:
    metrics = Metrics()
    metrics.observe_reconcile(
        ReconcileReport(
            routes_added=["/a", "/b"],
            containers_removed=["c1"],
            running_by_image=Counter({"demo/vnc": 2, "demo/web": 1}),
            seconds=0.01,
        )
    )
    assert _sample(metrics, "remoteapp_reconcile_actions_total", action="route_added") == 2
    assert _sample(metrics, "remoteapp_reconcile_actions_total", action="container_removed") == 1
    assert _sample(metrics, "remoteapp_reconcile_actions_total", action="failed") == 0
    assert _sample(metrics, "remoteapp_running_sessions", image="demo/vnc") == 2
    metrics.observe_reconcile(ReconcileReport(running_by_image=Counter({"demo/vnc": 1})))
    assert _sample(metrics, "remoteapp_running_sessions", image="demo/vnc") == 1
    assert _sample(metrics, "remoteapp_running_sessions", image="demo/web") is None
    assert _sample(metrics, "remoteapp_reconcile_pass_duration_seconds_count") == 2


def test_dependency_calls_are_a_histogram_per_operation_and_outcome() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_dependency("hub", "GET /user", 0.002, "ok")
    metrics.observe_dependency("hub", "GET /user", 0.5, "failed")
    name = "remoteapp_dependency_call_duration_seconds_count"
    assert _sample(metrics, name, dependency="hub", operation="GET /user", outcome="ok") == 3
    assert _sample(metrics, name, dependency="hub", operation="GET /user", outcome="failed") == 1
