"""The examples in examples/ run as documented against the local stack, and what they publish is on the topics."""

from __future__ import annotations

import subprocess
import sys

from mds_sink.avro.codec import Decoder, LocalSchemas, load_schema_file
from tests.support import ROOT, SCHEMAS, make_scenario, read_topic, sink_env

TENANT = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"


def run(script: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_collectors_publish_what_they_say() -> None:
    scenario = make_scenario(partitions=2, tables=["bars", "quotes"])
    env = sink_env(scenario.settings)
    assert run("collector.py", TENANT, "AAPL", "30", env=env) == "published 30 bars of AAPL"
    assert run("async_collector.py", TENANT, "AAPL,MSFT", "20", env=env) == "published 40 quotes of AAPL, MSFT"

    bars = Decoder(load_schema_file(SCHEMAS / "bar.avsc"), LocalSchemas.from_dir(SCHEMAS))
    on_topic = [bars.decode(m.value()) for m in read_topic(scenario.settings, scenario.topic("bars"))]
    assert len(on_topic) == 30
    assert len({b["ts"] for b in on_topic}) == 30
    assert {(b["tenant_id"], b["vendor"], b["symbol"]) for b in on_topic} == {(TENANT, "example", "AAPL")}
    quotes = read_topic(scenario.settings, scenario.topic("quotes"))
    assert (
        sorted(m.key() for m in quotes)
        == [f"{TENANT}|example|AAPL".encode()] * 20 + [f"{TENANT}|example|MSFT".encode()] * 20
    )
