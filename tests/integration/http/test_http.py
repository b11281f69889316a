"""The side port of a running sink, over real HTTP: probes, status, metrics and the admin API.

The sink under test batches for ten minutes, so records wait in its buffer until /admin/flush asks
for them: what reaches the database and which offsets are committed show what the API really did.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mds_sink.http.server import HEARTBEAT_LIMIT_S, side_port
from mds_sink.sink.worker import Worker
from tests.http_client import Reply, request
from tests.http_client import check_documented as check_openapi
from tests.integration.records import bar, unique_symbols
from tests.observability import OPENAPI, load_yaml
from tests.support import Scenario, make_scenario, running_sink, wait_until

TOKEN = "it-" + uuid.uuid4().hex + uuid.uuid4().hex
SPEC: dict[str, Any] = load_yaml(OPENAPI)


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> Reply:
    return request(base, method, path, body, token=token, timeout_s=15)


def check_documented(method: str, path: str, reply: Reply) -> None:
    check_openapi(SPEC, method, path, reply)


def metric(base: str, name: str, **labels: str) -> float | None:
    text = call(base, "GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@dataclass
class Side:
    scenario: Scenario
    worker: Worker
    base: str
    tenant: str

    @property
    def topic(self) -> str:
        return self.scenario.topic("bars")

    def produce(self, partition: int, symbols: list[str], tenant: str | None = None) -> None:
        encoder = self.scenario.encoder("bars")
        records = [bar(tenant or self.tenant, s, i) for i, s in enumerate(symbols)]
        items = [(encoder.key(r), encoder.encode(r)) for r in records]
        self.scenario.produce_values("bars", items, partition=partition)

    def symbols_written(self, symbols: list[str], tenant: str | None = None) -> set[str]:
        rows = self.scenario.rows(
            tenant or self.tenant, "SELECT DISTINCT symbol FROM bars WHERE symbol = ANY(%s)", (symbols,)
        )
        return {r[0] for r in rows}

    def consumed(self) -> float:
        return metric(self.base, "mds_sink_messages_consumed_total", topic=self.topic) or 0.0

    def status(self) -> dict[str, Any]:
        reply = call(self.base, "GET", "/status")
        assert reply.status == HTTPStatus.OK
        body: dict[str, Any] = reply.json()
        return body

    def partition(self, partition: int) -> dict[str, Any]:
        found: dict[str, Any] = next(p for p in self.status()["partitions"] if p["partition"] == partition)
        return found

    def flush_and_settle(self) -> None:
        assert call(self.base, "POST", "/admin/flush").status == HTTPStatus.ACCEPTED
        wait_until(lambda: self.status()["buffered_records"] == 0, timeout_s=30, what="the buffer to drain")


def base_url(worker: Worker) -> str:
    wait_until(lambda: side_port(worker) is not None, timeout_s=60, what="the side port to open")
    port = side_port(worker)
    assert port is not None and port.address is not None
    host, number = port.address
    return f"http://{host}:{number}"


@pytest.fixture(scope="module")
def side() -> Iterator[Side]:
    scenario = make_scenario(
        partitions=2,
        tables=("bars",),
        http={"admin_token": TOKEN},
        batching={"max_rows": 100_000, "max_ms": 600_000},
        database={"statement_timeout_ms": 500},
        retry={"initial_backoff_s": 0.1, "max_backoff_s": 1.0},
        validation={"tenant_refresh_s": 3600},
    )
    tenant = scenario.add_tenant("http")
    with running_sink(scenario.settings) as worker:
        base = base_url(worker)
        wait_until(lambda: len(worker.state.assignment) == 2, timeout_s=60, what="both partitions assigned")
        yield Side(scenario, worker, base, tenant)


@pytest.fixture
def clean(side: Side) -> Iterator[Side]:
    """Each test starts and ends with nothing paused by an operator and nothing buffered."""
    yield side
    call(side.base, "POST", "/admin/resume", {"topic": side.topic})
    side.flush_and_settle()
    assert side.status()["paused"] == []


def test_probes_status_and_metrics(clean: Side) -> None:
    health = call(clean.base, "GET", "/healthz")
    assert health.status == HTTPStatus.OK and health.json()["status"] == "ok"
    assert health.json()["heartbeat_age_s"] < HEARTBEAT_LIMIT_S
    ready = call(clean.base, "GET", "/readyz")
    assert (ready.status, ready.json()) == (HTTPStatus.OK, {"status": "ready"})

    scrape = call(clean.base, "GET", "/metrics")
    assert scrape.status == HTTPStatus.OK and scrape.headers["Content-Type"].startswith("text/plain")
    # Gauges follow the loop's state within a second.
    wait_until(lambda: metric(clean.base, "mds_sink_ready") == 1.0, timeout_s=10, what="mds_sink_ready 1")
    wait_until(lambda: metric(clean.base, "mds_sink_assigned_partitions") == 2.0, timeout_s=10, what="2 assigned")
    assert metric(clean.base, "mds_sink_build_info") == 1.0
    age = metric(clean.base, "mds_sink_heartbeat_age_seconds")
    assert age is not None and 0 <= age < 5

    status = clean.status()
    check_documented("GET", "/status", call(clean.base, "GET", "/status"))
    assert status["group"] == clean.scenario.settings.kafka.group_id
    assert status["topics"] == [clean.topic]
    assert status["schema_revision"] is not None
    assert [(p["topic"], p["partition"]) for p in status["partitions"]] == [(clean.topic, 0), (clean.topic, 1)]
    assert status["ready"] is True and status["admin_api"] is True


def test_every_described_operation_answers_as_described(clean: Side) -> None:
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/admin/pause"): {"topic": clean.topic, "partition": 1},
        ("POST", "/admin/resume"): {"topic": clean.topic, "partition": 1},
        ("PUT", "/admin/log-level"): {"level": "INFO"},
    }
    for path, item in SPEC["paths"].items():
        for method in item:
            reply = call(clean.base, method.upper(), path, bodies.get((method.upper(), path)))
            assert reply.status < 400, f"{method} {path}: {reply.status} {reply.body[:300]!r}"
            check_documented(method.upper(), path, reply)


def test_unknown_paths_and_methods(clean: Side) -> None:
    assert call(clean.base, "GET", "/nope").status == HTTPStatus.NOT_FOUND
    wrong = call(clean.base, "GET", "/admin/pause")
    assert wrong.status == HTTPStatus.METHOD_NOT_ALLOWED and wrong.headers["Allow"] == "POST"
    assert call(clean.base, "POST", "/status", {}).status == HTTPStatus.METHOD_NOT_ALLOWED


def test_admin_calls_without_the_right_token_are_refused_and_change_nothing(clean: Side) -> None:
    admin = [(m.upper(), p) for p, item in SPEC["paths"].items() for m in item if p.startswith("/admin/")]
    body = {"topic": clean.topic}
    for method, path in admin:
        missing = call(clean.base, method, path, body, token=None)
        assert missing.status == HTTPStatus.UNAUTHORIZED, path
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mds-sink admin"'
        assert missing.json() == {"error": "authentication required"}
        check_documented(method, path, missing)
        wrong = call(clean.base, method, path, body, token=TOKEN[:-1] + "!")
        assert (wrong.status, wrong.json()) == (HTTPStatus.FORBIDDEN, {"error": "forbidden"}), path
        check_documented(method, path, wrong)
    assert clean.worker.state.paused == set()
    assert clean.status()["paused"] == []


def test_bad_bodies_get_400_with_the_reason(clean: Side) -> None:
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/admin/pause", b"{not json", "body is not valid JSON"),
        ("POST", "/admin/pause", {"partition": 0}, "field 'topic' is required"),
        ("POST", "/admin/pause", {"topic": "other.topic"}, "topic 'other.topic' is not consumed by this sink"),
        ("POST", "/admin/resume", {"topic": clean.topic, "partition": -1}, "field 'partition' must be"),
        ("POST", "/admin/pause", {"topic": clean.topic, "extra": 1}, "unknown field 'extra'"),
        ("POST", "/admin/flush", {"now": True}, "this endpoint takes no body"),
        ("PUT", "/admin/log-level", {"level": "LOUD"}, "field 'level' must be one of"),
    ]
    for method, path, body, message in cases:
        reply = call(clean.base, method, path, body)
        assert reply.status == HTTPStatus.BAD_REQUEST, (path, body)
        assert reply.json()["error"].startswith(message), reply.json()
        check_documented(method, path, reply)
    too_big = call(clean.base, "POST", "/admin/pause", b"{" + b" " * 20_000 + b"}")
    assert too_big.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert raw_status(clean.base, "POST", "/admin/pause", {"Content-Length": "-5"}) == HTTPStatus.BAD_REQUEST
    assert raw_status(clean.base, "POST", "/admin/pause", {"Content-Length": "ten"}) == HTTPStatus.BAD_REQUEST
    assert clean.status()["paused"] == []


def raw_status(base: str, method: str, path: str, headers: Mapping[str, str]) -> int:
    """A request with headers exactly as given (urllib would set Content-Length itself)."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=15)
    try:
        connection.putrequest(method, path)
        connection.putheader("Authorization", f"Bearer {TOKEN}")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_probes_answer_while_many_idle_connections_are_held(clean: Side) -> None:
    host, port = urlsplit(clean.base).hostname, urlsplit(clean.base).port
    idle = [socket.create_connection((host or "127.0.0.1", port or 0), timeout=5) for _ in range(64)]
    try:
        answered = [call(clean.base, "GET", "/healthz").status for _ in range(40)]
    finally:
        for held in idle:
            held.close()
    assert answered == [HTTPStatus.OK] * 40


def test_pausing_a_partition_holds_its_records_until_resumed(clean: Side) -> None:
    held, flowing = unique_symbols(3), unique_symbols(3)
    paused = call(clean.base, "POST", "/admin/pause", {"topic": clean.topic, "partition": 0})
    assert (paused.status, paused.json()) == (HTTPStatus.OK, {"paused": [f"{clean.topic}[0]"]})
    assert clean.worker.state.paused == {(clean.topic, 0)}
    status = clean.status()
    assert status["paused"] == [f"{clean.topic}[0]"]
    assert [p["paused_by_operator"] for p in status["partitions"]] == [True, False]
    wait_until(lambda: metric(clean.base, "mds_sink_paused_partitions") == 1.0, timeout_s=10, what="the gauge")

    before = clean.consumed()
    committed_0 = clean.partition(0)["committed"]
    # Produced first: had partition 0 been fetched, its records would arrive no later than partition 1's.
    clean.produce(0, held)
    clean.produce(1, flowing)
    wait_until(lambda: clean.consumed() >= before + 3, timeout_s=30, what="partition 1 consumed")
    clean.flush_and_settle()
    wait_until(lambda: clean.symbols_written(flowing) == set(flowing), timeout_s=30, what="partition 1 written")
    assert clean.consumed() == before + 3
    assert clean.symbols_written(held) == set()
    assert clean.partition(0)["committed"] == committed_0

    resumed = call(clean.base, "POST", "/admin/resume", {"topic": clean.topic, "partition": 0})
    assert (resumed.status, resumed.json()) == (HTTPStatus.OK, {"resumed": [f"{clean.topic}[0]"]})
    assert clean.status()["paused"] == []
    wait_until(lambda: clean.consumed() >= before + 6, timeout_s=30, what="partition 0 consumed after resume")
    clean.flush_and_settle()
    wait_until(lambda: clean.symbols_written(held) == set(held), timeout_s=30, what="partition 0 written")
    end_0 = clean.scenario.end_offsets()[(clean.topic, 0)]
    wait_until(lambda: clean.partition(0)["committed"] == end_0, timeout_s=30, what="partition 0 committed")


def test_pausing_a_whole_topic_and_resuming_it(clean: Side) -> None:
    reply = call(clean.base, "POST", "/admin/pause", {"topic": clean.topic})
    assert reply.status == HTTPStatus.OK
    assert sorted(reply.json()["paused"]) == [f"{clean.topic}[0]", f"{clean.topic}[1]"]
    assert clean.worker.state.paused == {(clean.topic, 0), (clean.topic, 1)}
    again = call(clean.base, "POST", "/admin/pause", {"topic": clean.topic})
    assert again.status == HTTPStatus.OK  # idempotent
    not_ours = call(clean.base, "POST", "/admin/pause", {"topic": clean.topic, "partition": 7})
    assert not_ours.status == HTTPStatus.CONFLICT
    resumed = call(clean.base, "POST", "/admin/resume", {"topic": clean.topic})
    assert resumed.status == HTTPStatus.OK and len(resumed.json()["resumed"]) == 2
    assert clean.worker.state.paused == set()
    nothing = call(clean.base, "POST", "/admin/resume", {"topic": clean.topic})
    assert nothing.json()["resumed"] == []


def test_flush_writes_buffered_records_now(clean: Side) -> None:
    symbols = unique_symbols(5)
    before = clean.consumed()
    clean.produce(1, symbols)
    wait_until(lambda: clean.consumed() >= before + 5, timeout_s=30, what="records consumed")
    assert clean.status()["buffered_records"] == 5
    assert clean.symbols_written(symbols) == set()  # a ten-minute batch: nothing written yet

    reply = call(clean.base, "POST", "/admin/flush")
    assert (reply.status, reply.json()) == (HTTPStatus.ACCEPTED, {"flush": "requested", "buffered_records": 5})
    wait_until(lambda: clean.symbols_written(symbols) == set(symbols), timeout_s=30, what="records written")
    end_1 = clean.scenario.end_offsets()[(clean.topic, 1)]
    wait_until(lambda: clean.partition(1)["committed"] == end_1, timeout_s=30, what="offsets committed")
    last = clean.status()["last_flush"]
    assert last["table"] == "bars" and last["rows"] == 5 and last["dead_letters"] == 0
    assert clean.partition(1)["lag"] == 0


def test_tenant_reload_accepts_a_new_tenant_at_once(clean: Side) -> None:
    tenants_before = call(clean.base, "POST", "/admin/tenants/reload").json()
    newcomer = clean.scenario.add_tenant("newcomer")
    reply = call(clean.base, "POST", "/admin/tenants/reload")
    assert reply.status == HTTPStatus.OK
    assert reply.json()["known"] == tenants_before["known"] + 1
    symbols = unique_symbols(1)
    clean.produce(1, symbols, tenant=newcomer)
    clean.flush_and_settle()
    wait_until(
        lambda: clean.symbols_written(symbols, newcomer) == set(symbols), timeout_s=30, what="the new tenant's row"
    )


def test_log_level_changes_until_set_back(clean: Side) -> None:
    import logging  # noqa: PLC0415  (only this test touches the root logger)

    root = logging.getLogger()
    original = logging.getLevelName(root.level)
    try:
        reply = call(clean.base, "PUT", "/admin/log-level", {"level": "debug"})
        assert (reply.status, reply.json()) == (HTTPStatus.OK, {"level": "DEBUG", "previous": original})
        assert root.level == logging.DEBUG
    finally:
        call(clean.base, "PUT", "/admin/log-level", {"level": original})
    assert logging.getLevelName(root.level) == original


def test_config_is_shown_without_credentials(clean: Side) -> None:
    reply = call(clean.base, "GET", "/admin/config")
    assert reply.status == HTTPStatus.OK
    text = reply.body.decode()
    settings = clean.scenario.settings
    assert TOKEN not in text
    assert settings.database.url.get_secret_value() not in text
    shown = reply.json()
    assert shown["database"]["url"].endswith("as mds_writer") and "@" not in shown["database"]["url"]
    assert shown["kafka"]["group_id"] == settings.kafka.group_id
    assert shown["topics"]["bars"] == clean.topic
    assert shown["http"]["admin_token"] == "**redacted**"


def test_a_stalled_database_makes_the_sink_unready_but_alive(clean: Side) -> None:
    """A lock held on the sink's offsets ledger times its flushes out: a transient failure, retried."""
    warmup = unique_symbols(1)
    clean.produce(1, warmup)
    clean.flush_and_settle()
    wait_until(lambda: clean.symbols_written(warmup) == set(warmup), timeout_s=30, what="the ledger row")
    group = clean.scenario.settings.kafka.group_id
    symbols = unique_symbols(2)
    with psycopg.connect(clean.scenario.owner_url) as blocker:
        locked = blocker.execute(
            "SELECT partition FROM sink_offsets WHERE consumer_group = %s FOR UPDATE", (group,)
        ).fetchall()
        assert locked
        clean.produce(1, symbols)
        wait_until(lambda: clean.status()["buffered_records"] == 2, timeout_s=30, what="records consumed")
        call(clean.base, "POST", "/admin/flush")
        reasons: list[str] = []

        def breaker_open() -> bool:
            reply = call(clean.base, "GET", "/readyz")
            check_documented("GET", "/readyz", reply)
            if reply.status == HTTPStatus.SERVICE_UNAVAILABLE:
                reasons.append(reply.json()["reason"])
            return reasons[-1:] == ["circuit breaker open: the database is failing"]

        # The first failed flush marks the database unreachable; repeated ones open the breaker.
        wait_until(breaker_open, timeout_s=30, what="/readyz to report the open breaker")
        assert set(reasons) <= {"database not reachable", "circuit breaker open: the database is failing"}
        status = clean.status()
        assert status["breaker_open"] is True and status["ready"] is False
        assert "statement timeout" in (status["last_error"] or "")
        assert call(clean.base, "GET", "/healthz").status == HTTPStatus.OK  # the loop still turns
        assert (metric(clean.base, "mds_sink_retries_total", error_class="transient") or 0) >= 3
        assert clean.symbols_written(symbols) == set()
        blocker.rollback()
    wait_until(lambda: call(clean.base, "GET", "/readyz").status == HTTPStatus.OK, timeout_s=30, what="ready again")
    wait_until(lambda: clean.symbols_written(symbols) == set(symbols), timeout_s=30, what="the held rows")
    assert clean.status()["breaker_open"] is False


def test_scrapes_do_not_hold_up_the_consumer_loop(clean: Side) -> None:
    stop = threading.Event()
    answered: list[int] = []

    def scrape() -> None:
        while not stop.is_set():
            answered.append(call(clean.base, "GET", "/metrics").status)
            answered.append(call(clean.base, "GET", "/status").status)

    scrapers = [threading.Thread(target=scrape, daemon=True) for _ in range(4)]
    for thread in scrapers:
        thread.start()
    worst = 0.0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            worst = max(worst, time.monotonic() - clean.worker.state.heartbeat)
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in scrapers:
            thread.join(timeout=20)
    assert len(answered) > 20 and set(answered) == {HTTPStatus.OK}
    assert worst < 1.0, f"the consumer loop did not turn for {worst:.2f}s while being scraped"


def test_admin_api_is_disabled_without_a_token() -> None:
    scenario = make_scenario(partitions=1, tables=("bars",))
    assert scenario.settings.http.admin_token is None
    with running_sink(scenario.settings) as worker:
        base = base_url(worker)
        for path, item in SPEC["paths"].items():
            for method in item:
                if not path.startswith("/admin/"):
                    continue
                for token in (None, TOKEN):
                    reply = call(base, method.upper(), path, {"topic": scenario.topic("bars")}, token=token)
                    assert reply.status == HTTPStatus.FORBIDDEN, (path, token)
                    assert reply.json() == {"error": "admin API disabled: http.admin_token is not set"}
        assert call(base, "GET", "/status").json()["admin_api"] is False
        assert worker.state.paused == set()
