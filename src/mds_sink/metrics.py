"""Prometheus metrics. Labels stay low-cardinality: topic, table, partition, reason, stage, timeframe, tier;
never symbol. Tenant only on the two continuity gauges, which report each tenant's holes (its SLO):
tenants are few next to symbols, and a series goes when its tenant's gaps do."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from mds_sink import __version__
from mds_sink.errors import ErrorClass

REGISTRY = CollectorRegistry(auto_describe=True)
# A `_created` series beside every counter and histogram doubles the series count and no query here uses it.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)
_BYTES_BUCKETS = (1e3, 1e4, 5e4, 1e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BUILD = Info("mds_sink_build", "Version of the running sink.", registry=REGISTRY)
BUILD.info({"version": __version__})

CONSUMED = Counter(
    "mds_sink_messages_consumed_total", "Records consumed from Kafka, per topic.", ["topic"], registry=REGISTRY
)
ROWS_WRITTEN = Counter(
    "mds_sink_rows_written_total",
    "Rows upserted per logical table (after in-batch dedupe; includes no-op replays).",
    ["table"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "mds_sink_dead_letters_total",
    "Records sent to the dead-letter topic, per source topic, stage and reason.",
    ["topic", "stage", "reason"],
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "mds_sink_batch_rows", "Rows per flushed batch.", ["table"], buckets=_ROWS_BUCKETS, registry=REGISTRY
)
BATCH_BYTES = Histogram(
    "mds_sink_batch_bytes",
    "Bytes of record values per flushed batch.",
    ["table"],
    buckets=_BYTES_BUCKETS,
    registry=REGISTRY,
)
FLUSH_SECONDS = Histogram(
    "mds_sink_flush_duration_seconds",
    "Time spent per flush stage: decode (per consumed chunk), copy, upsert, commit (Kafka offsets), "
    "gap_lookup (bar series new to this process, looked up for gap detection).",
    ["stage"],
    buckets=_SECONDS_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "mds_sink_retries_total",
    "Flush attempts that failed and were retried, per error class.",
    ["error_class"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "mds_sink_circuit_breaker_open", "1 while the database circuit breaker is open.", registry=REGISTRY
)
COMMITS = Counter(
    "mds_sink_offset_commits_total", "Kafka offset commits, per result (ok, failed).", ["result"], registry=REGISTRY
)
REBALANCES = Counter(
    "mds_sink_rebalances_total",
    "Partition assignment changes, per kind (assign, revoke, lost).",
    ["kind"],
    registry=REGISTRY,
)
PAUSED_PARTITIONS = Gauge(
    "mds_sink_paused_partitions",
    "Assigned partitions currently paused (backpressure or operator).",
    registry=REGISTRY,
)
ASSIGNED_PARTITIONS = Gauge("mds_sink_assigned_partitions", "Partitions assigned to this sink.", registry=REGISTRY)
LAG = Gauge(
    "mds_sink_consumer_lag_messages",
    "High watermark minus committed offset, per topic and partition (assigned partitions only).",
    ["topic", "partition"],
    registry=REGISTRY,
)
FRESHNESS = Gauge(
    "mds_sink_freshness_seconds",
    "Now minus the newest event time written, per topic.",
    ["topic"],
    registry=REGISTRY,
)
LAST_FLUSH = Gauge(
    "mds_sink_last_flush_timestamp_seconds", "Unix time of the last successful flush.", registry=REGISTRY
)
POOL = Gauge(
    "mds_sink_db_pool_connections",
    "Database pool connections, per state (in_use, idle, waiting requests).",
    ["state"],
    registry=REGISTRY,
)
BUFFERED = Gauge("mds_sink_buffered_records", "Records consumed and not yet settled.", registry=REGISTRY)
HEARTBEAT_AGE = Gauge(
    "mds_sink_heartbeat_age_seconds",
    "Seconds since the consumer loop last turned, computed at scrape time (a stuck loop sets no gauge).",
    registry=REGISTRY,
)
UP = Gauge(
    "mds_sink_ready", "1 when the sink is ready (database reachable, group joined, breaker closed).", registry=REGISTRY
)

# Bar continuity (core/continuity.py): what this member knows of the series of its partitions. Several
# members each report their own series, so sums across members are the group's figures.
GAPS_OPEN = Gauge(
    "mds_sink_bar_gaps_open",
    "Open gaps (bars missing in trading sessions) of the series this member writes, per tenant and timeframe.",
    ["tenant", "timeframe"],
    registry=REGISTRY,
)
GAP_MINUTES = Gauge(
    "mds_sink_bar_gap_missing_minutes",
    "Bar-minutes still missing in open gaps (missing bars x the timeframe's minutes), per tenant and timeframe.",
    ["tenant", "timeframe"],
    registry=REGISTRY,
)
GAPS_OPENED = Counter(
    "mds_sink_bar_gaps_opened_total",
    "Gaps found and stored in bar_gaps, per timeframe.",
    ["timeframe"],
    registry=REGISTRY,
)
GAPS_CLOSED = Counter(
    "mds_sink_bar_gaps_closed_total",
    "Gaps closed by their bars landing, per timeframe.",
    ["timeframe"],
    registry=REGISTRY,
)
GAP_BACKFILLS = Counter(
    "mds_sink_bar_gap_backfills_requested_total",
    "Backfill jobs requested for gaps open past the grace period (one per gap).",
    ["timeframe"],
    registry=REGISTRY,
)
SERIES = Gauge(
    "mds_sink_bar_series", "Bar series this member watches for gaps, per symbol tier.", ["tier"], registry=REGISTRY
)
SERIES_WITH_GAP = Gauge(
    "mds_sink_bar_series_with_gap",
    "Of those, the series with at least one open gap, per symbol tier (the gap SLO is their share).",
    ["tier"],
    registry=REGISTRY,
)


FLUSH_STAGES = ("decode", "copy", "upsert", "commit", "gap_lookup")
COMMIT_RESULTS = ("ok", "failed")
REBALANCE_KINDS = ("assign", "revoke", "lost")
POOL_STATES = ("in_use", "idle", "waiting")


def preset(*, topics: Iterable[str], tables: Iterable[str]) -> None:
    """Create the known labelled series at zero, so a dashboard or an alert sees 0 rather than no data.

    Dead letters are left out: topic x stage x reason is many series, and "none yet" is what absent means.
    Freshness is left out too: zero would claim perfectly fresh data before anything was written.
    """
    for topic in topics:
        CONSUMED.labels(topic)
    for table in tables:
        ROWS_WRITTEN.labels(table)
    for stage in FLUSH_STAGES:
        FLUSH_SECONDS.labels(stage)
    for error_class in ErrorClass:
        # dead-lettered, fenced or fatal: never retried
        if error_class not in (ErrorClass.POISON, ErrorClass.FENCED, ErrorClass.FATAL):
            RETRIES.labels(error_class.value)
    for result in COMMIT_RESULTS:
        COMMITS.labels(result)
    for kind in REBALANCE_KINDS:
        REBALANCES.labels(kind)
    for state in POOL_STATES:
        POOL.labels(state)
