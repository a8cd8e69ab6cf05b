"""``udpchat demo --cluster`` without running it: what it asks to install, how it reads the
bots' moves, what it counts as lost without fail-over, and how it judges and prints a run."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from udpchat.cli import app
from udpchat.demo import DemoConfig, MemberVerdict, RunResult
from udpchat.demo import processes as processes_module
from udpchat.demo.cluster import BotRecord, _moves
from udpchat.demo.cluster_report import ClusterResult, Move, print_cluster_result
from udpchat.demo.delivery import DeliveryStats
from udpchat.demo.results import Recorder

pytestmark = pytest.mark.unit

A, B, C = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"


def test_missing_redis_server_then_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes_module.shutil, "which", lambda name: None)
    message = processes_module.missing_requirement()
    assert message is not None and "redis-server" in message
    assert "apt-get install redis-server" in message
    monkeypatch.setattr(processes_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(processes_module.importlib.util, "find_spec", lambda name: None)
    assert processes_module.missing_requirement() == (
        "demo --cluster needs the redis package: pip install 'udpchat[redis]'"
    )


def test_cli_says_what_to_install_in_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(processes_module.importlib.util, "find_spec", lambda name: None)
    result = CliRunner().invoke(app, ["demo", "--cluster", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "udpchat: demo --cluster needs the redis package: pip install 'udpchat[redis]'"
    ]


def test_moves_of_the_killed_relay_and_the_others() -> None:
    records = [
        BotRecord(moves=((12.5, A, B),), attempts=2, left_seen=(), refusals=()),
        BotRecord(moves=(), attempts=0, left_seen=(), refusals=()),
        BotRecord(moves=((20.0, C, B),), attempts=1, left_seen=(), refusals=()),
        BotRecord(moves=(), attempts=3, left_seen=(), refusals=()),
    ]
    homes = [A, B, C, A]
    mine, others = _moves(records, homes, A, killed_at=10.0)
    assert mine == (Move("bot1", A, B, 2.5, 2), Move("bot4", A, None, None, 3))
    assert others == (Move("bot3", C, B, 10.0, 1),)


def test_unreached_without_counts_lines_from_and_to_the_cut_off_bots() -> None:
    recorder = Recorder(members=4, messages=3)
    for sender in range(4):
        for msg_id in range(3):
            recorder.will_send(sender, msg_id)
    everything = recorder.unreached_without({0}, since_ns=0)
    # bot1's 3 lines to the 3 others, and the others' 9 lines to bot1.
    assert everything == 3 * 3 + 9 * 1
    assert recorder.unreached_without({0, 3}, since_ns=0) == 6 * 3 + 6 * 2
    assert recorder.unreached_without({0}, since_ns=2**62) == 0


def _run(delivered: int) -> RunResult:
    stats = DeliveryStats(
        expected=20, delivered=delivered, duplicates=0, out_of_order=0, lost=20 - delivered,
        unexpected=0, malformed=0, latency_ms=None, first_send_ns=None, last_recv_ns=None,
    )
    members = (
        MemberVerdict("bot1", 10, 10, delivered - 10, 0, 0, 20 - delivered, 1, None, 1.0, 2, 3),
        MemberVerdict("bot2", 10, 10, 10, 0, 0, 0, 1, None, 1.0, 2, 3),
    )
    return RunResult("cluster", members, stats, 5.0)


def _result(
    delivered: int = 20, moved_to: str | None = B, left: tuple[str, ...] = ()
) -> ClusterResult:
    after = None if moved_to is None else 2.6
    return ClusterResult(
        config=DemoConfig(members=2, messages=10),
        run=_run(delivered),
        store="redis://127.0.0.1:6379/0",
        relays=(A, B, C),
        killed=A,
        killed_after_s=2.0,
        moves=(Move("bot1", A, moved_to, after, 1),),
        other_moves=(Move("bot2", B, C, 9.0, 1),),
        left_seen=left,
        refusals=("bot2: too fast",),
        lost_without_failover=7,
        join_s=0.5,
    )


def test_the_verdict_needs_everything_delivered_every_bot_moved_and_nobody_leaving() -> None:
    assert _result().ok
    assert not _result(delivered=19).ok
    assert not _result(moved_to=None).ok
    assert not _result(left=("bot1",)).ok
    data = json.loads(json.dumps(_result().to_dict()))
    assert data["moves"][0]["after_s"] == 2.6 and data["left_seen"] == []


@pytest.mark.parametrize("width", [80, 120])
def test_the_printed_verdict_fits_and_names_the_moves(width: int) -> None:
    out = io.StringIO()
    print_cluster_result(_result(left=("bot1",)), Console(file=out, width=width))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    assert f"Relay {A} killed with SIGKILL 2.0 s into the chat" in text
    assert "2.60" in text  # bot1's move time
    assert "also moved: bot2, from 127.0.0.1:9002 to 127.0.0.1:9003" in text
    assert "refused (1x): bot2: too fast" in text
    assert "seen leaving: bot1" in text
    assert "7 of 20" in text  # what a relay without fail-over would have lost
