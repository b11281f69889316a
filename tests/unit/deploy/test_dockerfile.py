"""The Dockerfile, linted for what an operator relies on (hadolint is not available here): a slim multi-stage
build, a non-root final stage without build tools or secrets, a health check on the side port, tini in
front of `mds-sink`, the bundled schemas and migrations; and a .dockerignore that keeps secrets out."""

from __future__ import annotations

import json
import re
import tomllib
from fnmatch import fnmatch

from mds_sink.config.settings import HttpSettings
from tests.deploy_files import ROOT, Stage, dockerfile_stages, env_pairs, unknown_settings

SIDE_PORT = HttpSettings().port
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)\b")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_KEY", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def final_stage() -> Stage:
    return dockerfile_stages()[-1]


def test_build_is_multi_stage_on_slim_python() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert final_stage().base.startswith("python:3.11-slim")
    builder_names = {s.name for s in stages[:-1]}
    copied_from = set(re.findall(r"--from=(\S+)", " ".join(final_stage().all("COPY"))))
    assert copied_from and copied_from <= builder_names


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = final_stage().all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_final_stage_has_no_build_tools() -> None:
    for command in final_stage().all("RUN"):
        installed = " ".join(re.findall(r"apt-get install ([^&;]*)", command))
        assert not BUILD_TOOLS.search(installed), f"build tools in the final stage: {installed}"
        assert "pip install" not in command, "the final stage installs from the builder's virtualenv only"


def test_no_secrets_are_baked_in() -> None:
    for stage in dockerfile_stages():
        for instruction in ("ENV", "ARG", "LABEL"):
            for args in stage.all(instruction):
                assert not SECRET_NAME.search(args), f"{instruction} {args}"
                assert not URL_WITH_PASSWORD.search(args), f"{instruction} {args}"


def test_environment_is_settings_and_listens_beyond_loopback() -> None:
    env: dict[str, str] = {}
    for args in final_stage().all("ENV"):
        env.update(env_pairs(args))
    assert unknown_settings(env) == []
    assert env["MDS_SINK_HTTP__HOST"] == "0.0.0.0"  # 127.0.0.1 (the default) is unreachable from outside
    assert str(SIDE_PORT) in final_stage().all("EXPOSE")[-1].split()


def test_healthcheck_probes_liveness_on_the_side_port() -> None:
    (healthcheck,) = final_stage().all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert f"'{SIDE_PORT}'" in healthcheck or f":{SIDE_PORT}/" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck  # not in the slim image


def test_tini_forwards_signals_to_mds_sink() -> None:
    entrypoint = json.loads(final_stage().all("ENTRYPOINT")[-1])
    assert entrypoint[0].endswith("/tini")
    assert entrypoint[-1] == "mds-sink"
    assert any(re.search(r"apt-get install .*\btini\b", run) for run in final_stage().all("RUN"))
    assert json.loads(final_stage().all("CMD")[-1]) == ["run"]


def test_image_carries_schemas_migrations_and_samples() -> None:
    """They reach the image inside the wheel (force-include), so the builder must copy their sources."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    bundled = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert set(bundled) >= {"schemas", "migrations"}
    builder_copies = {a.split()[0] for s in dockerfile_stages()[:-1] for a in s.all("COPY")}
    assert set(bundled) <= builder_copies


def dockerignored(name: str) -> bool:
    """Whether a top-level path is left out of the build context (last matching pattern wins)."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        if fnmatch(name, pattern):
            ignored = not negated
    return ignored


def test_build_context_leaves_out_secrets_and_clutter() -> None:
    for name in (".env", ".git", ".venv", "tests", "deploy", ".mypy_cache"):
        assert dockerignored(name), f"{name} would be sent to the build"
    for name in ("pyproject.toml", "README.md", "src", "schemas", "migrations", "samples"):
        assert not dockerignored(name), f"{name} is needed by the build"
