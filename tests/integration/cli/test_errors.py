"""Every CLI error is one line naming what was wrong and where: exit 2 for usage and settings, 1 for
runtime failures, never a traceback."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mds_sink.config.settings import load_settings
from tests.support import make_scenario
from tests.throwaway import migrated, owner_url


def mds_sink(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "mds_sink", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"[1, 2]\n", "in.ndjson: line 1: expected a JSON object"),
        (b"null\n", "in.ndjson: line 1: expected a JSON object"),
        (b'"a string"\n', "in.ndjson: line 1: expected a JSON object"),
        (b"{not json\n", "in.ndjson: line 1: Expecting property name enclosed in double quotes"),
    ],
)
def test_produce_reports_each_bad_line_and_skips_it(tmp_path: Path, content: bytes, line: str) -> None:
    topic = make_scenario(partitions=1, tables=["bars"]).topic("bars")
    (tmp_path / "in.ndjson").write_bytes(content)
    code, out, err = mds_sink("produce", "bar", "in.ndjson", "--topic", topic, cwd=tmp_path)
    assert code == 1
    assert err.splitlines()[0].startswith(line)
    assert out == f"produced 0 bar records to {topic}; 1 bad lines skipped\n"


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("binary.ndjson", b"\xb4\x00\xff", r"binary.ndjson: line 1: not UTF-8 text \(byte 0xb4\)"),
        ("fake.gz", b"not gzip at all", r"fake.gz: line 1: not a readable gzip stream \(Not a gzipped file .*\)"),
        (
            "cut.gz",
            gzip.compress(b"\n" * 100_000)[:60],
            r"cut.gz: line \d+: not a readable gzip stream \(Compressed file ended before the end-of-stream marker "
            r"was reached\)",
        ),
    ],
)
def test_produce_refuses_unreadable_input_in_one_line(tmp_path: Path, name: str, content: bytes, line: str) -> None:
    topic = make_scenario(partitions=1, tables=["bars"]).topic("bars")
    (tmp_path / name).write_bytes(content)
    code, _out, err = mds_sink("produce", "bar", name, "--topic", topic, cwd=tmp_path)
    assert code == 1
    assert re.fullmatch(f"mds-sink: {line}; the 0 records before it were produced to {re.escape(topic)}\n", err), err


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"MDS_SINK_DATABASE__OWNER_URL": "postgresql://u:p@ss@word@[::1:44432/mds"},
            "mds-sink: invalid setting database.owner_url (MDS_SINK_DATABASE__OWNER_URL): its port is not a number "
            "from 1 to 65535; percent-encode @, :, / and [ ] in the user name and password",
        ),
        (
            {"MDS_SINK_BATCHING_MAX_ROWS": "5"},
            "mds-sink: invalid setting MDS_SINK_BATCHING_MAX_ROWS: unknown variable; did you mean "
            "MDS_SINK_BATCHING__MAX_ROWS?",
        ),
        (
            {"MDS_SINK_KAFKA__CONSUMER_OPTIONS": '{"fetch.max.wait": 5}'},
            "mds-sink: invalid setting kafka.consumer_options (MDS_SINK_KAFKA__CONSUMER_OPTIONS): librdkafka refuses "
            'it: No such configuration property: "fetch.max.wait"',
        ),
        (
            {"MDS_SINK_KAFKA__PRODUCER_OPTIONS": '{"acks": "0"}'},
            "mds-sink: invalid setting kafka.producer_options (MDS_SINK_KAFKA__PRODUCER_OPTIONS): acks=0 would let a "
            "dead letter count as sent before the broker has it, and its record's offset be committed: the sink "
            "needs acks=all",
        ),
    ],
)
def test_a_wrong_setting_is_one_line_and_exit_2(env: dict[str, str], line: str) -> None:
    code, _out, err = mds_sink("admin", "current", env=env)
    assert (code, err) == (2, line + "\n")


def test_an_unknown_revision_is_one_line_and_a_downgrade_asks_first() -> None:
    base = load_settings()
    with migrated(base, owner_url(base)) as scratch:
        env = {"MDS_SINK_DATABASE__OWNER_URL": owner_url(scratch)}
        code, _out, err = mds_sink("admin", "downgrade", "nosuchrev", env=env)
        assert (code, err.splitlines()) == (
            2,
            ["mds-sink: No such revision or branch 'nosuchrev'; `mds-sink admin history` lists the revisions"],
        )
        code, _out, err = mds_sink("admin", "downgrade", "base", env=env)
        assert code == 2
        assert err.startswith("mds-sink: downgrade ") and err.endswith(
            "; no terminal to ask on: pass --yes to confirm\n"
        )
        assert "drops what they created: every table" in err
        head = mds_sink("admin", "current", env=env)[1]
        assert head.endswith("(head)\n")  # nothing was changed
        code, out, _err = mds_sink("admin", "downgrade", "base", "--yes", env=env)
        assert (code, out) == (0, "database at revision None\n")
