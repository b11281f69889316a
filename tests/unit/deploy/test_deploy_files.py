"""docker-compose.yml and deploy/: every file parses, `docker-compose config` accepts the stack, and every
name the stack shares with the code (settings, side port, topics, commands, mounted files) is one the code has.

No Docker engine: docker-compose 1.29 validates and interpolates offline (deploy/local/tools.sh installs it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mds_sink.client.produce import table_for
from mds_sink.config.settings import HttpSettings
from mds_sink.core.catalog import TABLES
from mds_sink.errors import SettingsError
from tests.deploy_files import (
    COMPOSE_FILE,
    DEPLOY,
    ENV_EXAMPLE,
    ROOT,
    bind_mounts,
    cli_has,
    compose_config,
    deploy_data_files,
    duration_s,
    load_documents,
    read_env_file,
    settings_from,
    unknown_settings,
)

SIDE_PORT = HttpSettings().port
SIDE_PORT_PATHS = ("/healthz", "/readyz", "/metrics", "/status")
MDS_SINK_SERVICES = ("migrate", "policies", "tenants", "sink", "demo", "control-api")
COMPLETED = "service_completed_successfully"
HEALTHY = "service_healthy"

Services = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def services() -> Services:
    config = compose_config()
    found: Services = config["services"]
    return found


@pytest.mark.parametrize("path", deploy_data_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_deploy_file_parses(path: Path) -> None:
    assert load_documents(path), f"{path.relative_to(ROOT)} holds no document"


def test_compose_brings_up_the_whole_stack(services: Services) -> None:
    assert set(services) == {
        "redpanda",
        "topics",
        "timescaledb",
        *MDS_SINK_SERVICES,
        "prometheus",
        "grafana",
    }
    assert services["demo"]["profiles"] == ["demo"]
    assert all("profiles" not in s for name, s in services.items() if name != "demo")


def test_every_mds_sink_variable_is_a_setting(services: Services) -> None:
    set_by_compose = [name for s in services.values() for name in s.get("environment", {})]
    assert unknown_settings(set_by_compose) == []
    assert unknown_settings(read_env_file(ENV_EXAMPLE)) == []


@pytest.mark.parametrize("service", MDS_SINK_SERVICES)
def test_each_mds_sink_container_loads_its_settings(
    services: Services, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(services[service]["environment"], monkeypatch)
    assert settings.kafka.bootstrap_servers == "redpanda:9092"
    assert settings.kafka.schema_registry_url == "http://redpanda:8081"
    assert settings.log.format == "json"


def test_containers_get_only_the_credentials_they_use(services: Services) -> None:
    for job in ("migrate", "policies", "tenants"):
        assert "MDS_SINK_DATABASE__OWNER_URL" in services[job]["environment"]
    sink = services["sink"]["environment"]
    assert sink["MDS_SINK_DATABASE__URL"].startswith("postgresql://mds_writer:")
    assert "MDS_SINK_DATABASE__OWNER_URL" not in sink
    assert not [name for name in services["demo"]["environment"] if name.startswith("MDS_SINK_DATABASE__")]


def test_secrets_come_from_the_env_file() -> None:
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert referenced - set(read_env_file(ENV_EXAMPLE)) == set()
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_sink_serves_the_side_port_and_scales(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = services["sink"]
    settings = settings_from(sink["environment"], monkeypatch)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", SIDE_PORT)
    assert str(SIDE_PORT) in [str(p) for p in sink["expose"]]
    assert " ".join(sink["healthcheck"]["test"]).count(f"127.0.0.1:{SIDE_PORT}/healthz") == 1
    # `--scale sink=N` needs N containers with no fixed name and no host port.
    assert "container_name" not in sink
    assert "ports" not in sink
    handler = (ROOT / "src" / "mds_sink" / "http" / "server.py").read_text(encoding="utf-8")
    assert [p for p in SIDE_PORT_PATHS if f'"{p}"' not in handler] == []


def test_sink_drains_before_it_is_killed(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = services["sink"]
    deadline = settings_from(sink["environment"], monkeypatch).shutdown_deadline_s
    assert duration_s(sink["stop_grace_period"]) > deadline


def test_services_start_in_order(services: Services) -> None:
    expected = {
        "topics": {"redpanda": HEALTHY},
        "migrate": {"timescaledb": HEALTHY},
        "policies": {"migrate": COMPLETED},
        "tenants": {"migrate": COMPLETED},
        "sink": {"topics": COMPLETED, "migrate": COMPLETED, "policies": COMPLETED},
        "demo": {"topics": COMPLETED, "tenants": COMPLETED},
        "control-api": {"timescaledb": HEALTHY},
        "grafana": {"prometheus": HEALTHY},
    }
    actual = {
        name: {dep: spec["condition"] for dep, spec in s["depends_on"].items()}
        for name, s in services.items()
        if "depends_on" in s
    }
    assert actual == expected
    for conditions in actual.values():
        for dep, condition in conditions.items():
            if condition == HEALTHY:
                assert services[dep]["healthcheck"]["test"] != ["NONE"], f"{dep} has no health check"
            else:
                assert services[dep].get("restart") == "no", f"{dep} is waited for but restarts"


def test_mounted_files_exist(services: Services) -> None:
    missing = [
        f"{name}: {source}" for name, s in services.items() for source, _ in bind_mounts(s) if not Path(source).exists()
    ]
    assert missing == []


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> path in the repository."""
    return {target: Path(source) for source, target in bind_mounts(service)}


def test_prometheus_gets_its_rules_and_scrapes_every_sink(services: Services) -> None:
    mounts = _mounts(services["prometheus"])
    config_file = mounts["/etc/prometheus/prometheus.yml"]
    assert config_file == DEPLOY / "prometheus" / "prometheus.yml"
    config = load_documents(config_file)[0]
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts, f"rule file {rule_file} is not mounted beside the config"
    assert mounts["/etc/prometheus/alerts.yml"] == DEPLOY / "prometheus" / "alerts.yml"
    sink_jobs = [
        job
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        if "sink" in sd["names"] and sd["port"] == SIDE_PORT
    ]
    assert len(sink_jobs) == 1, "one scrape job must resolve every `sink` replica on the side port"
    assert sink_jobs[0].get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_dashboard(services: Services) -> None:
    mounts = _mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    dashboard_targets = [t for t, src in mounts.items() if src == DEPLOY / "grafana" / "mds-sink.json"]
    assert len(dashboard_targets) == 1
    providers = [
        p for f in sorted((provisioning / "dashboards").glob("*.y*ml")) for p in load_documents(f)[0]["providers"]
    ]
    assert str(Path(dashboard_targets[0]).parent) in [p["options"]["path"] for p in providers]
    sources = [
        d for f in sorted((provisioning / "datasources").glob("*.y*ml")) for d in load_documents(f)[0]["datasources"]
    ]
    assert [d["url"] for d in sources if d["type"] == "prometheus"] == ["http://prometheus:9090"]


def test_topic_job_creates_the_sinks_topics_and_schemas(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    job = services["topics"]
    created = dict(pair.split(":") for pair in job["environment"]["MDS_TOPICS"].split())
    routes = settings_from(services["sink"]["environment"], monkeypatch).topics.table_by_topic()
    assert created == {topic: TABLES[table].record for topic, table in routes.items()}
    mounts = _mounts(job)
    assert mounts["/schemas"] == ROOT / "schemas"
    assert [s for s in created.values() if not (ROOT / "schemas" / f"{s}.avsc").is_file()] == []
    assert int(job["environment"]["MDS_PARTITIONS"]) >= 1


def test_demo_publishes_every_sample_file(services: Services) -> None:
    script = " ".join(services["demo"]["command"])
    published = dict(re.findall(r"mds-sink produce (\w+) /samples/(\S+?);?(?:\s|$)", script))
    samples = {p.name for p in (ROOT / "samples").glob("*.ndjson.gz")}
    assert set(published.values()) == samples
    for kind, file in published.items():
        assert file == f"{table_for(kind).name}.ndjson.gz", f"{file} published as {kind}"
    assert _mounts(services["demo"])["/samples"] == ROOT / "samples"


def mds_sink_commands(services: Services) -> list[list[str]]:
    """Every `mds-sink ...` the stack runs: service commands, the demo script, the mounted shell scripts
    (a command starts a line or follows `;`, `&&` or `|`)."""
    commands = [s["command"] for name, s in services.items() if name in MDS_SINK_SERVICES and "entrypoint" not in s]
    scripts = sorted({src for s in services.values() for src in _mounts(s).values() if src.suffix == ".sh"})
    for text in [" ".join(services["demo"]["command"]), *(p.read_text(encoding="utf-8") for p in scripts)]:
        commands += [
            m.split() for m in re.findall(r"(?:^\s*|[;&|]\s*)mds-sink((?: [a-z][a-z_-]*)+)", text, re.MULTILINE)
        ]
    return commands


def test_compose_runs_commands_the_cli_has(services: Services) -> None:
    commands = mds_sink_commands(services)
    assert ["admin", "migrate"] in commands
    assert ["admin", "policies", "apply"] in commands
    assert [" ".join(c) for c in commands if not cli_has(c)] == []


def test_the_sink_binding_every_interface_refuses_the_shipped_placeholder_token(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = services["sink"]["environment"]
    assert sink["MDS_SINK_HTTP__HOST"] == "0.0.0.0"
    with pytest.raises(SettingsError, match=r"http.admin_token .*is the documented placeholder"):
        settings_from(sink, monkeypatch, token_replaced=False)
