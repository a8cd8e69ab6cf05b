"""Run a system on reference or fan-out traffic, in separate processes, and collect results.

The harness starts a relay, then every member, waits until all are joined, releases the
senders together, waits for the last send plus a drain period, then stops members and relay
and gathers the JSON each process prints (`udpchat_bench.worker`). Every wait is bounded:
a process that misses a deadline is killed and the run is reported as failed, never hung.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import udpchat
import udpchat_bench
from udpchat_bench.accounting import MeterReading
from udpchat_bench.netns import LossyNamespace, lossy_namespace
from udpchat_bench.systems import SYSTEMS, MemberArgs, RelayArgs, get_system
from udpchat_bench.traffic import DeliveryLog, DeliveryStats, TrafficSpec, analyze

START_TIMEOUT_S = 20.0
"""Time for a process to start Python, import, and (members) join the relay."""
STOP_TIMEOUT_S = 10.0
"""Time for a process to print its result once told to stop."""
SETTLE_S = 0.2
"""Extra listening once every receiver has every message, so late duplicates still count."""
SATURATION_THRESHOLD = 0.95


def is_saturated(achieved: float | None, offered: float) -> bool:
    """A fan-out is saturated when it achieved below SATURATION_THRESHOLD of the deliveries a
    second offered (or nothing measurable)."""
    return achieved is None or achieved < SATURATION_THRESHOLD * offered


class RunFailed(RuntimeError):
    """A process failed or missed a deadline; the message says which and why."""


@dataclass(frozen=True)
class ProcessReport:
    """What one process said about itself."""

    role: str
    member: int | None
    cpu_s: float
    cpu_total_s: float
    meter: MeterReading

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> ProcessReport:
        member = result.get("member")
        return cls(
            role=str(result["role"]),
            member=None if member is None else int(member),
            cpu_s=float(result["cpu_s"]),
            cpu_total_s=float(result["cpu_total_s"]),
            meter=MeterReading(**{k: int(v) for k, v in result["meter"].items()}),
        )


@dataclass
class _Outcome:
    """Raw material of a run, before it is shaped into a reference or fan-out result."""

    ok: bool = True
    error: str | None = None
    wall_s: float = 0.0
    relay: ProcessReport | None = None
    members: list[ProcessReport] = field(default_factory=list)
    logs: list[DeliveryLog] = field(default_factory=list)
    sends: dict[int, dict[str, Any]] = field(default_factory=dict)
    kernel: dict[str, int] | None = None


@dataclass(frozen=True)
class RunResult:
    """One system on the reference traffic.

    ``wire_bytes`` sums every process's estimated bytes on the wire (each packet is counted by
    its sender, so lost packets count too); ``wire_per_payload_byte`` divides it by the chat
    payload bytes actually delivered, the cost of getting one useful byte to one receiver.
    ``kernel`` holds the namespace's own counters when the run had a namespace to itself, and
    ``kernel_wire_per_payload_byte`` is the same ratio from the kernel's IP output octets
    (exact, TCP ACKs and retransmissions included).
    """

    system: str
    spec: TrafficSpec
    loss_percent: float
    loss_mode: str
    options: dict[str, Any]
    ok: bool
    error: str | None
    stats: DeliveryStats | None
    delivered_per_receiver: list[int]
    relay: ProcessReport | None
    members: list[ProcessReport]
    sender_max_lag_ms: float | None
    wire_bytes: int
    delivered_payload_bytes: int
    wire_per_payload_byte: float | None
    kernel_wire_per_payload_byte: float | None
    relay_cpu_s: float | None
    members_cpu_s: float
    kernel: dict[str, int] | None
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stats"] = None if self.stats is None else self.stats.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class FanoutResult:
    """One system under fan-out load: how much relay CPU a delivery costs, and whether the
    system kept up. ``achieved_deliveries_per_s`` is unique deliveries over the time from the
    first send to the last delivery, so a relay that falls behind (queues) or drops both show.
    ``members_cpu_s`` (all members) and ``senders_cpu_s`` (those that sent) tell whether the
    members rather than the relay were the limit, e.g. on a machine with few CPUs."""

    system: str
    members: int
    senders: int
    rate: float
    duration_s: float
    size: int
    options: dict[str, Any]
    ok: bool
    error: str | None
    stats: DeliveryStats | None
    offered_deliveries_per_s: float
    achieved_deliveries_per_s: float | None
    sent_per_s: float | None
    saturated: bool | None
    relay_cpu_s: float | None
    relay_cpu_us_per_delivery: float | None
    wire_bytes: int
    wall_s: float
    members_cpu_s: float = 0.0
    senders_cpu_s: float = 0.0
    delivered_per_member: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stats"] = None if self.stats is None else self.stats.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class _Worker:
    """A worker subprocess and a thread turning its stdout into a queue of events."""

    def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.label = label
        # Lives as long as the process it records; closed in reap().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(env),
            text=True,
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._seen: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._read, name=f"read-{label}", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put(None)

    def stderr_tail(self, limit: int = 600) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:]

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """The event of ``kind`` (each kind is sent once); raise `RunFailed` on error, exit or
        timeout."""
        event = self.poll_event(kind, timeout)
        if event is None:
            raise RunFailed(f"{self.label}: no '{kind}' within {timeout:.1f} s")
        return event

    def poll_event(self, kind: str, timeout: float) -> dict[str, Any] | None:
        """Like `wait_event`, but None on timeout."""
        if kind in self._seen:
            return self._seen[kind]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = self._events.get(timeout=max(0.0, left))
            except queue.Empty:
                return None
            if event is None:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                raise RunFailed(
                    f"{self.label}: exited {self.proc.returncode} before '{kind}'"
                    f" (stderr: {self.stderr_tail()!r})"
                )
            if event.get("event") == "error":
                raise RunFailed(f"{self.label}: {event.get('error')}")
            self._seen[str(event.get("event"))] = event
            if event.get("event") == kind:
                return event

    def tell(self, command: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def reap(self) -> None:
        """Make sure the process is gone: kill it if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.close_stdin()
        self._stderr.close()


def worker_env() -> dict[str, str]:
    """The environment for workers: udpchat and these tools importable whatever the caller's
    cwd (they may come from two checkouts, or from a checkout not installed at all)."""
    env = dict(os.environ)
    roots = [
        str(Path(module.__file__).resolve().parent.parent)
        for module in (udpchat, udpchat_bench)
        if module.__file__ is not None
    ]
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(roots), *([existing] if existing else [])])
    return env


def _worker_argv(prefix: Sequence[str], system: str, role: str, params: Any) -> list[str]:
    return [
        *prefix,
        sys.executable,
        "-m",
        "udpchat_bench.worker",
        system,
        role,
        "--json-args",
        json.dumps(params),
    ]


def _run_processes(
    system: str,
    members: int,
    plans: Mapping[int, Mapping[str, Any]],
    *,
    send_duration_s: float,
    drain_s: float,
    loss_percent: float,
    kernel_loss: bool,
    seed: int,
    options: Mapping[str, Any],
) -> _Outcome:
    """Start relay and ``members`` members (those in ``plans`` send), run, collect.

    Kernel loss starts once every member has joined: it models a network that turns bad
    during a chat, and keeps TCP's connection set-up (whose SYN timeouts start at 1 s) from
    dominating short runs. The drain ends early, after `SETTLE_S`, once every receiver
    reports it has every message it should get.
    """
    outcome = _Outcome()
    started = time.monotonic()
    simulated = 0.0 if kernel_loss else loss_percent
    # Senders may fall behind and TCP may stall under loss: allow generously, but not forever.
    send_timeout = 2 * send_duration_s + 30.0
    lifetime = START_TIMEOUT_S + send_timeout + drain_s + STOP_TIMEOUT_S
    workers: list[_Worker] = []
    env = worker_env()
    with contextlib.ExitStack() as stack:
        try:
            prefix: list[str] = []
            namespace: LossyNamespace | None = None
            if kernel_loss:
                namespace = stack.enter_context(lossy_namespace())
                prefix = namespace.prefix
            relay_params = {
                "relay": RelayArgs(loss_percent=simulated, seed=seed, options=options).to_dict(),
                "max_lifetime_s": lifetime + STOP_TIMEOUT_S,
                "kernel_counters": kernel_loss,
            }
            relay = _Worker("relay", _worker_argv(prefix, system, "relay", relay_params), env)
            workers.append(relay)
            host, port = relay.wait_event("ready", START_TIMEOUT_S)["address"]
            members_w: list[_Worker] = []
            for index in range(members):
                args = MemberArgs(
                    relay=(str(host), int(port)),
                    member=index,
                    loss_percent=simulated,
                    seed=seed * 1000 + index + 1,
                    connect_timeout_s=START_TIMEOUT_S / 2,
                    options=options,
                )
                expect = sum(int(p["count"]) for i, p in plans.items() if i != index)
                params = {
                    "member": args.to_dict(),
                    "send": plans.get(index),
                    "expect": expect,
                    "max_lifetime_s": lifetime,
                }
                argv = _worker_argv(prefix, system, "member", params)
                members_w.append(_Worker(f"member {index}", argv, env))
            workers.extend(members_w)
            for worker in members_w:
                worker.wait_event("ready", START_TIMEOUT_S)
            if namespace is not None and loss_percent > 0:
                namespace.set_loss(loss_percent)
            for worker in members_w:
                worker.tell("go")
            for index in plans:
                sent = members_w[index].wait_event("sent", send_timeout)
                outcome.sends[index] = sent
            drain_end = time.monotonic() + drain_s
            complete = all(
                worker.poll_event("complete", drain_end - time.monotonic()) is not None
                for worker in members_w
            )
            time.sleep(min(SETTLE_S, drain_s) if complete else 0.0)
            for worker in members_w:
                worker.close_stdin()
            for worker in members_w:
                result = worker.wait_event("result", STOP_TIMEOUT_S)
                outcome.members.append(ProcessReport.from_result(result))
                outcome.logs.append(DeliveryLog.from_dict(result["log"]))
            relay.close_stdin()
            relay_result = relay.wait_event("result", STOP_TIMEOUT_S)
            outcome.relay = ProcessReport.from_result(relay_result)
            kernel = relay_result.get("kernel")
            outcome.kernel = None if kernel is None else {k: int(v) for k, v in kernel.items()}
        except Exception as exc:
            outcome.ok = False
            outcome.error = str(exc) if isinstance(exc, RunFailed) else repr(exc)
        finally:
            for worker in workers:
                worker.close_stdin()
            for worker in workers:
                worker.reap()
    outcome.wall_s = time.monotonic() - started
    return outcome


def _check_system(system: str, loss_percent: float, kernel_loss: bool) -> None:
    if system not in SYSTEMS:
        get_system(system)  # raises KeyError naming the known systems
    if loss_percent and not kernel_loss and not get_system(system).supports_simulated_loss:
        raise ValueError(f"{system} cannot simulate loss in user space; use kernel_loss=True")


def _wire_bytes(outcome: _Outcome) -> int:
    reports = [*outcome.members, *([outcome.relay] if outcome.relay else [])]
    return sum(r.meter.wire_bytes_sent for r in reports)


def run_reference(
    system: str,
    spec: TrafficSpec | None = None,
    *,
    loss: float = 0.0,
    kernel_loss: bool = False,
    options: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run ``system`` on the reference traffic: member 0 sends, members 1..K receive.

    ``loss`` is a percentage of packets lost each way: by the kernel in a private namespace
    when ``kernel_loss`` (Linux, root; see `udpchat_bench.netns`), otherwise simulated by
    the system in user space. ``kernel_loss=True`` with ``loss=0`` still isolates the run in a
    namespace, which adds exact kernel counters.
    """
    spec = spec or TrafficSpec()
    opts = dict(options or {})
    _check_system(system, loss, kernel_loss)
    plan = {"count": spec.messages, "rate": spec.rate, "size": spec.size, "seed": spec.seed}
    outcome = _run_processes(
        system,
        spec.receivers + 1,
        {0: plan},
        send_duration_s=spec.send_duration_s,
        drain_s=spec.drain_s,
        loss_percent=loss,
        kernel_loss=kernel_loss,
        seed=spec.seed,
        options=opts,
    )
    stats: DeliveryStats | None = None
    per_receiver: list[int] = []
    delivered_bytes = 0
    lag: float | None = None
    if outcome.ok:
        sent_count = int(outcome.sends[0]["count"])
        receivers = [log for log in outcome.logs if log.member != 0]
        stats = analyze(receivers, {0: sent_count})
        per_receiver = [analyze([log], {0: sent_count}).delivered for log in receivers]
        delivered_bytes = stats.delivered * spec.size
        lag = float(outcome.sends[0]["max_lag_ms"])
    wire = _wire_bytes(outcome)
    mode = "none" if not loss else ("kernel" if kernel_loss else "simulated")
    return RunResult(
        system=system,
        spec=spec,
        loss_percent=loss,
        loss_mode=mode,
        options=opts,
        ok=outcome.ok,
        error=outcome.error,
        stats=stats,
        delivered_per_receiver=per_receiver,
        relay=outcome.relay,
        members=outcome.members,
        sender_max_lag_ms=lag,
        wire_bytes=wire,
        delivered_payload_bytes=delivered_bytes,
        wire_per_payload_byte=wire / delivered_bytes if delivered_bytes else None,
        kernel_wire_per_payload_byte=(
            outcome.kernel["ip_out_octets"] / delivered_bytes
            if delivered_bytes and outcome.kernel and "ip_out_octets" in outcome.kernel
            else None
        ),
        relay_cpu_s=outcome.relay.cpu_s if outcome.relay else None,
        members_cpu_s=sum(m.cpu_s for m in outcome.members),
        kernel=outcome.kernel,
        wall_s=outcome.wall_s,
    )


def run_fanout(
    system: str,
    members: int = 10,
    rate: float = 1000.0,
    duration: float = 2.0,
    *,
    senders: int = 1,
    size: int = 100,
    drain_s: float = 1.0,
    seed: int = 1,
    options: Mapping[str, Any] | None = None,
) -> FanoutResult:
    """Members ``0..senders-1`` each send ``rate`` messages/s for ``duration`` s; everyone
    receives everyone else's messages. Offered load is ``senders * rate * (members - 1)``
    deliveries/s; the relay is saturated when it achieves less than 95% of that."""
    if members < 2:
        raise ValueError("fan-out needs at least 2 members")
    if not 1 <= senders <= members:
        raise ValueError("senders must be within [1, members]")
    if not (rate > 0 and duration > 0):
        raise ValueError("rate and duration must be > 0")
    opts = dict(options or {})
    _check_system(system, 0.0, False)
    count = max(1, round(rate * duration))
    plans = {i: {"count": count, "rate": rate, "size": size, "seed": seed} for i in range(senders)}
    outcome = _run_processes(
        system,
        members,
        plans,
        send_duration_s=duration,
        drain_s=drain_s,
        loss_percent=0.0,
        kernel_loss=False,
        seed=seed,
        options=opts,
    )
    offered = senders * rate * (members - 1)
    stats: DeliveryStats | None = None
    achieved: float | None = None
    sent_per_s: float | None = None
    saturated: bool | None = None
    per_delivery: float | None = None
    per_member: list[int] = []
    if outcome.ok:
        sent = {i: int(s["count"]) for i, s in outcome.sends.items()}
        stats = analyze(outcome.logs, sent)
        per_member = [analyze([log], sent).delivered for log in outcome.logs]
        windows = [
            (int(s["last_send_ns"]) - int(s["first_send_ns"])) / 1e9 for s in outcome.sends.values()
        ]
        span = max(windows)
        if span > 0:
            sent_per_s = sum(max(0, n - 1) for n in sent.values()) / span
        if stats.first_send_ns is not None and stats.last_recv_ns is not None:
            elapsed = (stats.last_recv_ns - stats.first_send_ns) / 1e9
            achieved = stats.delivered / elapsed if elapsed > 0 else None
        saturated = is_saturated(achieved, offered)
        if outcome.relay and stats.delivered:
            per_delivery = outcome.relay.cpu_s / stats.delivered * 1e6
    return FanoutResult(
        system=system,
        members=members,
        senders=senders,
        rate=rate,
        duration_s=duration,
        size=size,
        options=opts,
        ok=outcome.ok,
        error=outcome.error,
        stats=stats,
        offered_deliveries_per_s=offered,
        achieved_deliveries_per_s=achieved,
        sent_per_s=sent_per_s,
        saturated=saturated,
        relay_cpu_s=outcome.relay.cpu_s if outcome.relay else None,
        relay_cpu_us_per_delivery=per_delivery,
        wire_bytes=_wire_bytes(outcome),
        wall_s=outcome.wall_s,
        members_cpu_s=sum(m.cpu_s for m in outcome.members),
        senders_cpu_s=sum(m.cpu_s for m in outcome.members if m.member in outcome.sends),
        delivered_per_member=per_member,
    )


def iter_systems() -> Iterator[str]:
    """Names of every registered system, in registration order."""
    yield from SYSTEMS
