"""Every metric the service exports is in docs/operations.md, and the Grafana dashboard uses
only those: the documentation and the dashboard stay true as metrics are added."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.webapp import PREFIX, World, make_app

REPO = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"remoteapp_[a-z_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def _documented() -> set[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("### Metrics", 1)[1]
    return set(re.findall(r"^\| `(remoteapp_[a-z_]+)` \|", section, re.MULTILINE))


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def test_every_exported_metric_is_documented_and_nothing_else(aiohttp_client: Any) -> None:
    # As the composition root builds it: with a leadership, whose metric shows then.
    client = await aiohttp_client(make_app(World()))
    response = await client.get(PREFIX + "metrics")
    assert response.status == 200
    exported = set()
    for family in text_string_to_metric_families(await response.text()):
        # ``_created`` timestamps come with counters and histograms; they are not metrics.
        if family.name.startswith("remoteapp_") and not family.name.endswith("_created"):
            exported.add(family.name + ("_total" if family.type == "counter" else ""))
    assert exported == _documented()


def test_the_dashboard_uses_documented_metrics_only() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "remoteapp.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {_base(name) for expr in expressions for name in _NAME.findall(expr)}
    assert used
    assert used <= _documented(), used - _documented()
