"""Progress off a terminal: quiet lines naming how far, of how much, and how fast."""

from __future__ import annotations

import re

import pytest

from mds_sink.cli import progress as progress_module
from mds_sink.cli.progress import progress


def test_off_a_terminal_progress_is_a_line_now_and_then_with_the_total_once_known(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress_module, "QUIET_EVERY_S", 0.0)  # a line at every step, to see them all
    with progress("replaying dead letters", unit="dead letters") as shown:
        shown.advance(2)
        shown.total(10)
        shown(3)
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"\(.*/s\)", "(rate)", line) for line in lines] == [
        "replaying dead letters: 2 dead letters (rate)",
        "replaying dead letters: 5 of 10 dead letters (rate)",
    ]
