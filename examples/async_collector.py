"""An asyncio collector: several symbols' feeds published concurrently, each record's acknowledgement awaited.

eval "$(deploy/local/stack.sh env)"
python examples/async_collector.py 6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f AAPL,MSFT 30
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from mds_sink.client import AsyncPublisher, Delivery, Quote
from mds_sink.config.settings import load_settings


async def feed(tenant: str, symbol: str, ticks: int) -> AsyncIterator[Quote]:
    """Stands in for a vendor's websocket: one quote a second, ending a moment ago."""
    start = datetime.now(UTC) - timedelta(seconds=ticks)
    for t in range(ticks):
        await asyncio.sleep(0)  # a real feed awaits its socket here
        mid = 100.0 + t / 100
        yield Quote(
            tenant_id=tenant,
            vendor="example",
            symbol=symbol,
            ts=start + timedelta(seconds=t),
            bid=mid - 0.01,
            ask=mid + 0.01,
            bid_size=100.0,
            ask_size=100.0,
        )


async def collect(publisher: AsyncPublisher, tenant: str, symbol: str, ticks: int) -> list[Delivery]:
    pending = [await publisher.publish(quote) async for quote in feed(tenant, symbol, ticks)]
    return list(await asyncio.gather(*pending))  # each raises if its record was not acknowledged


async def main(tenant: str, symbols: list[str], ticks: int) -> None:
    async with AsyncPublisher(load_settings()) as publisher:
        done = await asyncio.gather(*(collect(publisher, tenant, s, ticks) for s in symbols))
    print(f"published {sum(len(d) for d in done)} quotes of {', '.join(symbols)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])))
