"""`mds-sink backfill`: re-consume a time range of topics into the database, outside the live group.

Thin: the command checks its options and hands over to control.backfill_run (`start`, `run`), the
code the control API's POST /backfill runs too; what it prints is the plan, progress, and a summary
per partition.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from mds_sink.cli import render
from mds_sink.cli.common import fail, settings
from mds_sink.cli.progress import progress
from mds_sink.errors import BrokerUnavailable, QueryError, SettingsError, StartupError

if TYPE_CHECKING:
    from mds_sink.config.settings import Settings
    from mds_sink.control.backfill import JobReport

backfill_app = typer.Typer(
    invoke_without_command=True,
    help="Re-consume a time range of topics (Kafka timestamps) through the sink's pipeline, outside its group.",
)

_WHEN = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]
_REFUSED = (QueryError, StartupError, BrokerUnavailable, SettingsError)
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


@backfill_app.callback()
def backfill(
    ctx: typer.Context,
    topics: Annotated[list[str] | None, typer.Option("--topic", help="A consumed topic; repeat for more.")] = None,
    start: Annotated[
        datetime | None,
        typer.Option(
            "--from", formats=_WHEN, metavar="TIME", help="Range start, e.g. 2026-12-01T09:30:00Z (UTC unless given)."
        ),
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", formats=_WHEN, metavar="TIME", help="Range end, exclusive.")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's records (its id).")] = None,
    rate: Annotated[float | None, typer.Option("--rate", min=0.001, help="At most this many records/s.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read, validate and probe the writes; write nothing, send no dead letter.")
    ] = False,
) -> None:
    """Backfill the records of --topic whose Kafka timestamp is in [--from, --to).

    Resumable: a job killed midway continues with `mds-sink backfill resume JOB`. Sub-commands list,
    show, resume and cancel jobs.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not topics or start is None or end is None:
        raise fail("--topic, --from and --to are required (or a sub-command: list, show, resume, cancel)")
    from mds_sink.control import backfill_run  # noqa: PLC0415  (Kafka and psycopg for this command only)

    s = settings()
    request = backfill_run.BackfillRequest(tuple(topics), start, end, tenant=tenant, rate_per_s=rate, dry_run=dry_run)
    try:
        planned = backfill_run.start(s, request, requested_by="cli")
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    if planned.job is None:
        typer.echo(planned.message)
        return
    job = planned.job
    verb = "dry run" if dry_run else "backfill"
    typer.echo(
        f"{verb} {job.job_id}: offsets {job.offsets:,} on {len(job.partitions)} partitions of "
        f"{', '.join(job.topics)}; resume it if interrupted with `mds-sink backfill resume {job.job_id}`"
    )
    _run(s, job)


@backfill_app.command("resume")
def backfill_resume(job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Continue a job that was interrupted, failed or cancelled, from where its last batch ended."""
    from mds_sink.control import backfill_jobs  # noqa: PLC0415

    s = settings()
    try:
        job_id = backfill_jobs.parse_job_id(job)
        report = _load(s, job_id)
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    typer.echo(f"resuming {report.job_id} ({report.state}): {report.offsets_done:,} of {report.offsets:,} offsets done")
    _run(s, report)


@backfill_app.command("list")
def backfill_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The latest jobs, newest first."""
    from mds_sink.control import backfill_jobs  # noqa: PLC0415
    from mds_sink.control.backfill_run import writer_connection  # noqa: PLC0415

    s = settings()
    try:
        with writer_connection(s) as conn:
            found = backfill_jobs.list_jobs(conn, limit=limit)
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        typer.echo(json.dumps([j.as_dict(partitions=False) for j in found], indent=2))
        return
    rows = [
        (j.job_id, j.state, ",".join(j.topics), j.as_dict()["from"], j.as_dict()["to"], j.tenant or "all",
         f"{j.offsets_done:,}/{j.offsets:,}", "yes" if j.dry_run else "")
        for j in found
    ]  # fmt: skip
    typer.echo(render.table(("job", "state", "topics", "from", "to", "tenant", "offsets", "dry run"), rows, count=True))


@backfill_app.command("show")
def backfill_show(job: Annotated[str, typer.Argument(help="The job id.")], as_json: JsonOption = False) -> None:
    """A job's state and its counts per partition."""
    from mds_sink.control import backfill_jobs  # noqa: PLC0415

    s = settings()
    try:
        report = _load(s, backfill_jobs.parse_job_id(job))
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    _summary(report)


@backfill_app.command("cancel")
def backfill_cancel(job: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Stop a job after the batch it is writing (wherever it runs); it can be resumed later."""
    from mds_sink.control import backfill_jobs  # noqa: PLC0415
    from mds_sink.control.backfill_run import writer_connection  # noqa: PLC0415

    s = settings()
    try:
        with writer_connection(s) as conn:
            report = backfill_jobs.request_cancel(conn, backfill_jobs.parse_job_id(job))
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    if report.state == "running":
        typer.echo(f"{report.job_id}: cancel requested; its run stops after the batch it is writing")
    else:
        typer.echo(f"{report.job_id}: {report.state}")


def _load(s: Settings, job_id: uuid.UUID) -> JobReport:
    from mds_sink.control import backfill_jobs  # noqa: PLC0415
    from mds_sink.control.backfill_run import writer_connection  # noqa: PLC0415

    with writer_connection(s) as conn:
        return backfill_jobs.load(conn, job_id)


def _run(s: Settings, job: JobReport) -> None:
    from mds_sink.control import backfill_run  # noqa: PLC0415

    job_id = uuid.UUID(job.job_id)
    try:
        with progress(f"backfill {job.job_id[:8]}", total=job.offsets - job.offsets_done, unit="records") as advance:
            report = backfill_run.run(s, job_id, on_read=advance)
    except KeyboardInterrupt:
        raise fail(f"interrupted: resume with `mds-sink backfill resume {job.job_id}`", 130) from None
    except _REFUSED as exc:
        raise fail(str(exc), 1) from None
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(
            f"backfill {job.job_id} failed: {line}; resume with `mds-sink backfill resume {job.job_id}`", 1
        ) from None
    _summary(report)
    if report.state != "succeeded":
        raise typer.Exit(1)


def _summary(report: JobReport) -> None:
    from mds_sink.control.backfill import describe_totals  # noqa: PLC0415

    header = ("topic", "partition", "offsets", "done", "records", "skipped", "changed", "unchanged", "dead letters")
    rows = [
        (p.topic, p.partition, f"{p.start}-{p.end}", p.next - p.start, p.records, p.skipped, p.rows_changed,
         p.rows_unchanged, p.dead_letters)
        for p in report.partitions
    ]  # fmt: skip
    typer.echo(render.table(header, rows))
    tenant = f", tenant {report.tenant}" if report.tenant else ""
    range_ = f"[{report.as_dict()['from']}, {report.as_dict()['to']})"
    dry = " (dry run: nothing written)" if report.dry_run else ""
    typer.echo(f"{report.job_id} {report.state}{dry}: {', '.join(report.topics)} {range_}{tenant}")
    typer.echo(describe_totals(report.totals(), dry_run=report.dry_run))
    if report.error:
        typer.echo(f"error: {report.error}")
