"""One benchmark process: a relay or a member of some system, driven over stdin/stdout.

Usage: ``python -m udpchat_bench.worker SYSTEM ROLE --json-args JSON`` where ROLE is
``relay`` or ``member``.

Separate processes keep the systems honest (no shared GIL between relay and members) and let
each one measure its own CPU time. The protocol with the harness is line based:

* stdout, one JSON object per line: ``{"event": "ready", ...}`` once able to take part,
  ``{"event": "sent", ...}`` when a member has sent all its messages, and finally
  ``{"event": "result", ...}`` (or ``{"event": "error", ...}``) just before exiting;
* stdin: ``go`` starts a member's sending; ``stop`` or end of file ends the role.

Pacing, timestamps and delivery logging happen here, identically for every system; the system
only supplies transport (`udpchat_bench.systems.System`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from udpchat.endpoint import Address
from udpchat_bench.accounting import (
    CpuWindow,
    SocketMeter,
    counters_delta,
    kernel_counters,
    process_total_cpu_s,
)
from udpchat_bench.systems import MemberArgs, MemberLink, PushLink, RelayArgs, get_system
from udpchat_bench.traffic import (
    DeliveryLog,
    make_payload,
    padding,
    schedule_ns,
    sleep_until_ns,
)

RECV_POLL_S = 0.05
WATCHDOG_GRACE_S = 5.0
"""After ``max_lifetime_s`` the role is asked to stop; this much later the process exits hard,
so that a system stuck in a blocking call can never outlive its run."""

_print_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one protocol line to stdout (thread-safe, flushed at once)."""
    line = json.dumps({"event": event, **fields}, separators=(",", ":"))
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Control:
    """Commands from the harness (stdin) plus the lifetime bound, as two events."""

    def __init__(self, max_lifetime_s: float) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._read_stdin, name="stdin", daemon=True).start()
        expiry = threading.Timer(max_lifetime_s, self.stop.set)
        expiry.daemon = True
        expiry.start()
        watchdog = threading.Timer(max_lifetime_s + WATCHDOG_GRACE_S, self._expire)
        watchdog.daemon = True
        watchdog.start()

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "go":
                self.go.set()
            elif command == "stop":
                break
        self.stop.set()
        self.go.set()

    @staticmethod
    def _expire() -> None:
        emit("error", error="lifetime exceeded; exiting without a result")
        os._exit(3)


def run_relay(system_name: str, params: Mapping[str, Any], control: Control) -> dict[str, Any]:
    system = get_system(system_name)
    args = RelayArgs.from_dict(params["relay"])
    want_kernel = bool(params.get("kernel_counters", False))
    meter = SocketMeter()
    before = kernel_counters() if want_kernel else {}
    cpu = CpuWindow()

    def ready(address: Address) -> None:
        emit("ready", address=list(address))

    system.run_relay(args, meter, ready, control.stop)
    result: dict[str, Any] = {
        "role": "relay",
        "cpu_s": cpu.elapsed_s(),
        "cpu_total_s": process_total_cpu_s(),
        "meter": meter.reading().to_dict(),
    }
    if want_kernel:
        result["kernel"] = counters_delta(before, kernel_counters())
    return result


class _Recorder:
    """Logs every delivery; says "complete" once ``expect`` distinct messages have arrived,
    so the harness can end its drain wait early. After ``close`` nothing more is logged (a
    system's thread that outlived its link's close must not touch a log being read)."""

    def __init__(self, log: DeliveryLog, expect: int) -> None:
        self.log = log
        self.expect = expect
        self.distinct: set[tuple[int, int]] = set()
        self.complete = expect <= 0
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, payload: bytes, recv_ns: int) -> None:
        log = self.log
        with self._lock:
            if self._closed:
                return
            logged = len(log)
            log.record(payload, recv_ns)
            if not self.complete and len(log) > logged and log.senders[-1] != log.member:
                self.distinct.add((log.senders[-1], log.msg_ids[-1]))
                if len(self.distinct) >= self.expect:
                    self.complete = True
                    emit("complete", member=log.member)

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _receive(link: MemberLink, record: _Recorder, stop: threading.Event) -> None:
    """Poll ``link`` for deliveries until stopped (a system that cannot call back)."""
    while not stop.is_set():
        payload = link.recv(RECV_POLL_S)
        if payload is not None:
            record(payload, time.monotonic_ns())


def _send(
    link: MemberLink, member: int, plan: Mapping[str, Any], stop: threading.Event
) -> dict[str, Any]:
    count = int(plan["count"])
    rate = float(plan["rate"])
    filler = padding(int(plan["size"]), int(plan["seed"]))
    sent = 0
    max_lag_ns = 0
    first_ns = last_ns = time.monotonic_ns()
    for msg_id, due_ns in schedule_ns(first_ns, count, rate):
        if stop.is_set():
            break
        sleep_until_ns(due_ns)
        now = time.monotonic_ns()
        link.send(make_payload(member, msg_id, now, filler))
        last_ns = now
        max_lag_ns = max(max_lag_ns, now - due_ns)
        sent += 1
    return {
        "count": sent,
        "first_send_ns": first_ns,
        "last_send_ns": last_ns,
        "max_lag_ms": max_lag_ns / 1e6,
    }


def run_member(system_name: str, params: Mapping[str, Any], control: Control) -> dict[str, Any]:
    system = get_system(system_name)
    args = MemberArgs.from_dict(params["member"])
    plan: Mapping[str, Any] | None = params.get("send")
    expect = int(params.get("expect", 0))
    meter = SocketMeter()
    link = system.connect_member(args, meter)
    cpu = CpuWindow()
    log = DeliveryLog(member=args.member)
    sending: dict[str, Any] = {"count": 0}
    record = _Recorder(log, expect)
    receiver: threading.Thread | None = None
    try:
        if isinstance(link, PushLink):
            link.deliver_to(record)
        else:
            receiver = threading.Thread(
                target=_receive, args=(link, record, control.stop), name="receiver", daemon=True
            )
            receiver.start()
        emit("ready", member=args.member)
        if expect <= 0:
            emit("complete", member=args.member)
        control.go.wait()
        if plan is not None and not control.stop.is_set():
            sending = _send(link, args.member, plan, control.stop)
            emit("sent", member=args.member, **sending)
        control.stop.wait()
        if receiver is not None:
            receiver.join(timeout=2.0)
    finally:
        link.close()
        record.close()
    return {
        "role": "member",
        "member": args.member,
        "cpu_s": cpu.elapsed_s(),
        "cpu_total_s": process_total_cpu_s(),
        "meter": meter.reading().to_dict(),
        "send": sending,
        "log": log.to_dict(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udpchat_bench.worker")
    parser.add_argument("system")
    parser.add_argument("role", choices=["relay", "member"])
    parser.add_argument("--json-args", required=True, help="role parameters as a JSON object")
    ns = parser.parse_args(argv)
    try:
        params = json.loads(ns.json_args)
        control = Control(float(params.get("max_lifetime_s", 60.0)))
        if ns.role == "relay":
            result = run_relay(ns.system, params, control)
        else:
            result = run_member(ns.system, params, control)
    except Exception as exc:
        emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    emit("result", **result)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Timer and stdin threads must not keep a finished process alive.
    os._exit(code)
