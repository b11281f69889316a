"""The Grafana dashboard and its provisioning: well-formed, and reading only metrics the sink exposes.

tests/integration/test_prometheus.py runs every query against a real Prometheus scraping a real sink.
"""

from __future__ import annotations

from tests.observability import DASHBOARD, ROOT, dashboard, dashboard_panels, dashboard_queries, load_yaml, metric_names
from tests.unit.deploy.test_alert_rules import exposed_names

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def test_panels_cover_what_the_issue_asks_for() -> None:
    text = " ".join(title.lower() for title, _ in dashboard_queries())
    for topic in (
        "consumed",
        "written",
        "lag",
        "freshness",
        "flush stage",
        "dead letters",
        "retries",
        "circuit breaker",
    ):
        assert topic in text, topic
    assert "rebalance" in text and "pool" in text
    quantiles = [expr for _, expr in dashboard_queries() if "histogram_quantile" in expr]
    assert any("mds_sink_flush_duration_seconds_bucket" in q and "0.99" in q for q in quantiles)


def test_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_queries_only_name_metrics_the_sink_exposes() -> None:
    exposed = exposed_names() | {"up"}
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exposed, f"{title} reads {sorted(names - exposed)}, which the sink does not expose"


def test_queries_filter_by_the_dashboard_variables() -> None:
    variables = {v["name"] for v in dashboard()["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for title, expr in dashboard_queries():
        assert 'instance=~"$instance"' in expr, title


def test_provisioning_loads_this_dashboard_from_prometheus() -> None:
    sources = load_yaml(PROVISIONING / "datasources" / "prometheus.yaml")["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]
    assert sources[0]["isDefault"] is True
    providers = load_yaml(PROVISIONING / "dashboards" / "mds-sink.yaml")["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASHBOARD.name == "mds-sink.json"
    assert dashboard()["uid"] == "mds-sink"
