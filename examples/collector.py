"""A minimal collector: publishes each bar as it arrives from its feed, and waits for the broker at the end.

    eval "$(deploy/local/stack.sh env)"
    python examples/collector.py 6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f AAPL 30

Settings (brokers, topics, registry) come from the same MDS_SINK_* variables as the sink's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from mds_sink.client import Bar, Publisher, RecordInvalid
from mds_sink.config.settings import load_settings


def feed(tenant: str, symbol: str, minutes: int) -> Iterator[Bar]:
    """Stands in for a vendor's stream: one 1m bar a minute, ending a minute ago."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    for m in range(minutes):
        close = 100.0 + m / 10
        yield Bar(
            tenant_id=tenant,
            vendor="example",
            symbol=symbol,
            timeframe="1m",
            ts=start + timedelta(minutes=m),
            open=close - 0.05,
            high=close + 0.1,
            low=close - 0.1,
            close=close,
            volume=1_000.0,
        )


def main(tenant: str, symbol: str, minutes: int) -> None:
    with Publisher(load_settings()) as publisher:  # leaving the block flushes: raises if any was not acknowledged
        for bar in feed(tenant, symbol, minutes):
            try:
                publisher.publish(bar)  # blocks only while the local queue is full
            except RecordInvalid as exc:  # the sink would dead-letter it: log it and go on
                print(f"skipped {exc}", file=sys.stderr)
    print(f"published {minutes} bars of {symbol}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
