"""`mds-sink dlq`: dead letters counted, inspected and replayed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from mds_sink.cli import render
from mds_sink.cli.common import fail, settings
from mds_sink.cli.progress import progress
from mds_sink.dlq.view import Filters
from mds_sink.errors import BrokerUnavailable

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter topics.")

ReasonOpt = Annotated[list[str] | None, typer.Option("--reason", help="Reason code (repeatable).")]
TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="Source topic (repeatable).")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant id.")]
SinceOpt = Annotated[datetime | None, typer.Option("--since", help="Failed at or after (ISO 8601, UTC).")]
UntilOpt = Annotated[datetime | None, typer.Option("--until", help="Failed before (ISO 8601, UTC).")]
MinOffsetOpt = Annotated[int | None, typer.Option("--min-offset", help="Lowest source offset.")]
MaxOffsetOpt = Annotated[int | None, typer.Option("--max-offset", help="Highest source offset.")]


def _filters(
    reason: list[str] | None,
    topic: list[str] | None,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    min_offset: int | None,
    max_offset: int | None,
) -> Filters:
    def utc(at: datetime | None) -> datetime | None:
        return None if at is None else at.replace(tzinfo=at.tzinfo or UTC)

    return Filters(
        frozenset(reason or ()), frozenset(topic or ()), tenant, utc(since), utc(until), min_offset, max_offset
    )


@dlq_app.command("stats")
def dlq_stats(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters counted by reason, source topic and hour."""
    from mds_sink.dlq.replay import read_dead_letters  # noqa: PLC0415
    from mds_sink.dlq.view import stats  # noqa: PLC0415

    s = settings()
    with progress("reading dead letters", unit="dead letters") as shown:
        counted = stats(read_dead_letters(s, _filters(reason, topic, tenant, since, until, None, None), progress=shown))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "total": counted.total,
                    "by_reason": counted.by_reason,
                    "by_topic": counted.by_topic,
                    "by_hour": counted.by_hour,
                },
                indent=2,
            )
        )
        return
    typer.echo(f"{counted.total} dead letters")
    for title, counter in (
        ("reason", counted.by_reason),
        ("source topic", counted.by_topic),
        ("hour (UTC)", counted.by_hour),
    ):
        typer.echo("\n" + render.table([title, "count"], counter.most_common()))


@dlq_app.command("inspect")
def dlq_inspect(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_offset: MinOffsetOpt = None,
    max_offset: MaxOffsetOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Dead letters decoded, with their headers."""
    from mds_sink.dlq.replay import read_dead_letters  # noqa: PLC0415

    s = settings()
    found = []
    for view in read_dead_letters(s, _filters(reason, topic, tenant, since, until, min_offset, max_offset)):
        found.append(view)
        if len(found) >= limit:
            break
    if as_json:
        for view in found:
            typer.echo(json.dumps(view.as_json(), default=str))
        return
    rows = [
        (
            v.header("mds.dlq.failed.at")[:19],
            f"{v.source_topic}[{v.source_partition}]@{v.source_offset}",
            f"{v.stage}/{v.reason}",
            v.tenant or "-",
            v.replay_count,
            v.header("mds.dlq.message")[:70],
        )
        for v in found
    ]
    typer.echo(render.table(["failed at", "source", "reason", "tenant", "replays", "message"], rows))


@dlq_app.command("replay")
def dlq_replay(
    reason: ReasonOpt = None,
    topic: TopicOpt = None,
    tenant: TenantOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_offset: MinOffsetOpt = None,
    max_offset: MaxOffsetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    rate: Annotated[float | None, typer.Option(help="At most this many records per second.")] = None,
    max_replays: Annotated[int, typer.Option(help="Refuse records replayed this often.")] = 3,
    direct: Annotated[bool, typer.Option(help="Write to the database instead of the source topic.")] = False,
    from_beginning: Annotated[bool, typer.Option(help="Ignore where the last replay stopped.")] = False,
) -> None:
    """Re-validate and replay dead letters; resumable, and safe to repeat (upserts are idempotent)."""
    from mds_sink.dlq.replay import replay  # noqa: PLC0415

    s = settings()
    try:
        with progress(
            "replaying dead letters" if not dry_run else "checking dead letters", unit="dead letters"
        ) as shown:
            summary = replay(
                s,
                _filters(reason, topic, tenant, since, until, min_offset, max_offset),
                dry_run=dry_run,
                rate_per_s=rate,
                max_replays=max_replays,
                direct=direct,
                from_beginning=from_beginning,
                progress=shown,
            )
    except BrokerUnavailable as exc:
        raise fail(str(exc), 1) from None
    typer.echo(summary.line())
