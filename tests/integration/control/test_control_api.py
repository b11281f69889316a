"""`mds-sink admin serve` over real HTTP, as its own process, against the real broker and database.

Schema and policy tests use a throwaway database; every answer is checked against
docs/control-api.yaml (status listed for the operation, JSON body valid against its schema).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from mds_sink.cli.app import app
from mds_sink.config.settings import Settings, load_settings
from mds_sink.control.api import ROUTE_TABLE
from mds_sink.db import migrate
from mds_sink.db.migrate import MIGRATION_LOCK_KEY
from tests.http_client import Reply, check_documented, request
from tests.integration.control.test_backfill import T_AFTER, T_RANGE, iso, produce
from tests.observability import load_yaml
from tests.support import Scenario, bar, make_scenario, sink_env, wait_until
from tests.throwaway import database_settings, owner_url, throwaway_database

TOKEN = "ct-" + uuid.uuid4().hex + uuid.uuid4().hex
SPEC: dict[str, Any] = load_yaml(Path(__file__).resolve().parents[3] / "docs" / "control-api.yaml")
SEEN: set[tuple[str, str]] = set()  # operations answered, for the coverage check at the end


def _template(path: str) -> str:
    bare = path.split("?", maxsplit=1)[0]
    for template in ROUTE_TABLE:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), bare):
            return template
    raise AssertionError(f"no route for {path}")


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> Reply:
    reply = request(base, method, path, body, token=token, timeout_s=90)
    template = _template(path)
    check_documented(SPEC, method, template, reply)
    SEEN.add((template, method))
    return reply


@contextmanager
def control_api(settings: Settings, tmp: Path, **env: str) -> Iterator[str]:
    """`mds-sink admin serve` on a free port, stopped with SIGTERM (it must exit 0)."""
    log = tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
    environment = {
        **{k: str(v) for k, v in sink_env(settings).items()},
        "MDS_SINK_DATABASE__URL": settings.database.url.get_secret_value(),
        "MDS_SINK_DATABASE__OWNER_URL": owner_url(settings),
        "MDS_SINK_CONTROL_API__PORT": "0",
        "MDS_SINK_CONTROL_API__ADMIN_TOKEN": TOKEN,
        **env,
    }
    if settings.database.reader_url is not None:
        environment["MDS_SINK_DATABASE__READER_URL"] = settings.database.reader_url.get_secret_value()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mds_sink", "admin", "serve"], env=environment, stderr=out)
    try:
        found: list[str] = []

        def listening() -> bool:
            assert proc.poll() is None, log.read_text()
            found.extend(re.findall(r"control API listening on (http://[0-9.:]+)", log.read_text()))
            return bool(found)

        wait_until(listening, timeout_s=30, what="the control API to listen")
        yield found[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=45) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


def cli(settings: Settings, *args: str) -> Any:
    env = {
        **{k: str(v) for k, v in sink_env(settings).items()},
        "MDS_SINK_DATABASE__URL": settings.database.url.get_secret_value(),
        "MDS_SINK_DATABASE__OWNER_URL": owner_url(settings),
    }
    if settings.database.reader_url is not None:
        env["MDS_SINK_DATABASE__READER_URL"] = settings.database.reader_url.get_secret_value()
    return CliRunner().invoke(app, list(args), env=env)


def operation_done(base: str, op: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(call(base, "GET", f"/operations/{op}").json())
        return bool(found["state"] != "running")

    wait_until(done, timeout_s=60, what=f"operation {op} to end")
    return found


def test_schema_version_migrate_serialized_and_refusals(tmp_path: Path) -> None:
    base_settings = load_settings()
    with throwaway_database(owner_url(base_settings)) as name:
        s = database_settings(base_settings, name)
        migrate.upgrade(s, "0004")
        order = [rev for rev, _, _ in migrate.history(s)]
        with control_api(s, tmp_path) as base:
            # Without a token, or with a wrong one, every protected route refuses, and says nothing more.
            for path, methods in ROUTE_TABLE.items():
                concrete = path.replace("{job}", str(uuid.uuid4())).replace("{id}", "x")
                for method, (_name, protected) in methods.items():
                    if not protected:
                        continue
                    missing = call(base, method, concrete, token=None)
                    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
                    wrong = call(base, method, concrete, token="x" * 40)
                    assert (wrong.status, wrong.json()) == (403, {"error": "forbidden"})
            assert migrate.current_revision(s) == "0004"  # nothing was done by a refused call

            assert call(base, "GET", "/healthz", token=None).json() == {"status": "ok"}
            assert call(base, "GET", "/readyz", token=None).json() == {"status": "ready"}
            assert call(base, "GET", "/metrics", token=None).body.startswith(b"#")
            assert call(base, "GET", "/schema/version", token=None).json() == {
                "current": "0004",
                "head": order[-1],
                "pending": order[4:],
            }
            moved = call(base, "POST", "/migrate?wait=60", {"to": "0005"})
            assert moved.status == 200 and moved.json()["result"] == {"direction": "upgrade", "revision": "0005"}
            assert call(base, "GET", "/schema/version").json()["current"] == "0005"
            refused = call(base, "POST", "/migrate", {"to": "0004"})
            assert refused.status == 409 and "allow_downgrade" in refused.json()["error"]
            assert call(base, "POST", "/migrate", {"to": "0099"}).status == 409
            assert call(base, "POST", "/migrate", {"to": 5}).status == 400
            down = call(base, "POST", "/migrate?wait=60", {"to": "0004", "allow_downgrade": True})
            assert down.status == 200 and migrate.current_revision(s) == "0004"

            # Two concurrent calls: both wait on the advisory lock `admin migrate` takes, then one migrates
            # and the other finds the schema at head.
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
            with psycopg.connect(owner_url(s), autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
                first, second = (call(base, "POST", "/migrate", {}) for _ in range(2))
                assert (first.status, second.status) == (202, 202)
                assert first.headers["Location"] == f"/operations/{first.json()['id']}"
                wait_until(lambda: holder.execute(waiting).fetchone() == (2,), timeout_s=20, what="both at the lock")
                assert migrate.current_revision(s) == "0004"
                holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            results = [operation_done(base, r.json()["id"]) for r in (first, second)]
            assert [r["state"] for r in results] == ["succeeded", "succeeded"]
            assert [r["result"] for r in results] == [{"direction": "upgrade", "revision": order[-1]}] * 2
            assert call(base, "GET", "/schema/version").json() == {
                "current": order[-1],
                "head": order[-1],
                "pending": [],
            }
            listed = call(base, "GET", "/operations").json()["operations"]
            assert {o["id"] for o in listed} >= {first.json()["id"], second.json()["id"]}


def test_policies_retention_and_aggregates_change_what_the_cli_then_shows(tmp_path: Path) -> None:
    base_settings = load_settings()
    with throwaway_database(owner_url(base_settings)) as name:
        s = database_settings(base_settings, name)
        migrate.upgrade(s)
        tenant = str(uuid.uuid4())
        old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=400)
        recent = old + timedelta(days=380)
        with psycopg.connect(owner_url(s)) as conn, conn.transaction():
            conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, 'api')", (tenant,))
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
            for ts in (old, recent):
                conn.execute(
                    "INSERT INTO bars_minute (ts, tenant_id, vendor, symbol, timeframe, open, high, low, close, volume,"
                    " revision) VALUES (%s, %s, 'polygon', 'RET', '1m', 1, 2, 0.5, 1.5, 10, 0)",
                    (ts, tenant),
                )
        bars = ["query", "bars", "--tenant", tenant, "--symbol", "RET", "--json"]
        window = [
            "--from",
            (old - timedelta(days=1)).strftime("%Y-%m-%d"),
            "--to",
            datetime.now(UTC).strftime("%Y-%m-%d"),
        ]
        shown = cli(s, *bars, *window)
        assert shown.exit_code == 0, shown.output
        assert len(json.loads(shown.output)) == 2
        before = cli(s, "admin", "policies", "show", "--json")
        assert before.exit_code == 0, before.output
        assert json.loads(before.output)["aggregates"] == []
        with control_api(s, tmp_path) as base:
            applied = call(base, "POST", "/policies/apply?wait=60")
            assert applied.status == 200 and applied.json()["state"] == "succeeded", applied.json()
            after = json.loads(cli(s, "admin", "policies", "show", "--json").output)
            assert sorted(a["aggregate"] for a in after["aggregates"]) == ["bars_1d", "bars_1h", "bars_5m"]
            assert after["pending"] == []

            kept = call(base, "POST", "/retention/apply?wait=60")
            assert kept.status == 200, kept.json()
            minute = next(t for t in kept.json()["result"]["tables"] if t["table"] == "bars_minute")
            assert (minute["method"], minute["removed"], minute["keep"]) == ("delete", 1, "6 months")
            remaining = json.loads(cli(s, *bars, *window).output)
            assert [r["ts"][:16] for r in remaining] == [recent.isoformat()[:16]]

            refresh = {"from": old.isoformat(), "to": recent.isoformat()}
            refreshed = call(base, "POST", "/aggregates/refresh?wait=60", refresh)
            assert refreshed.status == 200, refreshed.json()
            assert refreshed.json()["result"]["computed_when_read"] == ["bars_5m", "bars_1h", "bars_1d"]
            assert call(base, "POST", "/aggregates/refresh", {"from": "yesterday"}).status == 400
            assert call(base, "POST", "/retention/apply?wait=9999").status == 400


def test_a_backfill_started_polled_cancelled_listed_and_run_to_its_end(tmp_path: Path) -> None:
    s: Scenario = make_scenario(partitions=2, tables=("bars",))
    tenant = s.add_tenant("api-backfill")
    produce(s, [(bar(tenant, f"API{i % 10}", i // 10), T_RANGE + i) for i in range(600)])
    request = {"topics": [s.topic("bars")], "from": iso(T_RANGE), "to": iso(T_AFTER)}
    with control_api(s.settings, tmp_path) as base:
        started = call(base, "POST", "/backfill", {**request, "rate_per_s": 40})
        assert started.status == 202, started.json()
        job = started.json()["job"]
        assert started.headers["Location"] == f"/backfill/{job}"
        assert started.json()["progress"]["offsets"] == 600

        def progressed() -> bool:
            polled = call(base, "GET", f"/backfill/{job}").json()
            return bool(polled["state"] == "running" and 0 < polled["progress"]["done"] < 600)

        wait_until(progressed, timeout_s=30, what="the job to make progress")
        cancelled = call(base, "DELETE", f"/backfill/{job}")
        assert cancelled.status == 202 and cancelled.json()["cancel_requested"] is True
        wait_until(
            lambda: call(base, "GET", f"/backfill/{job}").json()["state"] == "cancelled", timeout_s=30, what="cancelled"
        )
        report = call(base, "GET", f"/backfill/{job}").json()
        assert 0 < report["progress"]["done"] < 600
        assert report["totals"]["records"] == report["progress"]["done"]
        listed = call(base, "GET", "/backfill?limit=5").json()["jobs"]
        assert job in [j["job"] for j in listed]
        assert call(base, "GET", "/backfill?limit=0").status == 400

        # Resumed, without a rate, to its end: every record counted once across the two runs.
        resumed = call(base, "POST", "/backfill?wait=60", {"resume": job})
        assert resumed.status == 200, resumed.json()
        final = resumed.json()
        assert final["state"] == "succeeded" and final["progress"] == {"offsets": 600, "done": 600}
        assert final["totals"]["records"] == 600 and final["totals"]["rows_changed"] == 600
        assert call(base, "POST", "/backfill", {"resume": job}).status == 409

        empty = call(base, "POST", "/backfill", {**request, "from": iso(T_AFTER), "to": iso(T_AFTER + 1000)})
        assert empty.status == 200 and empty.json()["job"] is None
        assert call(base, "POST", "/backfill", {**request, "topics": ["nope"]}).status == 400
        assert call(base, "GET", f"/backfill/{uuid.uuid4()}").status == 404
        assert call(base, "DELETE", f"/backfill/{uuid.uuid4()}").status == 404


def test_every_operation_was_called() -> None:
    """Runs last in this module: each described operation was answered, and answered as described."""
    described = {
        (path, method.upper()) for path, item in SPEC["paths"].items() for method in item if method != "parameters"
    }
    assert described == SEEN
