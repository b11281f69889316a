"""Start-up refuses what would break the guarantees, with one line naming what and where."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from mds_sink.config.settings import Settings, load_settings
from mds_sink.errors import StartupError
from mds_sink.kafka.clients import admin_config
from mds_sink.service import Service
from tests.support import make_scenario, sink_env
from tests.throwaway import migrated, owner_url, switch_to_guard, with_database


def start(settings: Settings, **env: str) -> tuple[int, str]:
    """Run `mds-sink run` until it refuses to start; returns the exit code and stderr."""
    full = {**sink_env(settings), **env}
    done = subprocess.run(
        [sys.executable, "-m", "mds_sink", "run"], env=full, capture_output=True, text=True, timeout=90, check=False
    )
    return done.returncode, done.stderr


def refusal(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("mds-sink: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return make_scenario(partitions=1, tables=["bars"]).settings


def test_unreachable_database_is_named_with_its_address(settings: Settings) -> None:
    code, err = start(
        settings,
        MDS_SINK_DATABASE__URL="postgresql://mds_writer:secret@127.0.0.1:1/mds",
        MDS_SINK_DATABASE__CONNECT_TIMEOUT_S="1",
    )
    assert code == 2
    line = refusal(err)
    assert line.startswith("mds-sink: cannot reach the database at 127.0.0.1:1/mds as mds_writer: ")
    assert "secret" not in err


def test_unreachable_broker_is_named_with_its_address(settings: Settings) -> None:
    code, err = start(settings, MDS_SINK_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert code == 2
    assert refusal(err).startswith("mds-sink: cannot reach the broker at 127.0.0.1:1")


def test_unknown_topic_is_named_with_its_setting(settings: Settings) -> None:
    code, err = start(settings, MDS_SINK_TOPICS__BARS="no.such.topic")
    assert code == 2
    assert refusal(err) == (
        f"mds-sink: topic 'no.such.topic' (setting topics.bars) does not exist on {settings.kafka.bootstrap_servers}"
    )


def test_wrong_setting_is_one_line(settings: Settings) -> None:
    code, err = start(settings, MDS_SINK_BATCHING__MAX_MS="soon")
    assert code == 2
    assert refusal(err).startswith("mds-sink: invalid setting batching.max_ms (MDS_SINK_BATCHING__MAX_MS)")


def test_an_unknown_exchange_calendar_is_named_with_its_setting(settings: Settings) -> None:
    code, err = start(
        settings, MDS_SINK_CONTINUITY__CALENDARS='[{"calendar": "XNYS"}, {"calendar": "XLNO", "symbol": "*.L"}]'
    )
    assert code == 2
    assert refusal(err) == (
        "mds-sink: invalid setting continuity.calendars[1].calendar: unknown exchange calendar 'XLNO'"
    )
    assert "Traceback" not in err


def test_writer_that_could_bypass_isolation_is_refused(settings: Settings) -> None:
    superuser = with_database(os.environ["MDS_STACK_PG_SUPERUSER_URL"], "mds")
    code, err = start(settings, MDS_SINK_DATABASE__URL=superuser)
    assert code == 2
    assert "is a superuser: tenant isolation would not hold" in refusal(err)
    code, err = start(settings, MDS_SINK_DATABASE__URL=owner_url(settings))
    assert code == 2
    assert "owns" in refusal(err) and "relations" in refusal(err)


def test_table_without_forced_row_security_is_refused(settings: Settings) -> None:
    with migrated(load_settings(), owner_url(settings)) as scratch:
        with psycopg.connect(owner_url(scratch), autocommit=True) as conn:
            conn.execute("ALTER TABLE quotes NO FORCE ROW LEVEL SECURITY")
        code, err = start(settings, MDS_SINK_DATABASE__URL=scratch.database.url.get_secret_value())
    assert code == 2
    assert refusal(err).endswith("table quotes has neither forced row-level security nor the tenant guard")


def test_guard_mode_needs_both_triggers_enabled(settings: Settings) -> None:
    with migrated(load_settings(), owner_url(settings)) as scratch:
        with psycopg.connect(owner_url(scratch), autocommit=True) as conn:
            switch_to_guard(scratch)
            conn.execute("ALTER TABLE news DISABLE TRIGGER tenant_guard_old")
        code, err = start(settings, MDS_SINK_DATABASE__URL=scratch.database.url.get_secret_value())
    assert code == 2
    assert refusal(err).endswith("table news has neither forced row-level security nor the tenant guard")


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_side_port_in_use_is_named_with_its_setting(settings: Settings, port_in_use: int) -> None:
    code, err = start(settings, MDS_SINK_HTTP__HOST="127.0.0.1", MDS_SINK_HTTP__PORT=str(port_in_use))
    assert code == 2
    assert refusal(err) == (
        f"mds-sink: cannot listen on 127.0.0.1:{port_in_use} (settings http.host, http.port): Address already in use"
    )


def test_a_failed_start_up_never_joins_the_group_and_releases_everything(port_in_use: int) -> None:
    scenario = make_scenario(partitions=1, tables=["bars"], http={"host": "127.0.0.1", "port": port_in_use})
    before = {t.ident for t in threading.enumerate()}
    service = Service(scenario.settings)
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port_in_use}"):
        service.run()
    # The port is checked before subscribing: the group never had this member, so no rebalance waits on it.
    admin = AdminClient(admin_config(scenario.settings))
    (described,) = admin.describe_consumer_groups([scenario.settings.kafka.group_id]).values()
    group = described.result(timeout=15)
    assert (group.state, group.members) == (ConsumerGroupState.DEAD, [])  # DEAD: the broker never saw it
    assert service.pool.closed
    assert [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()] == []
