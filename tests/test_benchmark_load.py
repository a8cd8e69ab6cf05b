"""The load benchmark, tiny: every figure present and plausible (speed is never asserted)."""

from __future__ import annotations

import math
import os
import time

import pytest

from udpchat.relay_server import RelayOptions, RelayServer
from udpchat_bench.load import (
    LoadResult,
    format_table,
    probe_join,
    proc_cpu_s,
    proc_rss_kib,
    run_load,
)
from udpchat_bench.storm import format_result, run_storm

pytestmark = pytest.mark.bench


def test_proc_readings_of_this_process() -> None:
    assert proc_cpu_s(os.getpid()) > 0
    assert proc_rss_kib(os.getpid()) > 1000


@pytest.mark.timeout(30)
def test_join_probe_joins_and_leaves() -> None:
    server = RelayServer(RelayOptions(host="127.0.0.1", port=0)).start()
    try:
        seconds = probe_join(server.address, "probe")
        assert 0 < seconds < 3
        end = time.monotonic() + 3
        while server.members() and time.monotonic() < end:
            time.sleep(0.05)
        assert server.members() == []  # the probe quit
    finally:
        server.stop(goodbye=False)


@pytest.mark.timeout(120)
def test_tiny_load_run_is_complete_and_sane() -> None:
    (result,) = run_load(members=(20,), chat_rate=4.0, duration=3.0, join_probes=3, join_rate=40.0)
    assert isinstance(result, LoadResult)
    assert result.members == 20 and result.joined == 20
    for value in result.to_dict().values():
        if isinstance(value, float):
            assert math.isfinite(value)
    assert 0 <= result.relay_cpu_idle_pct <= 200
    assert 0 <= result.relay_cpu_chat_pct <= 200
    assert result.relay_rss_empty_kib > 0 and result.relay_rss_kib > 0
    # 4 messages a second, each to the 19 other members: roughly 76 deliveries a second
    assert 0 < result.deliveries_per_s <= 4.0 * 19 * 2
    assert len(result.join_ms) == 3 and all(ms > 0 for ms in result.join_ms)
    assert min(result.join_ms) <= result.join_ms_median <= max(result.join_ms)
    table = format_table([result])
    assert "members" in table and "\n" in table and " 20 " in table
    assert 0 < result.members_join_ms_p50 <= result.members_join_ms_max  # every member's join


@pytest.mark.timeout(180)
def test_tiny_storm_run_is_complete_and_sane() -> None:
    result = run_storm(members=30, join_rate=50.0, senders=5, down_s=0.2)
    assert result.joined == result.rejoined == result.lists_exact == 30
    assert result.lines_sent == 5 and result.lines_lost == result.lines_duplicated == 0
    assert result.timed_out == 0
    assert 0 < result.join_ms_p50 <= result.join_ms_max
    assert 0 < result.rejoin_p50_s <= result.rejoin_all_s
    assert "rejoin after a restart: 30 of 30 back" in format_result(result)


def test_run_load_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        run_load(members=(10,), duration=0)
    with pytest.raises(ValueError):
        run_load(members=(0,), duration=1)
