"""Where does a udpchat member (``ChatClient``) spend its CPU under fan-out load?

The relay and all members but one run as ordinary benchmark workers (``udpchat_bench.worker``,
one process each, unprofiled). The profiled member runs in this process exactly as a worker
runs it (``UDPCHAT.connect_member``: a ``ChatClient`` with its driver thread, deliveries
recorded in its ``on_event``, and for the sender its pacing loop), with every one of its threads
under a cProfile of its own on a thread-CPU clock. What the profile covers: the shell and its
driver (wake-ups, locks, the event hand-off), ``ClientSession``, the link, sealing and opening,
msgpack, the transport and the socket calls.

    python bench/scripts/member_profile.py --members 10 --rate 1000 --seconds 2
    python bench/scripts/member_profile.py --members 3 --rate 50 --seconds 8
    python bench/scripts/member_profile.py --role sender --members 10 --rate 1000

``--role receiver`` (the default) profiles member 1, which receives the fan-out; ``sender``
profiles member 0, which sends every message. Output: markdown tables in µs of the member's
CPU (all its threads) per datagram it handled after joining, received plus sent; the joining
itself is not profiled. ``--no-profile``: only the member's CPU, unprofiled (to compare two
versions). A diagnostic only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import threading
import time
from collections.abc import Callable
from typing import Any

from udpchat.driver import Driver
from udpchat_bench import profiling
from udpchat_bench.accounting import SocketMeter, process_cpu_s
from udpchat_bench.harness import START_TIMEOUT_S, STOP_TIMEOUT_S, _Worker, _worker_argv, worker_env
from udpchat_bench.systems import MemberArgs, PushLink, RelayArgs
from udpchat_bench.traffic import DeliveryLog, analyze
from udpchat_bench.udpchat_system import UDPCHAT
from udpchat_bench.worker import _Recorder, _send

_profilers: list[cProfile.Profile] = []
_active = threading.Event()  # set once joined: the driver's profile starts with the traffic
_installed: list[bool] = []  # not empty once profiling is on


def _profiled(target: Callable[[], Any]) -> Any:
    """Run ``target`` on this thread under a profile of its own (thread CPU clock), once
    profiling is on (``_install_driver_profile``)."""
    if not _installed:
        return target()
    profiler = cProfile.Profile(time.thread_time)
    _profilers.append(profiler)
    return profiler.runcall(target)


def _install_driver_profile() -> None:
    """Make every ``Driver`` started from now on profile its loop's thread from the first
    turn after ``_active`` is set (so the join is left out) to the loop's end."""
    start = Driver.start
    _installed.append(True)

    def start_profiled(self: Driver[Any]) -> None:
        profiler = cProfile.Profile(time.thread_time)
        _profilers.append(profiler)
        turn, run = self._turn, self.run
        enabled = False

        def profiled_turn(got: Any, slept: float, timer: float | None) -> None:
            nonlocal enabled
            if not enabled and _active.is_set():
                enabled = True
                profiler.enable()
            turn(got, slept, timer)

        def profiled_run() -> None:
            try:
                run()
            finally:
                profiler.disable()

        self._turn = profiled_turn  # type: ignore[method-assign]
        self.run = profiled_run  # type: ignore[method-assign]
        start(self)

    Driver.start = start_profiled  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s from member 0")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--role", choices=["receiver", "sender"], default="receiver")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--no-profile", action="store_true", help="CPU per datagram without cProfile"
    )
    ns = parser.parse_args()
    if ns.members < 2:
        parser.error("--members must be at least 2 (a sender and a receiver)")

    env = worker_env()
    count = max(1, round(ns.rate * ns.seconds))
    plan = {"count": count, "rate": ns.rate, "size": ns.size, "seed": 1}
    lifetime = START_TIMEOUT_S + 2 * ns.seconds + 60
    mine = 0 if ns.role == "sender" else 1
    relay = _Worker(
        "relay",
        _worker_argv([], "udpchat", "relay", {"relay": RelayArgs().to_dict(),
                                               "max_lifetime_s": lifetime}),
        env,
    )
    workers: list[_Worker] = []
    meter = SocketMeter()
    if not ns.no_profile:
        _install_driver_profile()
    link = None
    stop = threading.Event()
    log = DeliveryLog(member=mine)
    try:
        host, port = relay.wait_event("ready", START_TIMEOUT_S)["address"]
        for index in range(ns.members):
            if index == mine:
                continue
            args = MemberArgs(relay=(str(host), int(port)), member=index, seed=index + 1)
            params: dict[str, Any] = {
                "member": args.to_dict(),
                "send": plan if index == 0 else None,
                "expect": 0 if index == 0 else count,
                "max_lifetime_s": lifetime,
            }
            workers.append(
                _Worker(f"member {index}", _worker_argv([], "udpchat", "member", params), env)
            )
        member = link = UDPCHAT.connect_member(
            MemberArgs(relay=(str(host), int(port)), member=mine, seed=mine + 1), meter
        )
        for w in workers:
            w.wait_event("ready", START_TIMEOUT_S)
        joined = meter.reading()
        cpu_joined = process_cpu_s()
        expect = 0 if mine == 0 else count
        _active.set()
        # Deliveries are recorded in the client's on_event, on the driver thread (profiled
        # turn by turn), as a benchmark worker records them.
        assert isinstance(member, PushLink)
        member.deliver_to(_Recorder(log, expect))
        for w in workers:
            w.tell("go")
        if mine == 0:
            sent = _profiled(lambda: _send(member, 0, plan, stop))
        else:
            sent = workers[0].wait_event("sent", 2 * ns.seconds + 30)
        deadline = time.monotonic() + 10.0
        while mine != 0 and len(log) < int(sent["count"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        cpu_traffic = process_cpu_s() - cpu_joined
        after = meter.reading()
        stop.set()
        link.close()
        link = None
        for w in workers:
            w.close_stdin()
        logs = [log] if mine != 0 else []
        for w in workers:
            result = w.wait_event("result", STOP_TIMEOUT_S)
            if w is not workers[0] or mine == 0:
                logs.append(DeliveryLog.from_dict(result["log"]))
    finally:
        if link is not None:
            link.close()
        relay.close_stdin()
        for w in [*workers, relay]:
            w.reap()
    n = int(sent["count"])
    stats = analyze([lg for lg in logs if lg.member != 0], {0: n})
    before_d, after_d = joined.to_dict(), after.to_dict()
    received = after_d["datagrams_received"] - before_d["datagrams_received"]
    sent_d = after_d["datagrams_sent"] - before_d["datagrams_sent"]
    handled = received + sent_d
    print(
        f"{ns.members} members, {n} messages at {ns.rate:g}/s; profiled member {mine}"
        f" ({ns.role}): {received} datagrams received, {sent_d} sent after joining"
        f" ({received / n:.2f} + {sent_d / n:.2f} per message)"
    )
    print(f"receivers: {stats.delivered}/{stats.expected} delivered")
    lat = stats.latency_ms
    if lat is not None:
        print(f"latency p50 {lat.p50:.2f} ms, p99 {lat.p99:.2f} ms")
    print(
        f"this process CPU during traffic: {cpu_traffic:.3f} s ="
        f" {cpu_traffic / max(1, handled) * 1e6:.1f} us per datagram handled,"
        f" {cpu_traffic / max(1, n) * 1e6:.1f} us per message sent"
        f" ({'without' if ns.no_profile else 'with'} cProfile)"
    )
    if ns.no_profile:
        return
    combined = pstats.Stats(_profilers[0])
    for profiler in _profilers[1:]:
        combined.add(profiler)
    print(profiling.report(combined, handled, ns.top))


if __name__ == "__main__":
    main()
