"""The profiling and comparison scripts in bench/scripts still run against today's code.

They are not part of ``udpchat bench``, so nothing else would notice when a change to the
library or the load generator breaks one; each runs here at the smallest size that exercises
its whole path, and its output is checked for the figures it exists to give.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

SCRIPTS = Path(__file__).resolve().parents[1] / "bench" / "scripts"


def run_script(name: str, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.timeout(90)
def test_cluster_load_on_one_relay_delivers_everything_and_reports_its_figures() -> None:
    out = run_script(
        "cluster_load.py", "--store", "memory:", "--relays", "1", "--members", "4",
        "--rate", "20", "--duration", "1", "--sample", "2",
    )
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["relays"] == 1 and figures["members"] == 4
    assert figures["sent"] > 0 and figures["posted"] == figures["sent"]
    assert figures["loss_pct"] == 0.0
    assert figures["fanout_ms_p50"] > 0 and figures["relay_cpu_pct"] > 0


@pytest.mark.timeout(90)
def test_client_path_cost_gives_every_stage_of_both_layers() -> None:
    out = run_script("client_path_cost.py", "--rounds", "1", "--messages", "30")
    lines = {line.split()[0]: line for line in out.strip().splitlines()}
    for layer in ("session", "shell"):
        for stage in ("say", "receive", "posted"):  # an ACK sent at once has no stage
            assert f" {stage} " in lines[layer], out


@pytest.mark.timeout(90)
def test_client_path_cost_profiles_one_stage() -> None:
    out = run_script(
        "client_path_cost.py", "--profile", "session", "--stage", "receive", "--messages", "30"
    )
    assert "receive_datagram" in out and "tottime" in out, out


@pytest.mark.timeout(90)
def test_client_wakeups_counts_both_clients_turns() -> None:
    out = run_script("client_wakeups.py", "--rate", "100", "--seconds", "0.3")
    assert "30 lines, 30 received" in out, out
    assert "rx: per line: turns" in out and "tx: per line: turns" in out, out


@pytest.mark.timeout(90)
def test_relay_path_cost_reports_the_relays_turns_and_its_idle_share() -> None:
    out = run_script(
        "relay_path_cost.py", "--receivers", "2", "--messages", "20", "--rounds", "1",
        "--profile", "3",
    )
    assert "2 receivers, burst 1: µs relay CPU per SAY turn" in out
    assert "per ACK turn" in out and "receivers' DATA per message 1.00" in out
    assert "Ordered by: internal time" in out  # the profile of the relay's calls
    out = run_script("relay_path_cost.py", "--idle", "4", "--seconds", "2", "--rounds", "1")
    assert "4 idle members: relay" in out and "per PING" in out


@pytest.mark.timeout(90)
def test_wire_cost_accounts_for_every_byte_of_the_reference_traffic() -> None:
    out = run_script("wire_cost.py", "--loss", "0", "10", "--messages", "50")
    lines = out.splitlines()
    assert lines[0].startswith("links: ack_delay 1 ms, ack_every 2")
    for loss in ("0%", "10%"):
        (summary,) = [x for x in lines if x.startswith(f"loss {loss}:")]
        ratio = float(summary.split("wire/B ")[1].split(",")[0])
        assert 1.5 < ratio < 8.0, summary
    # protocol.md 3: a session header is type, token and a pn of 1 to 3 bytes here
    (say,) = [x for x in lines if x.split()[:1] == ["SAY"]][:1]
    header = float(say.split()[6])
    assert 10.0 <= header <= 12.0, say


@pytest.mark.timeout(90)
def test_latency_hops_times_a_line_hop_by_hop() -> None:
    out = run_script("latency_hops.py", "--lines", "10", "--rate", "50")
    assert out.startswith("10 of 10 lines: p50 ")
    for stage in ("say() to the sender's DATA sent", "relay's turn to the receiver's copy",
                  "receiver's turn to its event"):
        assert stage in out
    assert "copy left before the poster's POSTED: " in out


@pytest.mark.timeout(120)
def test_join_probe_splits_a_join_into_steps_and_the_relay_s_cpu() -> None:
    out = run_script("join_probe.py", "--members", "10", "--probes", "2", timeout=100)
    assert "| WELCOME |" in out and "| ACCEPT read |" in out
    assert "| CPU: JOIN read to ACCEPT sent |" in out and "| CPU: core takes the JOIN |" in out


@pytest.mark.timeout(60)
def test_redis_event_cost_times_one_event_through_a_redis_server_of_its_own() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    figures = json.loads(run_script("redis_event_cost.py", "--events", "20").strip())
    assert {"append_cpu_us", "read_foreign_us", "read_own_us"} <= set(figures)
    assert all(value > 0 for value in figures.values())


@pytest.mark.timeout(90)
def test_move_time_reports_the_moves_of_a_dead_relays_members() -> None:
    out = run_script(
        "move_time.py", "--runs", "2", "--members", "3", "--loss", "0.1", "--far", "0.05"
    )
    # one member per relay: relay 0's moves, to relays 50 ms farther
    assert out.startswith("2 moves at 10% loss (2 runs, the other relays 50 ms farther)"), out
    for measure in ("death to WELCOME", "silence to WELCOME"):
        assert f"  {measure}: median " in out, out


@pytest.mark.timeout(90)
def test_cold_cost_gives_both_costs_for_each_gap() -> None:
    out = run_script("cold_cost.py", "--gaps", "0.0002", "0.001", "--count", "5")
    rows = [line for line in out.splitlines() if line.startswith("| ") and " ms |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 0.2 ms", "| 1 ms"], out
    assert all(row.count("µs") == 2 for row in rows), out
