"""Debian's Prometheus scraping a running sink through a short stream, with deploy/prometheus's config.

Proves against live data what promtool cannot: every metric the dashboard and the alert rules name is
exposed, every dashboard query returns data, and every rule evaluates without error.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mds_sink.http.server import side_port
from tests.integration.records import bar, unique_symbols
from tests.observability import ALERTS, PROMETHEUS_DIR, alert_rules, as_promql, dashboard_queries, metric_names
from tests.support import drained, make_scenario, running_sink, wait_until

STREAM_CHUNKS = 8
CHUNK_RECORDS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def query(base: str, promql: str) -> list[dict[str, Any]]:
    reply = api(base, "/api/v1/query", query=promql)
    assert reply["status"] == "success", f"{promql}: {reply}"
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


@contextmanager
def running_prometheus(workdir: Path, target: str) -> Iterator[str]:
    """Prometheus on a free loopback port with its own storage: prometheus-local.yml, scraping `target` every second."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: install Debian's prometheus package (deploy/local/tools.sh)"
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus-local.yml").read_text())
    loaded["global"].update(scrape_interval="1s", evaluation_interval="1s")
    loaded["rule_files"] = [str(ALERTS)]
    job = next(j for j in loaded["scrape_configs"] if j["job_name"] == "mds-sink")
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [target]}]
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(loaded))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: process.poll() is not None or answers(base), timeout_s=30, what="Prometheus ready")
            assert process.poll() is None, f"Prometheus exited:\n{log_path.read_text()[-3000:]}"
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_prometheus_finds_every_dashboard_and_alert_metric_in_a_live_sink(tmp_path: Path) -> None:
    started = time.monotonic()
    # Gaps on a calendar that always trades (the test runs at any hour), asked for at once.
    continuity = {"calendar": "24/7", "grace_s": 0, "check_every_s": 0.5}
    scenario = make_scenario(partitions=2, tables=("bars",), continuity=continuity)
    tenant = scenario.add_tenant("prom")
    holes = unique_symbols(2)
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: side_port(worker) is not None and worker.state.joined, timeout_s=30, what="sink joined")
        port = side_port(worker)
        assert port is not None and port.address is not None
        host, number = port.address
        with running_prometheus(tmp_path, f"{host}:{number}") as prom:

            def target_up() -> bool:
                targets = api(prom, "/api/v1/targets")["data"]["activeTargets"]
                return any(t["labels"]["job"] == "mds-sink" and t["health"] == "up" for t in targets)

            wait_until(target_up, timeout_s=15, what="Prometheus scraping the sink")

            # A short stream: valid bars in chunks, and one record of an unknown tenant (a dead letter).
            encoder = scenario.encoder("bars")
            for chunk in range(STREAM_CHUNKS):
                records = [bar(tenant, s, i % 30) for i, s in enumerate(unique_symbols(CHUNK_RECORDS))]
                if chunk == STREAM_CHUNKS // 2:
                    records.append(bar("00000000-0000-4000-8000-000000000000", "NOBODY"))
                if chunk == 0:  # two holes of two bars: one stays open, the other is filled below
                    records += [bar(tenant, symbol, minute) for symbol in holes for minute in (0, 3)]
                if chunk == STREAM_CHUNKS - 1:
                    records += [bar(tenant, holes[1], minute) for minute in (1, 2)]
                scenario.produce_values("bars", [(encoder.key(r), encoder.encode(r)) for r in records])
                time.sleep(0.5)  # spread the stream over several scrapes, so rates have something to show
            ends = scenario.end_offsets()
            wait_until(lambda: drained(worker, ends), timeout_s=30, what="the stream committed")
            total = STREAM_CHUNKS * CHUNK_RECORDS
            topic = scenario.topic("bars")

            def scraped_after_drain() -> bool:
                found = query(prom, f'mds_sink_rows_written_total{{table="bars"}} >= {total}')
                lag = query(prom, f'sum(mds_sink_consumer_lag_messages{{topic="{topic}"}}) == 0')
                return bool(found) and bool(lag)

            wait_until(scraped_after_drain, timeout_s=15, what="Prometheus to scrape the drained sink")

            wanted = {name for _, expr in dashboard_queries() for name in metric_names(expr)}
            wanted |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
            missing = sorted(name for name in wanted if not query(prom, f'count({{__name__="{name}"}})'))
            assert not missing, f"named by the dashboard or the rules but not in Prometheus: {missing}"

            empty = []
            for title, expr in dashboard_queries():
                values = [float(r["value"][1]) for r in query(prom, as_promql(expr))]
                if not any(math.isfinite(v) for v in values):
                    empty.append(f"{title}: {as_promql(expr)} -> {values}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            dead = query(prom, f'mds_sink_dead_letters_total{{topic="{topic}"}}')
            assert [(d["metric"]["reason"], d["value"][1]) for d in dead] == [("unknown_tenant", "1")]

            groups = api(prom, "/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
            wait_until(
                lambda: all(
                    r["health"] == "ok" for g in api(prom, "/api/v1/rules")["data"]["groups"] for r in g["rules"]
                ),
                timeout_s=10,
                what="every rule evaluated without error",
            )
    assert time.monotonic() - started < 60
