"""Every metric named by the dashboard and the alert rules is one the daemon exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clearing.ops.metrics import Metrics
from tests.ops.promql import PROMETHEUS_SERIES, exported_names, metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "clearing-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def dashboard_queries(node: Any) -> Iterator[str]:
    """Panel target expressions and templating queries, wherever they nest."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        if node.get("type") == "query" and isinstance(node.get("definition"), str):
            yield node["definition"]
        for value in node.values():
            yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_metrics() -> Metrics:
    """The daemon's metrics with every optional family on (fund risk: risk.interval_s)."""
    metrics = Metrics()
    metrics.enable_fund_risk(interval_s=300)
    return metrics


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names(all_metrics().registry) | PROMETHEUS_SERIES


def test_parser_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(clearing_x_bucket{job="a",i=~"$i"}'
        "[$__rate_interval]))) > 1e-3 and on (instance, market) clearing_y offset 5m"
        ' unless label_replace(up, "a", "$1", "b", "(.*)") / ignoring(x) clearing_z[5m:1m]'
    )
    assert metric_names(expr) == {"clearing_x_bucket", "clearing_y", "up", "clearing_z"}
    assert metric_names("label_values(clearing_ready, instance)") == {"clearing_ready"}
    assert metric_names("sum(rate(clearing_a_total[1m])) * 60 bool") == {"clearing_a_total"}


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 20
    unknown = {(q, name) for q in queries for name in metric_names(q) if name not in exported}
    assert unknown == set()


def test_alert_rules_name_only_exported_metrics(exported: set[str]) -> None:
    exprs = alert_exprs()
    assert len(exprs) >= 10
    unknown = {
        (a, name) for a, expr in exprs for name in metric_names(expr) if name not in exported
    }
    assert unknown == set()


def test_dashboard_covers_the_headline_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = " ".join(dashboard_queries(dashboard))
    for name in (
        "clearing_insurance_fund_equity_quote",
        "clearing_open_interest_notional_quote",
        "clearing_fund_to_open_interest_ratio",
        "clearing_consumer_lag_offsets",
        "clearing_input_records_total",
        "clearing_engine_apply_seconds_bucket",
        "clearing_liquidated_accounts_total",
        "clearing_rejects_total",
    ):
        assert name in queries, name
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_alert_has_severity_and_summary() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_operations_doc_lists_every_metric() -> None:
    doc = (DEPLOY.parent / "docs" / "operations.md").read_text()
    registry = all_metrics().registry
    families = [f.name for f in registry.collect() if f.name.startswith("clearing_")]
    assert len(families) > 40
    missing = [name for name in families if f"`{name}" not in doc]
    assert missing == []


def test_dashboard_and_alerts_cover_fund_adequacy() -> None:
    queries = " ".join(dashboard_queries(json.loads(DASHBOARD.read_text())))
    for name in (
        "clearing_fund_coverage_ratio",
        "clearing_fund_expected_shortfall",
        "clearing_fund_risk_scenarios",
        "clearing_fund_risk_age_seconds",
    ):
        assert name in queries, name
    exprs = dict(alert_exprs())
    assert exprs["ClearingFundCoverageBelowOne"] == "clearing_fund_coverage_ratio < 1"
