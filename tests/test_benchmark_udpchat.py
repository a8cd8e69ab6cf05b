"""udpchat in the benchmark harness, and ``udpchat bench`` end to end, on loopback.

Speed is never asserted: only that results are complete and sane.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from udpchat.cli import app
from udpchat.events import MessageReceived
from udpchat.transport import Address
from udpchat_bench.accounting import SocketMeter
from udpchat_bench.harness import run_reference
from udpchat_bench.systems import SYSTEMS, PushLink, System, get_system
from udpchat_bench.traffic import (
    MIN_PAYLOAD_SIZE,
    TrafficSpec,
    make_payload,
    padding,
    parse_payload,
)
from udpchat_bench.udpchat_system import MeteredTransport, _UdpchatLink

pytestmark = pytest.mark.bench

TINY = TrafficSpec(messages=20, size=100, rate=200.0, receivers=2, drain_s=5.0)


def test_registered() -> None:
    assert "udpchat" in SYSTEMS
    system = get_system("udpchat")
    assert isinstance(system, System)
    assert system.name == "udpchat"
    assert system.supports_simulated_loss


@pytest.mark.parametrize("size", [MIN_PAYLOAD_SIZE, 100, 1000])
def test_a_payload_is_said_as_text_of_its_size(size: int) -> None:
    payload = make_payload(7, 9, 123_456_789, padding(size, seed=3))
    text = payload.decode("ascii")
    assert text.isalnum()  # nothing a terminal or the relay would treat specially
    assert len(text.encode("utf-8")) == size  # one byte on the wire per payload byte
    assert parse_payload(text.encode("ascii")) == (7, 9, 123_456_789)


def test_deliveries_reach_the_callback_in_order_after_those_queued() -> None:
    link = _UdpchatLink()
    assert isinstance(link, PushLink)

    def message(text: str, own: bool = False) -> MessageReceived:
        return MessageReceived(seq=1, time=0.0, nick="m1", text=text, own=own)

    link.on_event(message("first"))
    link.on_event(message("mine", own=True))  # our own messages are not deliveries
    link.on_event(message("second"))
    got: list[bytes] = []
    link.deliver_to(lambda payload, recv_ns: got.append(payload))
    assert got == [b"first", b"second"]  # queued before the switch, in order
    link.on_event(message("third"))
    link.on_event(message("caf\u00e9"))  # not ASCII: recorded as malformed, not lost
    assert got == [b"first", b"second", b"third", b""]
    assert link.recv(0.0) is None  # nothing is left behind in the queue


@pytest.mark.timeout(30)
def test_the_switch_to_the_callback_while_messages_arrive_keeps_their_order() -> None:
    """The client delivers on its thread while the benchmark switches to the callback on
    another: every message reaches it once, in order, one call at a time."""
    link = _UdpchatLink()
    queued, count = 50, 300
    got: list[bytes] = []
    calling = threading.Lock()  # held during a call: a second call meanwhile overlaps
    switching = threading.Event()  # the switch has begun: the client delivers meanwhile
    overlaps = 0

    def callback(payload: bytes, recv_ns: int) -> None:
        nonlocal overlaps
        if not calling.acquire(blocking=False):
            overlaps += 1
            got.append(payload)
            return
        try:
            switching.set()
            if len(got) < queued:
                time.sleep(0.001)  # a slow consumer while the queue drains
            got.append(payload)
        finally:
            calling.release()

    def deliver(first: int, last: int) -> None:
        for i in range(first, last):
            link.on_event(MessageReceived(seq=i, time=0.0, nick="m1", text=f"m{i}"))
            time.sleep(0)

    deliver(0, queued)  # before the switch: queued for recv
    client = threading.Thread(target=lambda: switching.wait(10) and deliver(queued, count))
    client.start()
    link.deliver_to(callback)
    client.join(20)
    assert not client.is_alive()
    assert overlaps == 0
    assert got == [f"m{i}".encode() for i in range(count)]


class _Loopback:
    """A transport that always has one more datagram to give."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    @property
    def local_address(self) -> Address:
        return ("127.0.0.1", 1)

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        return b"x" * 10, ("127.0.0.1", 2)

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_metered_transport_counts_and_drops_received() -> None:
    meter = SocketMeter()
    transport = MeteredTransport(_Loopback(), meter, loss_percent=50.0, seed=7)
    for _ in range(1000):
        assert transport.recvfrom(0.0) is not None
    transport.sendto(b"abc", ("127.0.0.1", 2))
    reading = meter.reading()
    assert reading.datagrams_received == 1000
    assert reading.bytes_received == 10_000
    assert (reading.datagrams_sent, reading.bytes_sent, reading.wire_bytes_sent) == (1, 3, 31)


def _assert_exactly_once_in_order(messages: int, loss: float) -> None:
    spec = TrafficSpec(messages=messages, size=100, rate=200.0, receivers=2, drain_s=10.0)
    result = run_reference("udpchat", spec, loss=loss)
    assert result.ok, result.error
    assert result.loss_mode == ("simulated" if loss else "none")
    assert result.stats is not None
    assert result.delivered_per_receiver == [messages, messages]
    stats = result.stats
    assert (stats.lost, stats.duplicates, stats.out_of_order) == (0, 0, 0)
    assert (stats.unexpected, stats.malformed) == (0, 0)
    assert stats.latency_ms is not None and stats.latency_ms.count == 2 * messages
    assert result.relay is not None and result.relay.cpu_s > 0
    # Every datagram was metered: the relay heard the sender's data and sent to both receivers.
    assert result.relay.meter.bytes_received >= messages * spec.size
    assert result.relay.meter.bytes_sent >= 2 * messages * spec.size
    assert result.wire_per_payload_byte is not None and result.wire_per_payload_byte > 1.5
    assert json.loads(result.to_json())["stats"]["delivered"] == 2 * messages


@pytest.mark.timeout(60)
def test_reference_run_without_loss() -> None:
    _assert_exactly_once_in_order(20, 0.0)


@pytest.mark.timeout(60)
def test_reference_run_with_user_space_loss() -> None:
    _assert_exactly_once_in_order(40, 20.0)


def test_bench_rejects_bad_options() -> None:
    result = CliRunner().invoke(app, ["bench", "--loss", "ten"])
    assert result.exit_code == 2  # a usage error
    assert result.stderr.strip().startswith("udpchat: --loss")
    result = CliRunner().invoke(app, ["bench", "--loss", "0,20"])  # 20 is not a rate: 20%
    assert result.exit_code == 2
    assert "did you mean 20%?" in result.stderr
    result = CliRunner().invoke(app, ["bench", "--members", "1"])
    assert result.exit_code == 2
    assert "at least 2 members" in result.stderr


@pytest.mark.timeout(90)
def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Loss method:" in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert set(data["systems"]) == {"udpchat", "plain-udp", "tcp-relay"}
    points = data["reference"]
    assert {p["system"] for p in points} == {"udpchat", "plain-udp", "tcp-relay"}
    for point in points:
        if point["skipped"]:  # TCP under user-space loss
            assert point["system"] == "tcp-relay" and point["loss_percent"] > 0
            continue
        run = point["result"]
        assert run["ok"], run["error"]
        assert run["stats"]["delivered"] > 0
        assert point["wire_per_payload_byte"] > 1
    ours = [p["result"]["stats"] for p in points if p["system"] == "udpchat"]
    assert all(s["delivered"] == s["expected"] and s["duplicates"] == 0 for s in ours)
    fanout = {f["system"]: f for f in data["fanout"]}
    assert {"udpchat", "plain-udp"} <= set(fanout)
    assert all(f["ok"] and f["relay_cpu_us_per_delivery"] > 0 for f in fanout.values())
    assert {t["name"] for t in data["targets"]} >= {"no saturation below 8,000 offered messages/s"}
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: no plot to check")
    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
