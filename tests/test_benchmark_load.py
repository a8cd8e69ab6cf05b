"""The load benchmark, tiny: every figure present and plausible (speed is never asserted)."""

from __future__ import annotations

import contextlib
import math
import os
import time

import pytest

from tests.redis_support import RedisServer
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat_bench.load import (
    LoadResult,
    format_table,
    probe_join,
    proc_cpu_s,
    proc_rss_kib,
    run_load,
    store_error,
)
from udpchat_bench.storm import format_result, run_storm

pytestmark = pytest.mark.bench


def test_proc_readings_of_this_process() -> None:
    assert proc_cpu_s(os.getpid()) > 0
    assert proc_rss_kib(os.getpid()) > 1000


@pytest.mark.timeout(30)
def test_a_join_probe_nobody_answers_ends_at_its_deadline_with_the_reason() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(RuntimeError, match=r"did not welcome one more member within 0\.6 s"):
            probe_join(silent.getsockname(), "probe", timeout=0.6)
        # it asked again while it waited: a lost HELLO is not a failed join
        silent.settimeout(0)
        hellos = 0
        with contextlib.suppress(BlockingIOError):
            while hellos < 100:
                silent.recv(2048)
                hellos += 1
        assert hellos >= 2


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
    assert 0 < result.floor_cpu_pct <= 100  # the bare loop's on the same 20 heartbeats a second
    assert result.relay_rss_empty_kib > 0 and result.relay_rss_kib > 0
    # 4 messages a second, each to the 19 other members: roughly 76 deliveries a second
    assert 0 < result.deliveries_per_s <= 4.0 * 19 * 2
    assert len(result.join_ms) == 3 and all(ms > 0 for ms in result.join_ms)
    assert min(result.join_ms) <= result.join_ms_median <= max(result.join_ms)
    table = format_table([result])
    assert "members" in table and "\n" in table and " 20 " in table
    assert "floor %" in table
    row = table.splitlines()[2].split()  # members, joined, join phase, CPU idle, floor, ...
    assert float(row[3]) == pytest.approx(result.relay_cpu_idle_pct, abs=0.006)
    assert float(row[4]) == pytest.approx(result.floor_cpu_pct, abs=0.006)
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
    assert len(result.join_stages_ms) == 3
    assert all(0 < p50 <= p99 for p50, p99 in result.join_stages_ms)
    slowest = result.slowest_joins[0]  # its total is the sum of its stages
    assert slowest[2] == pytest.approx(sum(slowest[3:]), abs=0.02)
    assert slowest[2] <= result.join_ms_max + 0.1


@pytest.mark.timeout(120)
def test_a_load_run_on_a_sqlite_store_is_complete() -> None:
    """--store sqlite: a fresh file for the run, so that the room starts empty (a join, not
    a rejoin) and the messages go through the file."""
    (result,) = run_load(
        members=(10,), chat_rate=4.0, duration=2.0, join_probes=2, join_rate=40.0, store="sqlite:"
    )
    assert result.joined == 10 and result.deliveries_per_s > 0


@pytest.mark.timeout(120)
def test_a_load_run_on_a_redis_room_is_complete(redis_server: RedisServer) -> None:
    (result,) = run_load(
        members=(10,),
        chat_rate=4.0,
        duration=2.0,
        join_probes=2,
        join_rate=40.0,
        store=f"redis://127.0.0.1:{redis_server.port}/0",
    )
    assert result.joined == 10 and result.deliveries_per_s > 0


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ("memory:", None),
        ("sqlite:", None),
        ("redis://127.0.0.1:6399/0", None),
        ("sqlite:/tmp/x.sqlite3", "--store: expected memory:, sqlite: or redis://"),
        ("redis://127.0.0.1:notaport/0", "--store: "),
        ("postgres://x", "--store: expected memory:, sqlite: or redis://"),
    ],
)
def test_the_load_store_is_checked(store: str, problem: str | None) -> None:
    found = store_error(store)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_run_load_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        run_load(members=(10,), duration=0)
    with pytest.raises(ValueError):
        run_load(members=(0,), duration=1)
    with pytest.raises(ValueError, match="--store"):
        run_load(members=(10,), duration=1, store="mysql:")
