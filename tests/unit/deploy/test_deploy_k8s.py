"""deploy/k8s/: the kustomization is complete, every pod loads valid settings, probes hit the side port,
pods run unprivileged, shutdown fits the grace period, and KEDA never scales past the partition count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mds_sink.config.settings import HttpSettings, Settings
from mds_sink.errors import SettingsError
from tests.deploy_files import (
    COMPOSE_FILE,
    K8S,
    cli_has,
    k8s_object,
    k8s_objects,
    load_documents,
    pod_containers,
    settings_from,
    unknown_settings,
)

SIDE_PORT = HttpSettings().port
SECRET_SETTINGS = {
    "MDS_SINK_DATABASE__URL",
    "MDS_SINK_DATABASE__OWNER_URL",
    "MDS_SINK_DATABASE__READER_URL",
    "MDS_SINK_HTTP__ADMIN_TOKEN",
}


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its envFrom ConfigMaps/Secrets and literal env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s_object("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(k8s_object("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def sink_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = k8s_object("Deployment", "mds-sink")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def sink_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(container_env(sink_container()), monkeypatch)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_documents(K8S / "kustomization.yaml")[0]
    listed = sorted(kustomization["resources"])
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed == on_disk
    assert [i["name"] for i in kustomization["images"]] == ["mds-sink"]


def test_every_mds_sink_variable_is_a_setting() -> None:
    names: list[str] = []
    for obj in k8s_objects():
        if obj["kind"] in ("ConfigMap", "Secret"):
            names += [*obj.get("data", {}), *obj.get("stringData", {})]
        if obj["kind"] in ("Deployment", "Job"):
            names += [e["name"] for c in pod_containers(obj) for e in c.get("env", [])]
    assert names
    assert unknown_settings(names) == []


def test_config_map_holds_no_secrets_and_the_sink_no_owner_role() -> None:
    assert set(k8s_object("ConfigMap", "mds-sink")["data"]) & SECRET_SETTINGS == set()
    assert "MDS_SINK_DATABASE__OWNER_URL" not in container_env(sink_container())


def workloads(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_every_container_loads_its_settings_and_runs_a_real_command(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for container in [c for workload in workloads(kind) for c in pod_containers(workload)]:
        settings = settings_from(container_env(container), monkeypatch)
        args = container["args"]
        assert cli_has(args), f"{container['name']}: `mds-sink {' '.join(args)}` is not a command"
        if args[0] == "admin":
            assert settings.database.owner_url is not None, f"{container['name']} needs the owner role"


def test_migration_job_migrates_then_applies_policies() -> None:
    spec = k8s_object("Job", "mds-sink-migrate")["spec"]["template"]["spec"]
    assert [c["args"] for c in spec["initContainers"]] == [["admin", "migrate"]]
    assert [c["args"] for c in spec["containers"]] == [["admin", "policies", "apply"]]
    assert spec["restartPolicy"] == "Never"


def test_probes_and_ports_use_the_side_port(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = sink_settings(monkeypatch)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", SIDE_PORT)
    container = sink_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": SIDE_PORT}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert {p["port"] for p in probes.values()} <= {"http", SIDE_PORT}

    service = k8s_object("Service", "mds-sink")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ("http", SIDE_PORT)
    (endpoint,) = k8s_object("ServiceMonitor", "mds-sink")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (service_port["name"], "/metrics")


def test_selectors_find_the_sink_pods() -> None:
    deployment = k8s_object("Deployment", "mds-sink")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service", "mds-sink")
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": service["spec"]["selector"],
        "PodDisruptionBudget": k8s_object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= pod_labels.items(), f"the {kind} selects no sink pod"
    monitor = k8s_object("ServiceMonitor", "mds-sink")["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= service["metadata"]["labels"].items()


def test_grace_period_exceeds_the_drain_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    grace = k8s_object("Deployment", "mds-sink")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sink_settings(monkeypatch).shutdown_deadline_s


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_pods_run_unprivileged_with_bounded_resources(kind: str) -> None:
    for workload in workloads(kind):
        _unprivileged(workload["spec"]["jobTemplate"] if kind == "CronJob" else workload)


def _unprivileged(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    for container in pod_containers(workload):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def topic_partitions() -> int:
    """Partitions per data topic, as the compose `topics` job creates them."""
    compose: dict[str, Any] = yaml.safe_load(Path(COMPOSE_FILE).read_text(encoding="utf-8"))
    return int(compose["services"]["topics"]["environment"]["MDS_PARTITIONS"])


def test_keda_scales_the_sink_on_its_groups_lag_up_to_the_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    scaled = k8s_object("ScaledObject", "mds-sink")["spec"]
    settings = sink_settings(monkeypatch)
    assert scaled["scaleTargetRef"]["name"] == k8s_object("Deployment", "mds-sink")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= topic_partitions()
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.kafka.group_id
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert int(meta["lagThreshold"]) > 0


def test_disruption_budget_lets_a_single_replica_be_drained() -> None:
    budget = k8s_object("PodDisruptionBudget")["spec"]
    min_replicas = k8s_object("ScaledObject")["spec"]["minReplicaCount"]
    assert budget.get("maxUnavailable", 0) >= 1 or budget["minAvailable"] < min_replicas


def test_the_sink_refuses_the_example_secrets_token_until_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    env = container_env(sink_container())
    assert env["MDS_SINK_HTTP__HOST"] == "0.0.0.0"
    with pytest.raises(SettingsError, match=r"http.admin_token .*is the documented placeholder"):
        settings_from(env, monkeypatch, token_replaced=False)


def control_api_container() -> dict[str, Any]:
    (container,) = k8s_object("Deployment", "mds-sink-control-api")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def test_the_control_api_listens_with_a_token_on_its_port_behind_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    container = control_api_container()
    env = container_env(container)
    with pytest.raises(SettingsError, match=r"control_api.admin_token .*is the documented placeholder"):
        settings_from(env, monkeypatch, token_replaced=False)
    settings = settings_from(env, monkeypatch)
    assert container["args"] == ["admin", "serve"]
    assert settings.database.owner_url is not None and settings.control_api.admin_token is not None
    assert (settings.control_api.host, settings.control_api.port) == ("0.0.0.0", 8089)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"control": settings.control_api.port}
    assert {container[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")} == {"/healthz", "/readyz"}
    service = k8s_object("Service", "mds-sink-control-api")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (settings.control_api.port, "control")
    pods = k8s_object("Deployment", "mds-sink-control-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()
    assert not (k8s_object("Service", "mds-sink")["spec"]["selector"].items() <= pods.items())
    (writer,) = [e for e in container["env"] if e["name"] == "MDS_SINK_DATABASE__URL"]
    ref = writer["valueFrom"]["secretKeyRef"]
    assert ref["key"] in k8s_object("Secret", ref["name"])["stringData"]


def test_the_retention_cronjob_calls_the_control_api_with_its_token() -> None:
    job = k8s_object("CronJob", "mds-sink-retention")["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    (container,) = job["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in k8s_object("Secret", ref["name"])["stringData"]
    assert env["API"]["value"] == "http://mds-sink-control-api:8089"
    script = container["args"][0]
    assert '"$API/retention/apply"' in script and '"$API/operations/$op"' in script
