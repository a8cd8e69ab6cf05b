"""Where does the udpchat relay spend its CPU, and what does it put on the wire?

Runs the udpchat relay in this process (its serving thread under cProfile) and the members
as ordinary benchmark workers (`udpchat_bench.worker`, one process each), on fan-out or
reference-like traffic. Every datagram the relay sends or receives is recorded (bytes only,
cheap) and classified after the run, so the profile is not polluted by the accounting:
DATA by its size (sealed: the messages inside are not visible), ACK, PING, handshakes.

    python bench/scripts/relay_profile.py --members 10 --rate 1000 --seconds 2
    python bench/scripts/relay_profile.py --members 3 --rate 50 --seconds 8 --loss 10
    python bench/scripts/relay_profile.py --no-profile --store sqlite:/tmp/room.sqlite3

``--store`` keeps the room log where ``udpchat relay --store`` would (memory by default here,
to compare against; a SQLite file commits once per serving-loop turn).

Loss here is user-space (each process drops that share of what it receives). A diagnostic
only: speed and counts are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import threading
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from udpchat import wire
from udpchat.endpoint import Address
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.stores import parse_store
from udpchat.transport import DatagramTransport
from udpchat_bench.accounting import SocketMeter, process_cpu_s
from udpchat_bench.harness import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    _Worker,
    _worker_argv,
    worker_env,
)
from udpchat_bench.systems import MemberArgs
from udpchat_bench.traffic import DeliveryLog, analyze
from udpchat_bench.udpchat_system import MeteredTransport, relay_config


class RecordingTransport:
    """Keeps every datagram passing through (direction, bytes) for classification later."""

    def __init__(self, inner: DatagramTransport) -> None:
        self._inner = inner
        self.log: list[tuple[str, bytes]] = []

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    def sendto(self, data: bytes, addr: Address) -> None:
        self._inner.sendto(data, addr)
        self.log.append(("sent", data))

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        got = self._inner.recvfrom(timeout)
        if got is not None:
            self.log.append(("received", got[0]))
        return got

    def wake(self) -> None:
        self._inner.wake()

    def close(self) -> None:
        self._inner.close()


def classify(data: bytes) -> str:
    """The datagram's type, as an observer on the path sees it: session datagrams are
    sealed (protocol.md 8), so DATA shows only its size, not the messages it carries."""
    try:
        datagram = wire.decode_datagram(data)
    except wire.DecodeError:
        return "undecodable"
    if isinstance(datagram, wire.Protected):
        return f"{datagram.kind.name}[{len(data)} B]"
    return type(datagram).__name__.upper()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s from member 0")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--loss", type=float, default=0.0, help="user-space loss, percent")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="CPU without cProfile")
    parser.add_argument("--store", default="memory:", help="memory: or sqlite:PATH")
    ns = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7.0f ms relay: %(message)s")
    meter = SocketMeter()
    options = RelayOptions(
        host="127.0.0.1", port=0, config=relay_config({}), store=parse_store(ns.store)
    )
    server = RelayServer(options)
    recorder = RecordingTransport(MeteredTransport(server._transport, meter, ns.loss, seed=1))
    server._transport = recorder
    profiler = cProfile.Profile(time.thread_time)  # CPU of the serving thread, not wall time
    thread = threading.Thread(
        target=server.serve_forever
        if ns.no_profile
        else lambda: profiler.runcall(server.serve_forever),
        daemon=True,
    )
    thread.start()
    host, port = server.address
    count = max(1, round(ns.rate * ns.seconds))
    plan = {"count": count, "rate": ns.rate, "size": ns.size, "seed": 1}
    lifetime = START_TIMEOUT_S + 2 * ns.seconds + 60
    env = worker_env()
    workers: list[_Worker] = []
    try:
        for index in range(ns.members):
            args = MemberArgs(
                relay=(host, port), member=index, loss_percent=ns.loss, seed=index + 1
            )
            params: dict[str, Any] = {
                "member": args.to_dict(),
                "send": plan if index == 0 else None,
                "expect": 0 if index == 0 else count,
                "max_lifetime_s": lifetime,
            }
            workers.append(
                _Worker(f"member {index}", _worker_argv([], "udpchat", "member", params), env)
            )
        for w in workers:
            w.wait_event("ready", START_TIMEOUT_S)
        joined_log = len(recorder.log)
        cpu_joined = process_cpu_s()
        for w in workers:
            w.tell("go")
        sent = workers[0].wait_event("sent", 2 * ns.seconds + 30)
        deadline = time.monotonic() + 10.0
        for w in workers[1:]:
            w.poll_event("complete", max(0.0, deadline - time.monotonic()))
        time.sleep(0.2)
        cpu_traffic = process_cpu_s() - cpu_joined
        logs: list[DeliveryLog] = []
        for w in workers:
            w.close_stdin()
        for w in workers:
            result = w.wait_event("result", STOP_TIMEOUT_S)
            logs.append(DeliveryLog.from_dict(result["log"]))
    finally:
        for w in workers:
            w.reap()
        server.stop(goodbye=False)
    receivers = [log for log in logs if log.member != 0]
    stats = analyze(receivers, {0: int(sent["count"])})
    per_member = [analyze([log], {0: int(sent["count"])}).delivered for log in receivers]
    traffic = recorder.log[joined_log:]
    by_kind: Counter[tuple[str, str]] = Counter()
    bytes_by_kind: Counter[tuple[str, str]] = Counter()
    for direction, data in traffic:
        kind = classify(data)
        by_kind[(direction, kind)] += 1
        bytes_by_kind[(direction, kind)] += len(data) + 28
    n = int(sent["count"])
    print(
        f"{ns.members} members, {n} messages at {ns.rate:g}/s, {ns.loss:g}% user-space loss:"
        f" {stats.delivered}/{stats.expected} delivered, {stats.duplicates} duplicates"
        f" (room store {ns.store})"
    )
    print(f"sender: {sent['count']} sent, max lag {float(sent['max_lag_ms']):.1f} ms")
    print(f"delivered per receiver: {per_member}")
    print(f"relay stats: {asdict(server.stats)}")
    lat = stats.latency_ms
    if lat is not None:
        print(f"latency p50 {lat.p50:.2f} ms, p99 {lat.p99:.2f} ms, max {lat.max:.2f} ms")
    print(
        f"relay process CPU during traffic: {cpu_traffic:.3f} s ="
        f" {cpu_traffic / max(1, stats.delivered) * 1e6:.1f} us per delivery"
        f" ({'with' if not ns.no_profile else 'without'} cProfile; the profiler inflates it)"
    )
    print(f"relay datagrams after joining, per message sent ({n}):")
    total_bytes = 0
    for (direction, kind), number in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        b = bytes_by_kind[(direction, kind)]
        total_bytes += b
        print(f"  {direction:<8} {kind:<28} {number:>7}  {number / n:6.2f}/msg  {b / n:7.1f} B/msg")
    if stats.delivered:
        print(
            f"relay wire bytes per delivered payload byte (both directions at the relay):"
            f" {total_bytes / (stats.delivered * ns.size):.2f}"
        )
    if not ns.no_profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(ns.top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(ns.top)
        print(out.getvalue())
    print(json.dumps(meter.reading().to_dict()))


if __name__ == "__main__":
    main()
