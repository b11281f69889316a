"""The README's "Running it" block works verbatim in a new shell after `make demo`: every line, in
order, from a shell that has nothing of this one (not the venv, not the stack's settings)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.support import ROOT, wait_until

README = ROOT / "README.md"


def running_it_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Running it") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def fresh_shell_env(home: Path) -> dict[str, str]:
    """What a new login shell has: a PATH without the venv, and none of the stack's variables."""
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if ".venv" not in p)
    return {"PATH": path or "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_every_command_of_running_it_works_verbatim_in_a_new_shell(tmp_path: Path) -> None:
    lines = running_it_block()
    assert lines[:2] == ["source .venv/bin/activate", 'eval "$(deploy/local/stack.sh env)"']
    *commands, run = lines[2:]
    assert run.startswith("mds-sink run ")
    setup = "\n".join(lines[:2])
    # "After `make demo`": its topics, tenants and rows are what the commands below work on.
    demo = subprocess.run(
        ["bash", "-c", f"{setup}\nmds-sink demo"],
        cwd=ROOT,
        env=fresh_shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"set -e\n{setup}\n{command}"],
            cwd=ROOT,
            env=fresh_shell_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, command
    # `mds-sink run` runs until SIGTERM, and then drains and exits 0 (its side port on a free port:
    # another sink of the test run may hold the default one).
    log = tmp_path / "run.log"
    with log.open("w") as out:
        sink = subprocess.Popen(
            ["bash", "-c", f"{setup}\nexport MDS_SINK_HTTP__PORT=0\nexec {run.split('#')[0]}"],
            cwd=ROOT,
            env=fresh_shell_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: "assigned " in log.read_text() or sink.poll() is not None, what="the sink to join")
        assert sink.poll() is None, log.read_text()[-2000:]
        started = time.monotonic()
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert time.monotonic() - started < 45
    finally:
        if sink.poll() is None:
            sink.kill()
    assert "Traceback" not in log.read_text()
