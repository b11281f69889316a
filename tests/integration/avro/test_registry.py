"""Registry mode against a real Confluent-compatible Schema Registry (Apicurio, from Maven Central)."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mds_sink.avro.codec import encode, load_schema_file, strip_logical_types
from mds_sink.client.produce import publish
from mds_sink.core.tables import BARS
from tests.support import ROOT, SCHEMAS, bar, drained, make_scenario, running_sink, wait_until

REGISTRY = ROOT / "deploy" / "local" / "registry" / "registry.sh"


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    up = subprocess.run(["bash", str(REGISTRY), "up"], capture_output=True, text=True, timeout=600, check=False)
    if up.returncode != 0:
        pytest.fail(f"registry.sh up failed:\n{up.stderr[-3000:]}")
    url = subprocess.run(["bash", str(REGISTRY), "url"], capture_output=True, text=True, check=True).stdout.strip()
    yield url
    subprocess.run(["bash", str(REGISTRY), "down"], capture_output=True, timeout=120, check=False)


def test_sink_reads_writer_schemas_from_the_registry_old_and_new(registry_url: str) -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], kafka={"schema_registry_url": registry_url})
    tenant = scenario.add_tenant("registry")
    topic = scenario.topic("bars")
    lines = "".join(json.dumps(bar(tenant, "REG", m, close=5.0 + m)) + "\n" for m in range(3))
    done = publish(scenario.settings, BARS, io.StringIO(lines), schemas_dir=SCHEMAS)
    assert (done.topic, done.sent, done.bad_lines) == (topic, 3, [])

    # A collector still on schema 1.0 registers it under the same subject and writes with its id.
    previous = load_schema_file(SCHEMAS / "previous" / "bar.avsc")
    with SchemaRegistryClient({"url": registry_url}) as client:
        old_id = client.register_schema(f"{topic}-value", Schema(json.dumps(previous), "AVRO"))
    old_record = {k: v for k, v in bar(tenant, "OLD", 9, close=7.0).items() if k != "trade_count"}
    old_record["ts"] = 1_763_650_800_000_000 + 9 * 60_000_000
    value = encode(fastavro.parse_schema(strip_logical_types(previous)), old_id, old_record)
    scenario.produce_values("bars", [(b"old", value)])

    with running_sink(scenario.settings) as worker:
        ends = scenario.end_offsets()
        wait_until(lambda: drained(worker, ends), what="every offset committed")
    assert scenario.rows(tenant, "SELECT symbol, close, trade_count FROM bars ORDER BY symbol, ts") == [
        ("OLD", 7.0, None),
        ("REG", 5.0, 10),
        ("REG", 6.0, 10),
        ("REG", 7.0, 10),
    ]
    assert scenario.dead_letters("bars", expect=0) == []
