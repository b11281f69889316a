"""`mds-sink produce`: NDJSON (plain, .gz, stdin) to Avro records; bad lines named, good lines sent."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from mds_sink.client.produce import publish
from mds_sink.core.catalog import TABLES
from tests.support import SCHEMAS, bar, make_scenario, read_topic, sink_env


def test_produce_reads_gzip_and_stdin_and_names_bad_lines(tmp_path: Path) -> None:
    scenario = make_scenario(partitions=2, tables=["bars"])
    tenant = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
    lines = [
        json.dumps(bar(tenant, "AAPL", 1)),
        "{not json",
        json.dumps({**bar(tenant, "AAPL", 2), "colour": "red"}),
        json.dumps({**bar(tenant, "AAPL", 3), "ts": "yesterday"}),
        "",
        json.dumps(bar(tenant, "MSFT", 4)),
    ]
    path = tmp_path / "bars.ndjson.gz"
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")
    env = sink_env(scenario.settings)
    done = subprocess.run(
        [sys.executable, "-m", "mds_sink", "produce", "bar", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.strip() == f"produced 2 bar records to {scenario.topic('bars')}; 3 bad lines skipped"
    errors = [line for line in done.stderr.splitlines() if line.startswith(str(path))]
    assert errors[0].startswith(f"{path}: line 2: ")
    assert errors[1] == f"{path}: line 3: unknown field(s) colour for Bar"
    assert errors[2] == f"{path}: line 4: field 'ts': 'yesterday' is not an ISO 8601 timestamp"

    stdin = subprocess.run(
        [sys.executable, "-m", "mds_sink", "produce", "bars", "-"],
        env=env,
        input="".join(json.dumps(bar(tenant, "NVDA", m)) + "\n" for m in range(5, 11)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stdin.returncode == 0, stdin.stderr

    decoder = Decoder(load_schema_file(SCHEMAS / "bar.avsc"), LocalSchemas.from_dir(SCHEMAS))
    messages = read_topic(scenario.settings, scenario.topic("bars"))
    got = sorted((m.key().decode(), decoder.decode(m.value())["symbol"]) for m in messages)
    assert (
        got
        == [(f"{tenant}|polygon|AAPL", "AAPL"), (f"{tenant}|polygon|MSFT", "MSFT")]
        + [(f"{tenant}|polygon|NVDA", "NVDA")] * 6
    )
    # One symbol, one partition, in the order produced: the key keeps a symbol's records ordered.
    nvda = [m for m in messages if m.key().endswith(b"|NVDA")]
    assert len({m.partition() for m in nvda}) == 1
    assert [decoder.decode(m.value())["ts"] for m in sorted(nvda, key=lambda m: m.offset())] == sorted(
        decoder.decode(m.value())["ts"] for m in nvda
    )


def test_produce_refuses_a_line_the_sink_would_dead_letter_naming_line_and_field() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    tenant = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
    good = bar(tenant, "AAPL", 1)
    lines = [json.dumps({**good, "high": 1.0}), json.dumps(good), json.dumps({**good, "tenant_id": "acme"}), "[1]"]
    done = publish(scenario.settings, TABLES["bars"], io.StringIO("\n".join(lines)), schemas_dir=SCHEMAS)
    assert (done.topic, done.sent) == (scenario.topic("bars"), 1)
    assert [str(e) for e in done.bad_lines] == [
        "line 1: validate/ohlc_inconsistent (field high): high 1.0 / low 99.0 do not bound open 99.5 and close 100.0",
        "line 3: validate/bad_tenant_id (field tenant_id): tenant_id 'acme' is not a UUID",
        "line 4: expected a JSON object",
    ]
    assert [m.key() for m in read_topic(scenario.settings, scenario.topic("bars"))] == [
        f"{tenant}|polygon|AAPL".encode()
    ]
