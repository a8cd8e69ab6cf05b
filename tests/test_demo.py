"""``udpchat demo``: bots on loopback, a lossy network, the reliable run against plain UDP."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from udpchat import demo as demo_module
from udpchat.cli import app
from udpchat.demo import (
    DemoConfig,
    DemoResult,
    MemberVerdict,
    RunResult,
    message_text,
    parse_text,
    percent,
    print_result,
    run_demo,
)
from udpchat.demo.delivery import DeliveryStats

pytestmark = pytest.mark.timeout(90)  # tiers per test: only some of them run the demo


@pytest.mark.unit
def test_message_text_round_trip() -> None:
    text = message_text(2, 6, 50)
    assert text == "bot3 message 7 of 50"
    assert parse_text(text) == (2, 6)
    for bad in ("", "hello", "bot0 message 1 of 5", "bot1 message 0 of 5", "bot1 message 1"):
        assert parse_text(bad) is None


@pytest.mark.unit
def test_percent_is_exact_only_when_exact() -> None:
    assert percent(600, 600) == "100%"
    assert percent(0, 600) == "0%"
    assert percent(5999, 6000) == "99.9%"
    assert percent(1, 100_000) == "0.1%"
    assert percent(346, 600) == "57.6%"


@pytest.mark.unit
def test_each_member_has_its_own_seed_and_both_runs_share_it() -> None:
    config = DemoConfig(loss=0.3, seed=9)
    first, second = config.impairment(0), config.impairment(1)
    assert first.loss == second.loss == 0.3
    assert first.seed != second.seed
    assert DemoConfig(loss=0.3, seed=9).impairment(1) == second


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"members": 1}, "members: expected 2 to"),
        ({"messages": 0}, "messages: expected 1 to"),
        ({"rate": 0.0}, "rate: expected more than 0"),
        ({"rate": float("nan")}, "rate: expected more than 0"),
        ({"messages": 10_000, "rate": 1.0}, "take longer than"),
        ({"loss": 1.0}, "loss: expected at least 0% and below 100%"),
        ({"drain_s": -1.0}, "drain_s"),
    ],
)
def test_bad_configs(kwargs: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        DemoConfig(**kwargs)


@pytest.mark.e2e
def test_small_demo_reliable_is_exact_and_plain_udp_loses() -> None:
    """3 bots x 15 messages at 25% loss each way.

    Over plain UDP each of the 45 messages crosses its sender's outbound impairment once and
    each of the 90 deliveries its receiver's inbound impairment once, all independent draws:
    everything arrives with probability 0.75 ** 135 < 1e-16.
    """
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False, color_system=None)
    config = DemoConfig(members=3, messages=15, rate=30.0, loss=0.25, seed=7)
    result = run_demo(config, console)

    reliable = result.reliable
    assert reliable.expected == 3 * 2 * 15
    assert reliable.delivered == reliable.expected
    assert reliable.duplicates == reliable.out_of_order == 0
    assert reliable.stats.unexpected == reliable.stats.malformed == 0
    assert reliable.clean and result.ok
    for member in reliable.members:
        assert (member.sent, member.expected, member.delivered) == (15, 30, 30)
        assert member.srtt_ms is not None and member.srtt_ms > 0
        assert member.latency_p50_ms is not None and member.latency_p99_ms is not None
    assert reliable.retransmissions is not None and reliable.retransmissions > 0

    plain = result.plain
    assert plain is not None
    assert plain.expected == reliable.expected
    assert plain.delivered < plain.expected
    assert plain.retransmissions is None
    assert all(m.sent == 15 for m in plain.members)

    text = out.getvalue()
    assert "\x1b[" not in text  # no live display without a terminal
    assert "Reliable run (udpchat), per member" in text
    assert "Same traffic, same network" in text
    for run_summary in result.summary().split("; "):  # one line each
        assert run_summary in text
    assert result.summary().startswith("reliable: 100% delivered, 0 dup, 0 out of order; ")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["demo", *args])


@pytest.mark.e2e
def test_cli_json_prints_one_object_with_the_verdict() -> None:
    result = invoke("--json", "--members", "2", "--messages", "10", "--rate", "40", "--loss", "25%")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["config"]["loss"] == 0.25 and data["config"]["members"] == 2
    for run in ("reliable", "plain"):
        assert data[run]["expected"] == 2 * 1 * 10
        assert isinstance(data[run]["delivered"], int)
        for key in ("duplicates", "out_of_order", "lost", "latency_ms", "members"):
            assert key in data[run]
    assert data["reliable"]["delivered"] == 20
    assert data["reliable"]["duplicates"] == data["reliable"]["out_of_order"] == 0
    member = data["reliable"]["members"][0]
    for key in ("expected", "delivered", "retransmissions", "srtt_ms", "latency_p99_ms"):
        assert key in member


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--members", "1"], "--members: expected 2 to"),
        (["--messages", "0"], "--messages: expected 1 to"),
        (["--rate", "0"], "--rate: expected more than 0"),
        (["--loss", "abc"], "--loss: invalid rate 'abc'"),
        (["--loss", "150%"], "--loss: invalid rate '150%'"),
        (["--loss", "1"], "--loss: expected at least 0% and below 100%, got 100%"),
        (
            ["--loss", "20"],
            "--loss: invalid rate '20': must be between 0 and 1 (0% and 100%); did you mean 20%?",
        ),
    ],
)
def test_cli_bad_options_are_one_line(args: list[str], complaint: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output  # a usage error, as the option parser says
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("udpchat: ")
    assert complaint in lines[0]
    assert result.stdout == ""


def _failed_result(config: DemoConfig) -> DemoResult:
    stats = DeliveryStats(
        expected=20,
        delivered=19,
        duplicates=0,
        out_of_order=0,
        lost=1,
        unexpected=0,
        malformed=0,
        latency_ms=None,
        first_send_ns=None,
        last_recv_ns=None,
    )
    member = MemberVerdict("bot1", 10, 10, 9, 0, 0, 1, 0, 0, 1.0, None, None)
    run = RunResult("reliable", (member,), stats, 1.0)
    return DemoResult(config, run, None, 1.0)


@pytest.mark.unit
def test_cli_fails_when_the_reliable_run_is_not_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "run_demo", lambda config, console: _failed_result(config))
    result = invoke("--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["reliable"]["delivered"] == 19 and data["plain"] is None


@pytest.mark.e2e
def test_the_verdict_fits_80_and_120_columns_and_says_what_latency_covers() -> None:
    result = run_demo(DemoConfig(members=3, messages=10, rate=40.0, loss=0.3, seed=3), None)
    assert result.plain is not None and result.plain.delivered < result.plain.expected
    share = percent(result.plain.delivered, result.plain.expected)
    for width in (80, 120):
        out = io.StringIO()
        print_result(result, Console(file=out, width=width, color_system=None))
        text = out.getvalue()
        assert all(len(line) <= width for line in text.splitlines()), text
        assert "\u2026" not in text  # no header cut to "expect…"
        lines = [line.strip() for line in text.splitlines()]
        # one summary line per run: none breaks mid-phrase
        reliable = "reliable: 100% delivered, 0 dup, 0 out of order"
        assert any(line.startswith(reliable) for line in lines)
        assert any(line.startswith(f"plain UDP: {share} delivered") for line in lines)
        joined = " ".join(text.split())
        assert f"only the {share} that plain UDP delivered" in joined
        assert "latency p99 ms, of what arrived" in joined
        assert "exp: messages it should get" in joined
        joined_row = next(line for line in lines if "all bots joined after s" in line)
        assert joined_row.rstrip("│ ").endswith("-")  # plain UDP has no join to time
