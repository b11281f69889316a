"""The command line's own options: -c/--config anywhere, --version."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mds_sink import __version__
from mds_sink.cli.app import app, config_first


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["admin", "current", "-c", "s.toml"], ["-c", "s.toml", "admin", "current"]),
        (["admin", "--config=s.toml", "current"], ["--config=s.toml", "admin", "current"]),
        (["-c", "s.toml", "run"], ["-c", "s.toml", "run"]),
        (["produce", "bar", "-", "--", "-c", "x"], ["produce", "bar", "-", "--", "-c", "x"]),
    ],
)
def test_the_config_option_is_read_wherever_it_is_given(argv: list[str], expected: list[str]) -> None:
    assert config_first(argv) == expected


def test_version_flag_and_command_print_the_version() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).stdout == f"{__version__}\n"
    assert runner.invoke(app, ["version"]).stdout == f"{__version__}\n"
