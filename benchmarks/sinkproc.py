"""A real `mds-sink run` in a subprocess: start, wait until ready, read its CPU and memory, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from benchmarks.stats import ProcSample, parse_machine_busy, parse_stat_cpu, parse_status_kb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sample(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        cpu = parse_stat_cpu(f.read(), CLOCK_TICKS)
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    return ProcSample(cpu, parse_status_kb(status, "VmRSS"), parse_status_kb(status, "VmHWM"))


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        return parse_machine_busy(f.read())


class Sink:
    """One sink process with its own side port; every method is bounded in time."""

    def __init__(self, env: Mapping[str, str], log_path: Path, name: str) -> None:
        self.port = free_port()
        self.name = name
        full = {**env, "MDS_SINK_HTTP__PORT": str(self.port), "MDS_SINK_KAFKA__CLIENT_ID": name}
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mds_sink", "run"], env=full, stdout=log, stderr=subprocess.STDOUT
            )
        self.started = time.monotonic()
        self.ready_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_ready(self) -> bool:
        """Whether /readyz answers 200 (joined, database reachable); notes the first time it did."""
        if self.ready_at is not None:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"sink {self.name} exited with {self.proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    self.ready_at = time.monotonic()
        except (urllib.error.URLError, OSError):
            pass
        return self.ready_at is not None

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds from start until ready."""
        deadline = time.monotonic() + timeout_s
        while not self.check_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink {self.name} not ready within {timeout_s:.0f}s")
            time.sleep(0.02)
        assert self.ready_at is not None
        return self.ready_at - self.started

    def sample(self) -> ProcSample:
        return sample(self.pid)

    def save_metrics(self, path: Path) -> None:
        """The sink's /metrics as they stand, beside its log: flush phases, batch sizes, commits."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as reply:
                path.write_bytes(reply.read())
        except (urllib.error.URLError, OSError) as exc:
            path.write_text(f"metrics not read: {exc}\n")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain, commit, leave the group); SIGKILL this process only if it overstays."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class CommitWatch:
    """Reads a group's committed offsets without joining it (OffsetFetch only)."""

    def __init__(self, bootstrap: str, group: str, partitions: Iterable[tuple[str, int]]) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
        self._partitions = [KafkaTopicPartition(t, p) for t, p in partitions]

    def committed(self, timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
        found = self._consumer.committed(self._partitions, timeout=timeout_s)
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def close(self) -> None:
        self._consumer.close()
