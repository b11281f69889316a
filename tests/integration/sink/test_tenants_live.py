"""`admin tenants add|disable|enable` reach a running sink within seconds, without a restart."""

from __future__ import annotations

import time
import uuid
from typing import Any

from typer.testing import CliRunner

from mds_sink.cli.app import app
from tests.support import Scenario, bar, make_scenario, running_sink, wait_until

REFRESH_S = 5.0  # the default of validation.tenant_refresh_s


def _admin(scenario: Scenario, *args: str) -> str:
    result = CliRunner().invoke(
        app, ["admin", "tenants", *args], env={"MDS_SINK_DATABASE__OWNER_URL": scenario.owner_url}
    )
    assert result.exit_code == 0, result.output
    return result.output


def _reason(message: Any) -> str:
    headers = dict(message.headers() or [])
    return bytes(headers["mds.dlq.reason"]).decode()


def _landed(scenario: Scenario, tenant: str, symbol: str) -> list[tuple[Any, ...]]:
    return scenario.rows(tenant, "SELECT symbol, close FROM tenant_view.bars WHERE symbol = %s ORDER BY ts", (symbol,))


def test_a_tenant_added_disabled_and_enabled_is_seen_by_the_running_sink() -> None:
    scenario = make_scenario(partitions=1, tables=["bars"])
    assert scenario.settings.validation.tenant_refresh_s == REFRESH_S
    newcomer = str(uuid.uuid4())
    name = f"newcomer-{newcomer[:8]}"
    with running_sink(scenario.settings) as worker:
        wait_until(lambda: bool(worker.state.assignment), timeout_s=60, what="the sink to join its group")
        scenario.produce("bars", [bar(newcomer, "EARLY", 0, close=1.0)])
        (early,) = scenario.dead_letters("bars", expect=1)
        assert _reason(early) == "unknown_tenant"

        added_at = time.monotonic()
        assert _admin(scenario, "add", name, "--id", newcomer) == f"{newcomer}  {name}  active\n"
        wait_until(lambda: worker.tenants.active.get(newcomer) is True, timeout_s=REFRESH_S + 5, what="the new tenant")
        assert time.monotonic() - added_at < REFRESH_S + 2
        scenario.produce("bars", [bar(newcomer, "LATER", 1, close=2.0)])
        wait_until(lambda: _landed(scenario, newcomer, "LATER") == [("LATER", 2.0)], timeout_s=30, what="its bar")

        disabled_at = time.monotonic()
        assert _admin(scenario, "disable", newcomer, "--yes") == f"{newcomer}  {name}  disabled\n"
        wait_until(lambda: worker.tenants.active.get(newcomer) is False, timeout_s=REFRESH_S + 5, what="disabled")
        assert time.monotonic() - disabled_at < REFRESH_S + 2
        scenario.produce("bars", [bar(newcomer, "GONE", 2, close=3.0)])
        dead = scenario.dead_letters("bars", expect=2)
        assert [_reason(m) for m in dead] == ["unknown_tenant", "inactive_tenant"]
        assert _landed(scenario, newcomer, "GONE") == []

        assert _admin(scenario, "enable", name) == f"{newcomer}  {name}  active\n"
        wait_until(lambda: worker.tenants.active.get(newcomer) is True, timeout_s=REFRESH_S + 5, what="enabled again")
        scenario.produce("bars", [bar(newcomer, "BACK", 3, close=4.0)])
        wait_until(lambda: _landed(scenario, newcomer, "BACK") == [("BACK", 4.0)], timeout_s=30, what="its bar again")
