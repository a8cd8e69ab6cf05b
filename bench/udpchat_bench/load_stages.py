"""Where a join's time goes while a large room fills: the stages of each handshake.

``python -m udpchat_bench.load_stages --members 1000 --join-rate 50`` runs the load
benchmark's relay and members (``udpchat_bench.load``) with the kernel's receive timestamps
(``SO_TIMESTAMPNS``) on every socket, and splits each member's join (first HELLO to WELCOME)
into what happened where:

* **relay socket wait**: a HELLO or JOIN's time in the relay's receive buffer (kernel arrival
  to the relay reading it), from the relay's own timestamps;
* **relay turn**: from the HELLO or JOIN sent to its answer (CHALLENGE, ACCEPT) arriving at
  the member's socket, less nothing: it includes the socket wait above, the relay's work and
  loopback;
* **WELCOME after ACCEPT**: arrival of the WELCOME after the ACCEPT (both leave in one turn
  unless a slice boundary falls between them);
* **harness wait**: an answer's time in the member's socket before the members' process read
  it, and from reading a CHALLENGE to sending its JOIN (the members' process is one loop for
  a thousand members; a real member is a process of its own and would not wait there).

It also profiles the relay over the join phase (cProfile; the relay's CPU by kind of work,
``udpchat_bench.profiling``) and reports both processes' CPU. Figures are reported, never
asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udpchat import wire
from udpchat.endpoint import Address
from udpchat.relay_server import RelayServer
from udpchat.transport import normalise

# Linux: SO_TIMESTAMPNS (SCM_TIMESTAMPNS on receipt), a struct timespec in CLOCK_REALTIME.
SO_TIMESTAMPNS = 35
ANCILLARY_SPACE = 64
_TIMESPEC = struct.Struct("qq")


def enable_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp every datagram ``sock`` receives; whether it will."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def receive_stamped(sock: socket.socket, size: int) -> tuple[bytes, Any, float]:
    """One datagram, its source and the kernel's arrival time (``time.time()`` scale; nan
    when the kernel did not stamp it)."""
    data, ancillary, _flags, addr = sock.recvmsg(size, ANCILLARY_SPACE)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return data, addr, seconds + nanoseconds / 1e9
    return data, addr, math.nan


def stamp_handshakes(server: RelayServer) -> list[float]:
    """Read the relay's socket with the kernel's arrival stamps (udpchat_bench.load_stages)
    and keep, for every HELLO and JOIN, how long it waited in the socket, in ms."""
    udp = server._udp  # the benchmark's own relay: its socket, read another way
    waits: list[float] = []
    if udp is None or not enable_stamps(udp._sock):
        return waits
    sock = udp._sock
    read_at: dict[bytes, float] = {}  # HELLO or JOIN nonce -> when it was read
    answered = (wire.DatagramType.CHALLENGE, wire.DatagramType.ACCEPT, wire.DatagramType.BUSY)

    def receive_ready() -> tuple[bytes, Address] | None:
        try:
            data, addr, arrived = receive_stamped(sock, 65535)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return None
        if wire.is_handshake_request(data):
            now = time.time()
            waits.append(1000 * (now - arrived))
            with contextlib.suppress(wire.DecodeError):
                request = wire.decode_datagram(data)
                if isinstance(request, (wire.Hello, wire.Join)):
                    read_at.setdefault(request.nonce, now)
        return data, normalise(addr)

    send = udp.sendto

    def sendto(data: bytes, addr: Address) -> None:
        send(data, addr)
        if len(data) > 2 and data[2] in answered:
            with contextlib.suppress(wire.DecodeError):
                answer = wire.decode_datagram(data)
                if isinstance(answer, (wire.Challenge, wire.Accept, wire.Busy)):
                    started = read_at.pop(answer.nonce, None)
                    if started is not None:
                        handled.append(1000 * (time.time() - started))

    handled: list[float] = []
    udp._receive_ready = receive_ready  # type: ignore[method-assign]
    udp.sendto = sendto  # type: ignore[method-assign]
    server._handled_ms = handled  # type: ignore[attr-defined]
    return waits


@dataclass(slots=True)
class Stages:
    """One member's handshake, in ``time.time()`` seconds (nan: did not happen)."""

    hello_sent: float = math.nan
    challenge_arrived: float = math.nan
    challenge_read: float = math.nan
    join_sent: float = math.nan
    accept_arrived: float = math.nan
    accept_read: float = math.nan
    welcome_arrived: float = math.nan
    welcome_read: float = math.nan

    def note(self, name: str, when: float) -> None:
        """The first time a stage happened counts (a retry does not move it)."""
        if math.isnan(getattr(self, name)):
            setattr(self, name, when)

    def spans_ms(self) -> dict[str, float]:
        ms = 1000.0
        challenge_wait = self.challenge_read - self.challenge_arrived
        return {
            "join": ms * (self.welcome_read - self.hello_sent),
            "relay turn (HELLO)": ms * (self.challenge_arrived - self.hello_sent),
            "harness wait (CHALLENGE in socket)": ms * challenge_wait,
            "harness wait (CHALLENGE to JOIN)": ms * (self.join_sent - self.challenge_read),
            "relay turn (JOIN)": ms * (self.accept_arrived - self.join_sent),
            "WELCOME after ACCEPT": ms * (self.welcome_arrived - self.accept_arrived),
            "harness wait (WELCOME in socket)": ms * (self.welcome_read - self.welcome_arrived),
        }


def quantiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50, p90, p99 and max of ``values`` (nan ignored); None if there are none."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return None

    def pick(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 2)}


def summarise(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """The quantiles of each span over the members that joined."""
    out: dict[str, dict[str, float]] = {}
    for name in rows[0] if rows else ():
        q = quantiles([row[name] for row in rows])
        if q is not None:
            out[name] = q
    return out


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| stage (ms) | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|"]
    for name, q in summary.items():
        lines.append(f"| {name} | {q['p50']} | {q['p90']} | {q['p99']} | {q['max']} |")
    return "\n".join(lines)


def run_stages(
    members: int, join_rate: float, profile: str | None, say: Callable[[str], None]
) -> dict[str, Any]:
    """One join phase of the load benchmark with stamps (and the relay profiled)."""
    from udpchat_bench.load import _Proc, proc_cpu_s

    lifetime = 300.0 + 2 * members / join_rate
    relay = _Proc(
        "relay",
        {"members": members, "profile": profile, "stamps": True, "max_lifetime_s": lifetime},
    )
    generator: _Proc | None = None
    try:
        ready = relay.wait("ready", 30)
        pid, port = int(ready["pid"]), int(ready["port"])
        relay.tell("profile on")
        time.sleep(0.5)  # the switch is taken at the relay's next wait
        say(f"{members} members joining at {join_rate:g}/s")
        generator = _Proc(
            "members",
            {
                "members": members,
                "port": port,
                "join_rate": join_rate,
                "stamps": True,
                "max_lifetime_s": lifetime,
                "join_timeout_s": 120.0 + members / join_rate,
            },
        )
        gen_pid = generator.proc.pid
        relay0, gen0, t0 = proc_cpu_s(pid), proc_cpu_s(gen_pid), time.monotonic()
        joined = generator.wait("joined", 200.0 + 2 * members / join_rate)
        span = time.monotonic() - t0
        relay_pct = 100 * (proc_cpu_s(pid) - relay0) / span
        gen_pct = 100 * (proc_cpu_s(gen_pid) - gen0) / span
        relay.tell("profile off")
        relay.tell("drops")
        drops = relay.wait("drops", 10)
        generator.reap()
        generator = None
        relay.tell("stop")
        result = relay.wait("result", 30)
    finally:
        if generator is not None:
            generator.reap()
        relay.reap()
    waits = quantiles([float(w) for w in result.get("waits_ms", [])])
    handled = quantiles([float(w) for w in result.get("handled_ms", [])])
    return {
        "members": int(joined["members"]),
        "join_rate": join_rate,
        "relay_drops": int(drops["drops"]),
        "member_drops": int(joined["drops"]),
        "relay_cpu_join_pct": round(relay_pct, 1),
        "members_cpu_join_pct": round(gen_pct, 1),
        "relay_datagrams": int(drops.get("datagrams", 0)),
        "stages": summarise(joined["stages"]),
        "relay_waits_ms": {
            name: q
            for name, q in (
                ("relay socket wait (HELLO, JOIN)", waits),
                ("relay read to answer sent (HELLO, JOIN)", handled),
            )
            if q is not None
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    from udpchat_bench.profiling import report

    parser = argparse.ArgumentParser(prog="python -m udpchat_bench.load_stages")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--join-rate", type=float, default=50.0)
    parser.add_argument("--no-profile", action="store_true", help="no cProfile in the relay")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        profile = None if ns.no_profile else str(Path(tmp) / "relay.prof")
        run = run_stages(
            ns.members, ns.join_rate, profile, lambda text: print(text, file=sys.stderr, flush=True)
        )
        if ns.json:
            print(json.dumps(run))
            return 0
        print(
            f"{run['members']} joined at {ns.join_rate:g}/s; kernel drops relay/members "
            f"{run['relay_drops']}/{run['member_drops']}; CPU while joining: relay "
            f"{run['relay_cpu_join_pct']:.0f} %, members {run['members_cpu_join_pct']:.0f} %"
        )
        print()
        print(format_summary({**run["stages"], **run["relay_waits_ms"]}))
        if profile is not None and Path(profile).exists():
            import pstats

            print()
            print(report(pstats.Stats(profile), run["relay_datagrams"], ns.top))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # worker threads must not keep a finished harness alive
