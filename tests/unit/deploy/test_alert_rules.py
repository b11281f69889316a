"""The alert rules and scrape configs, checked by Debian's promtool; each alert proven to fire."""

from __future__ import annotations

import shutil
import subprocess

from mds_sink import metrics
from tests.observability import (
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_DIR,
    alert_rules,
    load_yaml,
    metric_names,
    runbook_anchors,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: install Debian's prometheus package (deploy/local/tools.sh)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def exposed_names() -> set[str]:
    """Every series name the sink's registry can expose."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_promtool_accepts_the_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_every_alert_fires_on_its_synthetic_failure() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_case_in_the_rule_tests() -> None:
    firing = {
        case["alertname"]
        for test in load_yaml(ALERTS_TEST)["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert firing == {rule["alert"] for rule in alert_rules()}


def test_both_scrape_configs_are_valid_and_load_the_rules() -> None:
    for config in ("prometheus.yml", "prometheus-local.yml"):
        done = promtool("check", "config", str(PROMETHEUS_DIR / config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS: 1 rule files found" in done.stdout
        jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_DIR / config)["scrape_configs"]}
        assert "mds-sink" in jobs, 'alerts.yml selects up{job="mds-sink"}'


def test_local_config_scrapes_the_default_side_port() -> None:
    job = next(
        j for j in load_yaml(PROMETHEUS_DIR / "prometheus-local.yml")["scrape_configs"] if j["job_name"] == "mds-sink"
    )
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8088"]


def test_rules_have_a_summary_a_description_and_a_runbook_section() -> None:
    anchors = runbook_anchors()
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, f"no runbook section for {rule['alert']}"
        assert rule["labels"]["severity"] in {"critical", "warning"}


def test_rules_only_name_metrics_the_sink_exposes() -> None:
    exposed = exposed_names() | {"up"}
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exposed
        assert not unknown, f"{rule['alert']} reads {sorted(unknown)}, which the sink does not expose"
