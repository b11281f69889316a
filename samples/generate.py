"""Writes the sample market-data stream in samples/ (deterministic: the same files every run).

Three tenants, five US equities from two vendors, one session of 1-minute bars with a few
corrections, quotes, one quarter of fundamentals, news with and without ids, an option chain
snapshot and job requests (one repeated). Run: python samples/generate.py
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent
TENANTS = {
    "acme-capital": "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f",
    "globex-research": "7a2d3b5f-9e4c-4d6b-8f80-1b2c3d4e5f60",
    "initech-quant": "8b3e4c60-af5d-4e7c-9091-2c3d4e5f6071",
}
SYMBOLS = {"AAPL": 228.5, "MSFT": 415.2, "NVDA": 141.9, "SPY": 589.3, "TSLA": 338.7}
SESSION = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
MINUTES = 60


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def bars(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for tenant in TENANTS.values():
        for symbol, start in SYMBOLS.items():
            vendor = "polygon" if symbol != "SPY" else "iex"
            price = start
            for m in range(MINUTES):
                o = price
                c = round(o * (1 + rng.gauss(0, 0.0008)), 2)
                h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.0004))), 2)
                lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.0004))), 2)
                volume = float(rng.randint(20_000, 400_000))
                out.append(
                    {
                        "tenant_id": tenant,
                        "vendor": vendor,
                        "symbol": symbol,
                        "timeframe": "1m",
                        "ts": iso(SESSION + timedelta(minutes=m)),
                        "open": o,
                        "high": h,
                        "low": lo,
                        "close": c,
                        "volume": volume,
                        "vwap": round((o + h + lo + c) / 4, 4),
                        "trade_count": rng.randint(100, 3000),
                    }
                )
                price = c
    # Vendor corrections: a few bars re-sent with a higher revision and an amended volume.
    for bar in rng.sample(out, 12):
        fixed = dict(bar, volume=float(bar["volume"]) + 100.0, revision=1)  # type: ignore[arg-type]
        out.append(fixed)
    return out


def quotes(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for tenant in TENANTS.values():
        for symbol, start in SYMBOLS.items():
            for m in range(0, MINUTES, 5):
                mid = start * (1 + rng.gauss(0, 0.002))
                spread = max(0.01, round(mid * 0.0001, 2))
                out.append(
                    {
                        "tenant_id": tenant,
                        "vendor": "polygon",
                        "symbol": symbol,
                        "ts": iso(SESSION + timedelta(minutes=m, seconds=30)),
                        "bid": round(mid - spread / 2, 2),
                        "ask": round(mid + spread / 2, 2),
                        "bid_size": float(rng.randint(1, 50) * 100),
                        "ask_size": float(rng.randint(1, 50) * 100),
                        "exchange": rng.choice(["XNAS", "XNYS", "ARCX", "BATS"]),
                    }
                )
    return out


def fundamentals(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for tenant in TENANTS.values():
        for symbol in SYMBOLS:
            if symbol == "SPY":
                continue
            assets = rng.uniform(1e11, 4e11)
            out.append(
                {
                    "tenant_id": tenant,
                    "vendor": "sec",
                    "symbol": symbol,
                    "as_of": "2026-09-30",
                    "period": "Q3",
                    "currency": "USD",
                    "total_assets": round(assets),
                    "total_liabilities": round(assets * 0.6),
                    "revenue": round(rng.uniform(2e10, 1e11)),
                    "net_income": round(rng.uniform(2e9, 3e10)),
                    "eps": round(rng.uniform(0.5, 4.0), 2),
                    "shares_outstanding": round(rng.uniform(2e9, 1.5e10)),
                }
            )
    return out


def news(rng: random.Random) -> list[dict[str, object]]:
    headlines = [
        ("AAPL", "Apple expands buyback after record services quarter"),
        ("NVDA", "Nvidia guides above consensus on data-centre demand"),
        ("TSLA", "Tesla recalls software on driver-assist feature"),
        ("MSFT", "Microsoft wins multiyear cloud contract"),
        (None, "Fed minutes show officials split on pace of cuts"),
        ("SPY", "Stocks edge higher as yields ease"),
    ]
    out: list[dict[str, object]] = []
    for n, tenant in enumerate(TENANTS.values()):
        for i, (symbol, title) in enumerate(headlines):
            item: dict[str, object] = {
                "tenant_id": tenant,
                "vendor": "newswire",
                "title": title,
                "published_at": iso(SESSION + timedelta(minutes=7 * i + n)),
                "url": f"https://news.example.com/{n}-{i}",
                "sentiment_score": round(rng.uniform(-0.8, 0.9), 3),
            }
            if symbol:
                item["symbol"] = symbol
            if i % 2 == 0:
                item["id"] = f"nw-{n}-{i}"
            out.append(item)
    return out


def options(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for tenant in TENANTS.values():
        for underlying in ("AAPL", "SPY"):
            spot = SYMBOLS[underlying]
            for offset in (-10, -5, 5, 10):
                strike = round(spot + offset)
                for kind in ("C", "P"):
                    itm = (kind == "C" and strike < spot) or (kind == "P" and strike > spot)
                    delta = (0.6 if itm else 0.35) * (1 if kind == "C" else -1)
                    out.append(
                        {
                            "tenant_id": tenant,
                            "vendor": "opra",
                            "underlying": underlying,
                            "expiry": (date(2026, 12, 18)).isoformat(),
                            "option_type": kind,
                            "strike": float(strike),
                            "ts": iso(SESSION + timedelta(minutes=30)),
                            "iv": round(rng.uniform(0.15, 0.45), 4),
                            "delta": delta,
                            "gamma": round(rng.uniform(0.005, 0.05), 4),
                            "theta": round(-rng.uniform(0.05, 0.4), 4),
                            "vega": round(rng.uniform(0.1, 0.5), 4),
                            "open_interest": rng.randint(100, 20_000),
                            "volume": rng.randint(0, 5_000),
                            "spot": spot,
                        }
                    )
    return out


def jobs() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name, tenant in TENANTS.items():
        out.append(
            {
                "tenant_id": tenant,
                "idempotency_key": f"{name}-backfill-2026-11-19",
                "job_type": "backfill_bars",
                "payload": json.dumps({"symbols": list(SYMBOLS), "date": "2026-11-19"}),
                "priority": 5,
                "requested_at": iso(SESSION),
                "requested_by": f"{name}@collector",
            }
        )
    out.append(dict(out[0]))  # a retried request: the same job, not a second one
    return out


def main() -> None:
    rng = random.Random(20261120)
    files = {
        "bars": bars(rng),
        "quotes": quotes(rng),
        "fundamentals": fundamentals(rng),
        "news": news(rng),
        "option_snapshots": options(rng),
        "jobs": jobs(),
    }
    for name, rows in files.items():
        text = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
        with open(HERE / f"{name}.ndjson.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
            out.write(text.encode())
    (HERE / "tenants.json").write_text(json.dumps(TENANTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
