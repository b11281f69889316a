"""`mds-sink demo`: the sink draining the sample market-data stream into the database, end to end."""

from __future__ import annotations

import gzip
import io
import json
import threading
import time

import psycopg
import typer
from confluent_kafka.admin import AdminClient

from mds_sink.client.produce import publish
from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.control.tenants import add_missing
from mds_sink.core.catalog import TABLES
from mds_sink.db import migrate
from mds_sink.errors import StartupError
from mds_sink.kafka.clients import admin_config, ensure_topics, watermarks
from mds_sink.service import Service

DEMO_PARTITIONS = 3


def show(settings: Settings, tenants: dict[str, str]) -> None:
    url = (settings.database.reader_url or settings.database.url).get_secret_value()
    with psycopg.connect(url) as conn:
        typer.echo(f"\n{'table':<18}" + "".join(f"{n:>17}" for n in tenants))
        for table in (*TABLES, "latest_prices"):
            counts = []
            for tenant_id in tenants.values():
                with conn.transaction():
                    # The reader sees one tenant at a time through the tenant views (either isolation mode).
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
                    row = conn.execute(f"SELECT count(*) FROM tenant_view.{table}").fetchone()
                counts.append(row[0] if row else 0)
            typer.echo(f"{table:<18}" + "".join(f"{c:>17}" for c in counts))
        name, tenant_id = next(iter(tenants.items()))
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
            prices = conn.execute(
                "SELECT symbol, vendor, price, source, ts FROM tenant_view.latest_prices ORDER BY symbol"
            ).fetchall()
        typer.echo(f"\nlatest prices of {name}:")
        for symbol, vendor, price, source, ts in prices:
            typer.echo(f"  {symbol:<6} {vendor:<8} {price:>10.2f}  from {source:<5}  at {ts:%Y-%m-%d %H:%M:%S}Z")


def run_demo(settings: Settings, *, timeout_s: float = 120.0) -> None:
    samples = resource_dir("samples")
    tenants: dict[str, str] = json.loads((samples / "tenants.json").read_text())
    typer.echo("1. migrating the database")
    migrate.upgrade(settings)
    typer.echo(f"2. adding tenants {', '.join(tenants)}")
    add_missing(settings.database.require_owner_url(), tenants)
    routes = settings.topics.table_by_topic()
    topics = list(routes)
    created = ensure_topics(AdminClient(admin_config(settings)), dict.fromkeys(topics, DEMO_PARTITIONS), {})
    typer.echo(f"3. topics ready{' (created ' + ', '.join(created) + ')' if created else ''}")

    service = Service(settings)
    worker = service.worker
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported by the demo's own thread
            errors.append(exc)

    thread = threading.Thread(target=consume, name="mds-demo-sink")
    thread.start()
    typer.echo("4. sink started; publishing the sample stream")
    for topic, table in routes.items():
        spec = TABLES[table]
        with gzip.open(samples / f"{table}.ndjson.gz", "rb") as raw:
            done = publish(
                settings,
                spec,
                io.TextIOWrapper(raw, encoding="utf-8"),
                topic=topic,
                schemas_dir=settings.schemas_dir or resource_dir("schemas"),
            )
        typer.echo(f"   {done.sent:>5} {spec.record} records -> {topic}")
    target = {tp: high for tp, (_low, high) in watermarks(settings, topics).items()}
    deadline = time.monotonic() + timeout_s
    behind = sum(target.values())
    while time.monotonic() < deadline and not errors:
        committed = dict(worker.state.committed)  # taken before the sink stops and forgets its partitions
        behind = sum(max(0, end - committed.get(tp, 0)) for tp, end in target.items())
        if not behind:
            break
        time.sleep(0.2)
    worker.stopping.set()
    thread.join(timeout=settings.shutdown_deadline_s + 10)
    if errors:
        raise StartupError(str(errors[0]))
    if behind:
        raise StartupError(f"the sink left {behind} of {sum(target.values())} offsets uncommitted in {timeout_s:.0f}s")
    produced = sum(target.values())
    typer.echo(f"5. every offset committed (the topics hold {produced} records); what landed, per tenant:")
    show(settings, tenants)
