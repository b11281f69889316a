"""An operator's pause across rebalances, over the real side port: held, applied again, visible, exact lag."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from mds_sink.sink.gauges import PAUSED_END_OFFSETS_S
from mds_sink.sink.worker import Worker
from tests.integration.http.test_http import TOKEN, base_url, call
from tests.support import bar, drained, make_scenario, running_sink, wait_until


def partitions(base: str) -> dict[int, dict[str, Any]]:
    reply = call(base, "GET", "/status")
    assert reply.status == HTTPStatus.OK
    return {p["partition"]: p for p in reply.json()["partitions"]}


def owned(worker: Worker) -> set[int]:
    return {p for _t, p in worker.state.assignment}


def test_an_operator_pause_is_held_across_rebalances_lag_stays_exact_and_resume_lands_every_record() -> None:
    scenario = make_scenario(
        partitions=2,
        tables=["bars"],
        batching={"max_rows": 100, "max_ms": 50},
        http={"port": 0, "admin_token": TOKEN},
    )
    topic = scenario.topic("bars")
    tenant = scenario.add_tenant("pause")
    first = [bar(tenant, f"PZ{s}", m, close=10.0 + m) for s in range(12) for m in range(10)]
    later = [bar(tenant, f"PZ{s}", m, close=10.0 + m) for s in range(12) for m in range(10, 20)]
    with running_sink(scenario.settings) as one:
        base = base_url(one)
        wait_until(lambda: owned(one) == {0, 1}, what="both partitions assigned")
        reply = call(base, "POST", "/admin/pause", {"topic": topic})
        assert (reply.status, sorted(reply.json()["paused"])) == (HTTPStatus.OK, [f"{topic}[0]", f"{topic}[1]"])
        scenario.produce("bars", first)
        ends = scenario.end_offsets()
        assert all(end > 0 for end in ends.values()), "both partitions hold records"
        # Paused partitions are not fetched, so their end offsets come from the broker at a bounded rate.
        wait_until(
            lambda: {p: s["lag"] for p, s in partitions(base).items()} == {p: ends[(topic, p)] for p in (0, 1)},
            timeout_s=PAUSED_END_OFFSETS_S + 10,
            what="the lag of both paused partitions to be their record counts",
        )
        assert scenario.rows(tenant, "SELECT count(*) FROM bars") == [(0,)]

        with running_sink(scenario.settings) as two:
            # The join moves one partition to the second member, which has no pause of its own: it drains it.
            wait_until(lambda: len(owned(one)) == 1 and len(owned(two)) == 1, what="one partition each")
            (kept,) = owned(one)
            (moved,) = owned(two)
            wait_until(lambda: drained(two, {(topic, moved): ends[(topic, moved)]}), what="the moved partition drained")
            status = call(base, "GET", "/status").json()
            # The partition that stayed is paused again after the rebalance; the one away is still held.
            assert status["paused"] == [f"{topic}[{kept}]"]
            assert status["operator_paused"] == [f"{topic}[0]", f"{topic}[1]"]
            wait_until(
                lambda: partitions(base)[kept]["lag"] == ends[(topic, kept)],
                timeout_s=PAUSED_END_OFFSETS_S + 10,
                what="the exact lag of the partition paused again",
            )

        # The second member left: the moved partition came back to the first one and was paused again.
        wait_until(lambda: owned(one) == {0, 1}, what="both partitions back with the first member")
        scenario.produce("bars", later)
        ends = scenario.end_offsets()
        wait_until(
            lambda: (
                {p: s["lag"] for p, s in partitions(base).items()}
                == {kept: ends[(topic, kept)], moved: ends[(topic, moved)] - scenario.committed()[(topic, moved)]}
            ),
            timeout_s=PAUSED_END_OFFSETS_S + 10,
            what="exact lag on both paused partitions",
        )
        status = call(base, "GET", "/status").json()
        assert status["paused"] == [f"{topic}[0]", f"{topic}[1]"]
        assert [p["paused_by_operator"] for p in status["partitions"]] == [True, True]

        reply = call(base, "POST", "/admin/resume", {"topic": topic})
        assert (reply.status, sorted(reply.json()["resumed"])) == (HTTPStatus.OK, [f"{topic}[0]", f"{topic}[1]"])
        wait_until(lambda: drained(one, ends), what="everything committed after the resume")
        assert {p: s["lag"] for p, s in partitions(base).items()} == {0: 0, 1: 0}
        assert call(base, "GET", "/status").json()["paused"] == []
    assert scenario.rows(tenant, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM bars") == [(240, 240)]
    assert scenario.committed() == ends
