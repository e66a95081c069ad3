"""docs/prometheus-alerts.yaml: well formed, and every metric it alerts on is one the backend serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from tools.backend_process import BackendProcess

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "prometheus-alerts.yaml"
GRAFANA = ROOT / "docs" / "grafana" / "switchboard.json"
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_total")


async def _exposed(backend: BackendProcess) -> set[str]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    names = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.MULTILINE)}
    return names | {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE)}


def _base(name: str, exposed: set[str]) -> bool:
    return name in exposed or any(name.removesuffix(s) in exposed for s in _SERIES_SUFFIXES)


async def test_every_metric_the_prometheus_alerts_use_is_served_at_metrics(backend):
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    assert all({"alert", "expr", "labels", "annotations"} <= rule.keys() for rule in rules)
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names are unique"
    used = {name for rule in rules for name in re.findall(r"\bswitchboard_[a-z_]+\b", rule["expr"])}
    assert {"switchboard_alerts_active", "switchboard_alert_deliveries_total"} <= used
    exposed = await _exposed(backend)
    assert "switchboard_alerts_active" in exposed, "the alert engine has run a round and set its gauges"
    missing = sorted(name for name in used if not _base(name, exposed))
    assert not missing, f"alerting on metrics /metrics does not have: {missing}"


def test_the_grafana_dashboard_shows_the_alerts():
    panels = json.loads(GRAFANA.read_text())["panels"]
    expressions = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert any("switchboard_alerts_active" in e for e in expressions)
    assert any("switchboard_alert_deliveries_total" in e for e in expressions)
