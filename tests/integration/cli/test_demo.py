"""The README's first command ends in `mds-sink demo`: it must drain the sample stream and show it."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_drains_the_sample_stream_into_the_database() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDS_SINK_TOPICS", "MDS_SINK_KAFKA__GROUP"))}
    done = subprocess.run(
        [sys.executable, "-m", "mds_sink", "demo"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "5. every offset committed" in out
    table = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.split()
        and line.split()[0] in {"bars", "quotes", "fundamentals", "news", "option_snapshots", "jobs", "latest_prices"}
    }
    # samples/: per tenant 5 symbols x 60 one-minute bars (12 corrections overwrite existing rows), 12 quotes
    # per symbol, 4 fundamentals, 6 articles (3 without an id), 16 options, 1 job (its repeat is the same job).
    assert table == {
        "bars": ["300"] * 3,
        "quotes": ["60"] * 3,
        "fundamentals": ["4"] * 3,
        "news": ["6"] * 3,
        "option_snapshots": ["16"] * 3,
        "jobs": ["1"] * 3,
        "latest_prices": ["6"] * 3,
    }
    assert "AAPL   polygon      228.43  from bar" in out
