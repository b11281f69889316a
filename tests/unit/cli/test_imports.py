"""`mds-sink --help` and the commands that need neither Kafka nor the database start without them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("alembic", "confluent_kafka", "fastavro", "prometheus_client", "psycopg", "psycopg_pool", "sqlalchemy")


def test_importing_the_command_line_loads_no_client_library() -> None:
    probe = f"import sys, mds_sink.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
