"""Records for the side-port tests: valid bars with symbols no other test uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def bar(tenant: str, symbol: str, minute: int = 0) -> dict[str, Any]:
    ts = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30 - minute)
    return {
        "tenant_id": tenant,
        "vendor": "polygon",
        "symbol": symbol,
        "timeframe": "1m",
        "ts": ts.isoformat(),
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
        "volume": 1000.0,
        "revision": 0,
    }


def unique_symbols(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"H{tag}{i}" for i in range(n)]
