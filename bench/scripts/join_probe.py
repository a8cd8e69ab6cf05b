"""Where one more join's time goes in a room of idle members: the load benchmark's join probe,
stage by stage, with the relay's CPU between its stages.

``udpchat load`` reports one figure for a join into a room of N idle members (HELLO sent to
WELCOME received, ``udpchat_bench.load.probe_join``). This runs the same relay and members
and probes the same way, but stamps every step on both sides (``time.perf_counter``, one
clock for every process on the machine) and the relay's serving thread's CPU
(``time.thread_time``) where it reads a HELLO or JOIN off its socket, where its core takes
one in and returns, and where it sends the answer:

    python bench/scripts/join_probe.py --members 1000 --probes 15

Printed: the median (and minimum) of each step's time from the probe's start, and per probe
the relay's CPU from reading the JOIN to sending the ACCEPT, split into the core's handling of
the JOIN and what came after it, and the JOIN's wall-clock wait to be read and answered. On
a shared machine the wall-clock steps include waiting for a core; the relay's CPU figures do
not. A diagnostic: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from udpchat import messages as m
from udpchat import wire
from udpchat.endpoint import Address
from udpchat.relay_server import RelayServer
from udpchat_bench import load
from udpchat_bench.bareclient import BareClient
from udpchat_bench.harness import worker_env

ANSWERS = (wire.DatagramType.CHALLENGE, wire.DatagramType.ACCEPT, wire.DatagramType.BUSY)


def stamped_relay(params: dict[str, Any], path: str) -> int:
    """The load benchmark's relay, writing "clock kind cpu type port" lines to ``path``."""
    out: TextIO = open(path, "w", buffering=1)  # noqa: SIM115 - open while the relay runs
    plain = RelayServer

    def note(kind: str, datagram_type: int, addr: Address) -> None:
        out.write(f"{time.perf_counter():.6f} {kind} {1000 * time.thread_time():.3f} "
                  f"{datagram_type} {addr[1]}\n")

    class Stamped(plain):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            udp, core = self._udp, self._driver.endpoint
            read, send, take = udp._receive_ready, udp.sendto, core.receive_datagram

            def receive_ready() -> tuple[bytes, Address] | None:
                got: tuple[bytes, Address] | None = read()
                if got is not None and wire.is_handshake_request(got[0]):
                    note("read", got[0][2], got[1])
                return got

            def receive_datagram(data: bytes, addr: Address, now: float) -> None:
                request = wire.is_handshake_request(data)
                if request:
                    note("core", data[2], addr)
                take(data, addr, now)
                if request:
                    note("handled", data[2], addr)

            accepted: set[Address] = set()  # sent an ACCEPT, not yet a session datagram

            def sendto(data: bytes, addr: Address) -> None:
                send(data, addr)
                if len(data) > 2 and data[2] in ANSWERS:
                    note("sent", data[2], addr)
                    if data[2] == wire.DatagramType.ACCEPT:
                        accepted.add(addr)
                elif addr in accepted and len(data) > 2:  # the first after it: WELCOME's
                    accepted.discard(addr)
                    note("session", 0, addr)

            udp._receive_ready = receive_ready
            udp.sendto = sendto
            core.receive_datagram = receive_datagram

    load.RelayServer = Stamped  # type: ignore[attr-defined]  # the one relay_main builds
    try:
        return load.relay_main(params)
    finally:
        out.close()


def probe(relay: Address, nick: str) -> tuple[int, dict[str, float]]:
    """One join and quit, as ``probe_join``; its port and its steps' perf_counter times."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((load.LOCALHOST, 0))
        steps: dict[str, float] = {"start": time.perf_counter()}
        client = BareClient(nick, os.urandom(wire.HANDSHAKE_NONCE_SIZE), os.urandom)
        deadline = time.monotonic() + 5.0
        while "WELCOME" not in steps:
            for data in client.take_datagrams(time.monotonic()):
                # stamped before it leaves: after, the relay may have read and answered it
                # while this process waited for a core, and its wait to be read came out
                # below zero
                steps.setdefault("HELLO sent" if "HELLO sent" not in steps else "JOIN sent",
                                 time.perf_counter())
                sock.sendto(data, relay)
            if time.monotonic() >= deadline:
                raise RuntimeError("join probe: no WELCOME within 5 s")
            timer = client.next_timer()
            datagram = load._recv_datagram(sock, min(deadline, timer or deadline))
            if datagram is None:
                continue
            name = type(datagram).__name__.upper()
            steps.setdefault(f"{name} read", time.perf_counter())
            for raw in client.receive(datagram, time.monotonic()):
                if isinstance(m.decode_message(raw), m.Welcome):
                    steps["WELCOME"] = time.perf_counter()
        load.leave_probe(client, sock, relay)
        return sock.getsockname()[1], steps


def relay_steps(
    lines: list[list[str]], port: int, steps: dict[str, float]
) -> dict[str, float] | None:
    """For a probe's first HELLO and JOIN, in ms: the wall-clock time each waited to be
    read and then to be answered (and the CHALLENGE to be read), the relay's CPU from
    reading each to sending its answer, and the JOIN's CPU in its parts."""
    mine = [line for line in lines if int(line[4]) == port]

    def first(kind: str, datagram_type: int, column: int = 2) -> float | None:
        return next(
            (
                float(line[column])
                for line in mine
                if line[1] == kind and int(line[3]) == datagram_type
            ),
            None,
        )

    join, accept = wire.DatagramType.JOIN, wire.DatagramType.ACCEPT
    hello, challenge = wire.DatagramType.HELLO, wire.DatagramType.CHALLENGE
    read, handled = first("read", join), first("handled", join)
    core, sent = first("core", join), first("sent", accept)
    read_at, sent_at = first("read", join, 0), first("sent", accept, 0)
    hello_at, challenged_at = first("read", hello, 0), first("sent", challenge, 0)
    welcome_at = first("session", 0, 0)
    hello_cpu, challenge_cpu = first("read", hello), first("sent", challenge)
    stamps = (read, handled, core, sent, read_at, sent_at)
    hello_stamps = (hello_at, challenged_at, hello_cpu, challenge_cpu)
    wanted = ("JOIN sent", "HELLO sent", "CHALLENGE read")
    if None in stamps or None in hello_stamps or any(name not in steps for name in wanted):
        return None
    assert read is not None and handled is not None and core is not None and sent is not None
    assert read_at is not None and sent_at is not None
    assert hello_at is not None and challenged_at is not None
    assert hello_cpu is not None and challenge_cpu is not None
    # The first round trip, HELLO to CHALLENGE: what a join that skipped it would save.
    return {
        "wall: HELLO sent to read by the relay": 1000 * (hello_at - steps["HELLO sent"]),
        "wall: HELLO read to CHALLENGE sent": 1000 * (challenged_at - hello_at),
        "CPU: HELLO read to CHALLENGE sent": challenge_cpu - hello_cpu,
        "wall: CHALLENGE sent to read by the probe": 1000 * (
            steps["CHALLENGE read"] - challenged_at
        ),
        "CPU: JOIN read to ACCEPT sent": sent - read,
        "CPU: core takes the JOIN": handled - core,
        "CPU: after, to ACCEPT sent": sent - handled,
        "wall: JOIN sent to read by the relay": 1000 * (read_at - steps["JOIN sent"]),
        "wall: JOIN read to ACCEPT sent": 1000 * (sent_at - read_at),
        "wall: ACCEPT sent to the first session datagram sent": (
            1000 * (welcome_at - sent_at) if welcome_at is not None else math.nan
        ),
        "wall: that datagram sent to read by the probe": (
            1000 * (steps["PROTECTED read"] - welcome_at)
            if welcome_at is not None and "PROTECTED read" in steps
            else math.nan
        ),
    }


def run(members: int, probes: int, say: Callable[[str], None]) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(scratch) / "relay-stamps.txt")
        relay = subprocess.Popen(
            [sys.executable, __file__, "relay", json.dumps({"members": members}), path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env(),
        )
        generator: load._Proc | None = None
        try:
            assert relay.stdout is not None and relay.stdin is not None
            ready = next(e for e in map(json.loads, relay.stdout) if e.get("event") == "ready")
            port = int(ready["port"])
            if members:
                say(f"{members} members joining")
                generator = load._Proc("members", {"members": members, "port": port})
                generator.wait("joined", 90.0 + members / 5)
                time.sleep(load.SETTLE_S)
            say(f"{probes} join probes")
            rows = []
            for k in range(probes):
                rows.append(probe((load.LOCALHOST, port), f"probe{k}"))
                time.sleep(0.2)
        finally:
            if generator is not None:
                generator.reap()
            with contextlib.suppress(OSError, ValueError):
                assert relay.stdin is not None
                relay.stdin.write("stop\n")
                relay.stdin.flush()
            relay.wait(load.STOP_TIMEOUT_S)
        lines = [line.split() for line in Path(path).read_text().splitlines()]
    out = [f"one more join into a room of {members} idle members, {probes} probes",
           "| step (ms from the probe's start) | median | min |", "|---|---:|---:|"]
    names = list(dict.fromkeys(name for _, steps in rows for name in steps))
    for name in names[1:]:
        values = [1000 * (steps[name] - steps["start"]) for _, steps in rows if name in steps]
        out.append(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} |")
    cpu = [c for c in (relay_steps(lines, port, steps) for port, steps in rows) if c]
    out += ["", "| the relay, ms (CPU: thread_time) | median | max |", "|---|---:|---:|"]
    for name in cpu[0] if cpu else ():
        values = [c[name] for c in cpu]
        out.append(f"| {name} | {statistics.median(values):.3f} | {max(values):.3f} |")
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        return stamped_relay(json.loads(sys.argv[2]), sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=15)
    args = parser.parse_args()
    print(run(args.members, args.probes, lambda text: print(text, file=sys.stderr, flush=True)))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # the relay worker's stdin and timer threads must not keep it alive
