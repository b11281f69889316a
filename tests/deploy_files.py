"""Reading the deployment files the way their tools do: YAML documents, `docker-compose config`, a Dockerfile.

Pure helpers for the static deploy tests (no Docker engine, no cluster): they parse files and run the
docker-compose binary, which validates and interpolates without talking to a daemon.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from mds_sink.cli.app import app
from mds_sink.config.settings import ENV_PREFIX, PLACEHOLDER_TOKEN_PREFIX, Settings, load_settings, setting_env_names

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"


def load_documents(path: Path) -> list[Any]:
    """Every document of a YAML or JSON file, empty documents dropped."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def deploy_data_files() -> list[Path]:
    """docker-compose.yml and every YAML/JSON file under deploy/ (editor temp files and dotfiles aside)."""
    found = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.suffix in {".yml", ".yaml", ".json"} and not p.name.startswith(".")
    ]
    return [COMPOSE_FILE, *sorted(found)]


# -- settings ----------------------------------------------------------------------------------------
def unknown_settings(env_names: Iterable[str]) -> list[str]:
    known = setting_env_names() | {"MDS_SINK_CONFIG_FILE"}
    return sorted(n for n in env_names if n.upper().startswith(ENV_PREFIX) and n.upper() not in known)


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, *, token_replaced: bool = True) -> Settings:
    """The settings a container with exactly this environment would load (the test's own MDS_SINK_* removed),
    after the documented step of replacing the placeholder admin token, unless `token_replaced` is False."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.upper().startswith(ENV_PREFIX):
            placeholder = token_replaced and str(value).startswith(PLACEHOLDER_TOKEN_PREFIX)
            monkeypatch.setenv(name, secrets.token_hex(32) if placeholder else str(value))
    return load_settings()


def read_env_file(path: Path) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


# -- the CLI ------------------------------------------------------------------------------------------
def cli_has(words: list[str]) -> bool:
    """True if `mds-sink WORDS...` names a command (not just a group); trailing words are its arguments."""
    command: object = typer.main.get_command(app)
    for word in words:
        subcommands: dict[str, object] | None = getattr(command, "commands", None)  # only groups have them
        if subcommands is None:
            break
        if word not in subcommands:
            return False
        command = subcommands[word]
    return getattr(command, "commands", None) is None


# -- docker-compose ----------------------------------------------------------------------------------
# Compose v2's `config` leaves out services of profiles not enabled; 1.29 lists them all.
CONFIG_ARGS = ("--profile", "demo", "config")


def compose_config() -> dict[str, Any]:
    """`docker-compose config` of docker-compose.yml with a .env made from .env.example, parsed.

    Fails (never skips) without the binary: the check is the point of the test.
    """
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run deploy/local/tools.sh (Debian package docker-compose)")
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / ".env"
        shutil.copyfile(ENV_EXAMPLE, env_file)
        # A clean environment: variables of the test's shell must not fill in what .env.example lacks.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
        done = subprocess.run(
            [
                binary,
                "--project-directory",
                str(ROOT),
                "--env-file",
                str(env_file),
                "-f",
                str(COMPOSE_FILE),
                *CONFIG_ARGS,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def bind_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of a resolved service's bind mounts; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            source, target = volume.get("source", ""), volume.get("target", "")
        if source.startswith(("/", ".")):
            mounts.append((source, target))
    return mounts


def duration_s(value: str) -> float:
    """A compose duration (`45s`, `1m30s`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- Kubernetes --------------------------------------------------------------------------------------
def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects.extend(load_documents(path))
    return objects


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- Dockerfile --------------------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Build stages of a Dockerfile: continuation lines joined, comments dropped, instructions upper-cased."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            logical.append(line)
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        if instruction == "FROM":
            words = args.split()
            named = len(words) == 3 and words[1].upper() == "AS"
            stages.append(Stage(words[0], words[2] if named else None))
        elif stages:
            stages[-1].instructions.append((instruction, args))
    return stages


def env_pairs(args: str) -> dict[str, str]:
    """ENV NAME=value NAME2=value2 (the legacy `ENV NAME value` form too)."""
    if "=" not in args.split(maxsplit=1)[0]:
        name, _, value = args.partition(" ")
        return {name: value}
    return dict(word.split("=", 1) for word in args.split())
