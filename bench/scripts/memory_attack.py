"""How much relay memory can sessions buy with out-of-order DATA, and does it come back?

The relay runs in a subprocess of its own (``memory_attack.py relay``, a ``RelayServer`` on an
ephemeral port of 127.0.0.1) so that its resident memory (``/proc/<pid>/status``, VmRSS) is
its own. This process opens up to 1,024 real sessions to it from 127.0.0.1, each with a real
protocol version 2 handshake (HELLO and JOIN padded to 1200 bytes, the JOIN a Noise message
built by ``udpchat.handshake.Joiner``, protocol.md 4 and 8), opens what the relay sends with the
session's keys and acknowledges its DATA so the sessions stay alive, then sends in every
session the out-of-order pattern chosen, every datagram sealed (protocol.md 8.1) with a packet
number of its own:

* ``tiny``: seq 1 to 63, never seq 0, each packet as many 2-byte chunks as the rules allow
  (``MAX_CHUNKS``; 2-byte bytes objects are the costliest per byte on the wire: 1-byte ones
  are cached);
* ``bulk``: seq 1 to 63, each packet one chunk as large as fits in a sealed datagram of
  ``MAX_DATAGRAM_SIZE`` bytes;
* ``reassembly``: the start of a message just under MAX_MESSAGE_SIZE in order (the relay
  must process in-order packets), then the ``tiny`` pattern on top of it;
* ``reassembly-bulk``: the same with the ``bulk`` pattern on top;
* ``all``: each of the above with a fresh relay, one after the other.

It reports the relay's RSS with no members, with every session joined, at its peak, while
the sessions hold what they sent, and after they timed out (the sessions fall silent; the
relay's timeout is short). Then it has the relay run ``gc.collect()`` and glibc's
``malloc_trim(0)`` and reports RSS again: what that gives back is memory the allocators kept
after it was freed, as opposed to memory still in use. It also reports the bytes sent. Attack
datagrams are paced by the relay's answers, so that the kernel's receive buffer does not drop
them; the relay's own count of datagrams received shows about how many it missed.

    python bench/scripts/memory_attack.py --sessions 1024 --pattern all
    PYTHONPATH=/other/checkout python bench/scripts/memory_attack.py ...  # another udpchat

Relay settings go through ``RELAY_OVERRIDES`` and ``--relay-option name=json-value``; a name
this version's ``RelayConfig`` does not know is reported and left out. Traffic goes to
127.0.0.1 only; the run is bounded by ``--max-seconds``. Figures are reported, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import os
import random
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from udpchat import session_bytes, wire
from udpchat.handshake import Joiner
from udpchat.seal import SealError, SessionCipher
from udpchat_bench.load import open_member_sockets

LOCALHOST = "127.0.0.1"
MAX_SESSIONS = 1024
SESSIONS_PER_SOCKET = 32
JOIN_WAVE = 16  # handshakes in flight at once
HANDSHAKE_RETRY_S = 0.5
# A session that has sent nothing for a random 0.5 to 1 times KEEPALIVE_S sends an ACK, and
# sessions acknowledge the relay's DATA after a random 1 to 2 times ACK_DELAY_S: a thousand
# sessions answering a fan-out, or keeping alive, in step would overflow the relay's socket
# buffer (the kernel's default size) and lose their keep-alives.
KEEPALIVE_S = 1.0
KEEPALIVE_CHECK_S = 0.02
ACK_DELAY_S = 0.05
ATTACK_SESSIONS_AT_ONCE = 2  # sessions sending their pattern at the same time
ATTACK_BLOCK = 16  # datagrams a session sends before it waits for the relay's answer
ANSWER_TIMEOUT_S = 0.5
# Relay settings for the run: every session comes from 127.0.0.1, so the per-address
# handshake and member limits are lifted (a version without some of them ignores those); a
# short member timeout lets silent sessions go quickly.
RELAY_OVERRIDES: dict[str, Any] = {
    "max_members": MAX_SESSIONS,
    "handshake_burst": 4 * MAX_SESSIONS,
    "handshake_rate": 4.0 * MAX_SESSIONS,
    "max_members_per_host": MAX_SESSIONS,
    "max_members_per_network": MAX_SESSIONS,
    "heartbeat": 1.0,
    "timeout": 6.0,
}
PATTERNS = ("tiny", "bulk", "reassembly", "reassembly-bulk")
# Attack datagrams are sized with these in place of the packet number and the ACK fields:
# values at least as wide on the wire as any a run reaches, so that what fits with them fits
# with the real ones (checked as each datagram is sealed).
WIDE_PN = 2**32 - 1
WIDE_ACK = 2**32 - 1
WIDE_SEQ = 2**32 - 1


# --- the relay process ---------------------------------------------------------------------


def _emit(stream: IO[str], event: str, **fields: Any) -> None:
    stream.write(json.dumps({"event": event, **fields}) + "\n")
    stream.flush()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def relay_main(overrides: dict[str, Any], lifetime: float, verbose: bool) -> int:
    """Serve on an ephemeral port until stdin says ``stop`` or closes; answer ``status``."""
    import udpchat
    from udpchat.relay.config import RelayConfig
    from udpchat.relay_server import RelayOptions, RelayServer

    if verbose:
        logging.basicConfig(level=logging.INFO, format="relay: %(message)s", stream=sys.stderr)
    known = {f.name for f in dataclasses.fields(RelayConfig)}
    config = RelayConfig(**{k: v for k, v in overrides.items() if k in known})
    server = RelayServer(RelayOptions(host=LOCALHOST, port=0, config=config))
    out = sys.stdout
    lock = threading.Lock()

    def status(event: str, took: float = 0.0) -> None:
        budget = getattr(server.core, "receive_budget", None)
        with lock:
            _emit(
                out,
                event,
                took_ms=round(took * 1000, 2),
                members=len(server.members()),
                datagrams_received=server.stats.datagrams_received,
                budget_used=getattr(budget, "used", None),
                rss_kib=rss_kib(os.getpid()),
            )

    def commands() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            took = 0.0
            if command == "trim":
                gc.collect()
                started = time.perf_counter()
                with contextlib.suppress(OSError, AttributeError):
                    ctypes.CDLL(None).malloc_trim(0)
                took = time.perf_counter() - started
            status(command or "status", took)
        server.stop(goodbye=False)

    threading.Thread(target=commands, daemon=True).start()
    timer = threading.Timer(lifetime, lambda: server.stop(goodbye=False))
    timer.daemon = True
    timer.start()
    with lock:
        _emit(
            out,
            "ready",
            port=server.address[1],
            pid=os.getpid(),
            udpchat=str(Path(udpchat.__file__).parent),
            ignored=sorted(set(overrides) - known),
        )
    server.start()  # a serving thread, as ``udpchat relay`` has: glibc gives it its own arena
    while not server.wait(0.5):
        pass
    return 0


class Relay:
    """The relay subprocess, spoken to over its stdin and stdout."""

    def __init__(self, overrides: dict[str, Any], lifetime: float, verbose: bool) -> None:
        argv = [sys.executable, __file__, "relay", "--config", json.dumps(overrides)]
        argv += ["--lifetime", str(lifetime), *(["--verbose"] if verbose else [])]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self.read("ready")
        self.pid = int(self.ready["pid"])
        self.port = int(self.ready["port"])

    def read(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if message["event"] == event:
                return dict(message)
        raise RuntimeError(f"the relay ended before saying {event!r}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(command)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the sessions --------------------------------------------------------------------------


class Session:
    """One session's handshake, keys and receive state, enough to acknowledge the relay."""

    __slots__ = (
        "cipher",
        "expected",
        "index",
        "joiner",
        "keepalive_at",
        "nonce",
        "pn",
        "seen",
        "sock",
        "token",
    )

    def __init__(self, index: int, sock: int) -> None:
        self.index = index
        self.sock = sock
        self.nonce = os.urandom(wire.HANDSHAKE_NONCE_SIZE)
        self.joiner: Joiner | None = Joiner(self.nonce, f"m{index}", os.urandom)
        self.cipher: SessionCipher | None = None  # set, with token, by the ACCEPT
        self.token: bytes | None = None
        self.pn = 0  # the packet number of the next datagram sent
        self.expected = 0  # the relay's next seq in order
        self.seen: set[int] = set()  # the relay's seqs received above it
        self.keepalive_at = 0.0

    def take_pn(self) -> int:
        self.pn += 1
        return self.pn - 1

    def on_data(self, seq: int) -> None:
        if seq >= self.expected:
            self.seen.add(seq)
            while self.expected in self.seen:
                self.seen.discard(self.expected)
                self.expected += 1

    def ack_fields(self) -> tuple[int, int]:
        bits = 0
        for seq in self.seen:
            if seq - self.expected - 1 < 63:
                bits |= 1 << (seq - self.expected - 1)
        return self.expected, bits


def sealed_size(more: bool, chunks: list[bytes]) -> int:
    """The bytes of a sealed DATA carrying ``chunks``, with the widest packet number and ACK
    fields a run uses (no room key, so no padding: protocol.md 8.2)."""
    cipher = SessionCipher(bytes(32), bytes(32), padded=False, interval=2**64)
    fields = session_bytes.data_fields(WIDE_ACK, wire.MAX_ACK_BITS, WIDE_SEQ, int(more), chunks)
    return len(cipher.seal(wire.DatagramType.DATA, bytes(wire.TOKEN_SIZE), WIDE_PN, fields))


def largest_chunk(more: bool) -> int:
    """The size of the one chunk that fills a sealed DATA of at most MAX_DATAGRAM_SIZE."""
    size = wire.MAX_DATAGRAM_SIZE - sealed_size(more, [b"x"]) + 1
    while sealed_size(more, [bytes(size)]) > wire.MAX_DATAGRAM_SIZE:
        size -= 1
    return size


def tiny_chunks(seq: int) -> list[bytes]:
    """As many 2-byte chunks as the rules allow: MAX_CHUNKS, unless fewer fill the datagram."""
    chunks: list[bytes] = []
    while len(chunks) < wire.MAX_CHUNKS:
        chunk = bytes([seq % 256, len(chunks) % 256])
        if sealed_size(False, [*chunks, chunk]) > wire.MAX_DATAGRAM_SIZE:
            break
        chunks.append(chunk)
    return chunks


def attack_datagrams(pattern: str) -> Iterator[tuple[int, bool, list[bytes]]]:
    """(seq, more, chunks) of the pattern, biggest possible within the protocol's rules."""
    from udpchat.messages import MAX_MESSAGE_SIZE

    start = 0
    if pattern.startswith("reassembly"):
        size = largest_chunk(True)
        count = (MAX_MESSAGE_SIZE - 1) // size
        for seq in range(count):
            yield seq, True, [bytes([seq % 256]) * size]
        start = count
    bulk = largest_chunk(False)
    for seq in range(start + 1, start + wire.WINDOW):
        if pattern.endswith("bulk"):
            yield seq, False, [bytes([seq % 256]) * bulk]
        else:
            yield seq, False, tiny_chunks(seq)


class Attacker:
    def __init__(self, port: int, sessions: int) -> None:
        self.relay = (LOCALHOST, port)
        self.selector = selectors.DefaultSelector()
        count = (sessions + SESSIONS_PER_SOCKET - 1) // SESSIONS_PER_SOCKET
        self.socks = open_member_sockets(count, self.selector)
        self.sessions = [Session(i, i // SESSIONS_PER_SOCKET) for i in range(sessions)]
        self.by_nonce = {s.nonce: s for s in self.sessions}
        self.by_token: dict[bytes, Session] = {}
        self.answered: dict[int, float] = {}  # session index -> time of the relay's last datagram
        self.sent = {"handshake": 0, "ack": 0, "attack": 0}
        self.datagrams_sent = 0
        self.keepalive = True
        self.ack_due: dict[int, float] = {}  # session index -> when to acknowledge
        self.next_keepalive = 0.0
        self.rng = random.Random(1)
        self.progress: Callable[[str], None] | None = None
        self.next_progress = 0.0

    def send(self, session: Session, data: bytes, kind: str) -> None:
        with contextlib.suppress(OSError):
            self.socks[session.sock].sendto(data, self.relay)
        self.sent[kind] += len(data)
        self.datagrams_sent += 1
        session.keepalive_at = time.monotonic() + KEEPALIVE_S * self.rng.uniform(0.5, 1.0)

    def seal(self, session: Session, kind: wire.DatagramType, fields: bytes) -> bytes:
        """A session datagram of ``session``, sealed with a packet number of its own."""
        assert session.cipher is not None and session.token is not None
        return session.cipher.seal(kind, session.token, session.take_pn(), fields)

    def send_ack(self, session: Session) -> None:
        ack, bits = session.ack_fields()
        fields = session_bytes.ack_fields(ack, bits)
        ack_datagram = self.seal(session, wire.DatagramType.ACK, fields)
        self.send(session, ack_datagram, "ack")

    def on_session(self, envelope: wire.Protected) -> None:
        """Open a session datagram from the relay; note a DATA's seq, to acknowledge it."""
        session = self.by_token.get(envelope.token)
        if session is None or session.cipher is None:
            return
        try:
            datagram = wire.decode_session(envelope, session.cipher.open(envelope))
        except (SealError, wire.DecodeError):
            return
        self.answered[session.index] = time.monotonic()
        if isinstance(datagram, wire.Data):
            session.on_data(datagram.seq)
            due = time.monotonic() + ACK_DELAY_S * self.rng.uniform(1.0, 2.0)
            self.ack_due.setdefault(session.index, due)
        elif isinstance(datagram, wire.PathChallenge):
            response = self.seal(
                session, wire.DatagramType.PATH_RESPONSE, wire.path_fields(datagram.data)
            )
            self.send(session, response, "ack")

    def poll(self, wait: float) -> None:
        """Take in what the relay sent, acknowledge its DATA, keep quiet sessions alive."""
        for key, _ in self.selector.select(wait):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            for _ in range(1024):
                try:
                    data = sock.recv(65535)
                except (BlockingIOError, InterruptedError):
                    break
                try:
                    datagram = wire.decode_datagram(data)
                except wire.DecodeError:
                    continue
                if isinstance(datagram, wire.Protected):
                    self.on_session(datagram)
                elif isinstance(datagram, wire.Challenge):
                    session = self.by_nonce.get(datagram.nonce)
                    if session is not None and session.joiner is not None:
                        self.send(session, session.joiner.join_for(datagram), "handshake")
                elif isinstance(datagram, wire.Accept):
                    session = self.by_nonce.get(datagram.nonce)
                    if session is None or session.joiner is None:
                        continue
                    accepted = session.joiner.keys_for(datagram)
                    if accepted is None:
                        continue  # answers none of our JOINs: not from the relay we asked
                    keys = accepted[1]
                    session.cipher = SessionCipher(keys.send, keys.receive, keys.padded)
                    session.token = datagram.token
                    session.joiner = None  # the handshake's state is no longer needed
                    self.by_token[datagram.token] = session
        now = time.monotonic()
        for index, due in list(self.ack_due.items()):
            if due <= now:
                del self.ack_due[index]
                self.send_ack(self.sessions[index])
        if self.keepalive and now >= self.next_keepalive:
            self.next_keepalive = now + KEEPALIVE_CHECK_S
            for session in self.sessions:
                if session.token is not None and now >= session.keepalive_at:
                    self.send_ack(session)

    def join_all(self, deadline: float) -> int:
        pending = list(reversed(self.sessions))
        waiting: dict[int, float] = {}  # index -> next HELLO
        while time.monotonic() < deadline:
            now = time.monotonic()
            for index in [i for i in waiting if self.sessions[i].token is not None]:
                del waiting[index]
            while pending and len(waiting) < JOIN_WAVE:
                session = pending.pop()
                waiting[session.index] = 0.0
            if not waiting and not pending:
                break
            for index, retry in list(waiting.items()):
                if now >= retry:
                    session = self.sessions[index]
                    self.send(session, wire.encode_hello(session.nonce), "handshake")
                    waiting[index] = now + HANDSHAKE_RETRY_S
            self.poll(0.01)
            if self.progress is not None and time.monotonic() >= self.next_progress:
                self.next_progress = time.monotonic() + 2.0
                self.progress(f"joining: {len(self.by_token)} accepted")
        return len(self.by_token)

    def attack(self, pattern: str, deadline: float) -> None:
        datagrams = list(attack_datagrams(pattern))  # the same in every session
        queues = [(s, list(datagrams)) for s in self.sessions if s.token is not None]
        active: list[tuple[Session, list[tuple[int, bool, list[bytes]]], float]] = []
        while (queues or active) and time.monotonic() < deadline:
            while queues and len(active) < ATTACK_SESSIONS_AT_ONCE:
                session, plan = queues.pop()
                active.append((session, plan, 0.0))
            still = []
            for session, plan, sent_at in active:
                answered = self.answered.get(session.index, 0.0) >= sent_at
                if sent_at and not answered and time.monotonic() - sent_at < ANSWER_TIMEOUT_S:
                    still.append((session, plan, sent_at))
                    continue
                if not plan:
                    continue
                ack, bits = session.ack_fields()
                for seq, more, chunks in plan[:ATTACK_BLOCK]:
                    fields = session_bytes.data_fields(ack, bits, seq, int(more), chunks)
                    data = self.seal(session, wire.DatagramType.DATA, fields)
                    assert len(data) <= wire.MAX_DATAGRAM_SIZE, len(data)
                    self.send(session, data, "attack")
                del plan[:ATTACK_BLOCK]
                still.append((session, plan, time.monotonic()))
            active = still
            self.poll(0.001)
            if self.progress is not None and time.monotonic() >= self.next_progress:
                self.next_progress = time.monotonic() + 2.0
                self.progress(f"attack: {len(queues)} sessions to go")


def run(
    pattern: str, sessions: int, overrides: dict[str, Any], max_seconds: float, verbose: bool
) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + max_seconds
    relay = Relay(overrides, max_seconds + 30, verbose)

    def progress(text: str) -> None:
        status = relay.ask("status")
        print(
            f"{time.monotonic() - start:6.1f} s  {text}: {status['members']} members,"
            f" {status['rss_kib'] / 1024:.1f} MiB",
            file=sys.stderr,
            flush=True,
        )

    peak = 0
    result: dict[str, Any] = {
        "pattern": pattern,
        "sessions": sessions,
        "udpchat": relay.ready["udpchat"],
    }
    if relay.ready["ignored"]:
        result["ignored_relay_options"] = relay.ready["ignored"]
    try:
        time.sleep(0.5)
        result["rss_empty_kib"] = relay.rss_kib()
        attacker = Attacker(relay.port, sessions)
        if verbose:
            attacker.progress = progress
        result["joined"] = attacker.join_all(min(deadline, time.monotonic() + 60 + sessions / 10))
        settle = time.monotonic() + 2.0
        while time.monotonic() < settle:
            attacker.poll(0.05)
        result["rss_joined_kib"] = relay.rss_kib()
        result["members_joined"] = relay.ask("status")["members"]
        sent_before = attacker.datagrams_sent
        received_before = relay.ask("status")["datagrams_received"]
        attack_started = time.monotonic()
        attacker.attack(pattern, deadline)
        result["attack_s"] = round(time.monotonic() - attack_started, 1)
        settle = time.monotonic() + 2.0
        while time.monotonic() < settle:
            attacker.poll(0.05)
            peak = max(peak, relay.rss_kib())
        held = relay.ask("status")
        result["rss_held_kib"] = held["rss_kib"]
        result["budget_used"] = held["budget_used"]
        result["members_held"] = held["members"]
        result["relay_missed_datagrams"] = (attacker.datagrams_sent - sent_before) - (
            held["datagrams_received"] - received_before
        )
        # Fall silent: the relay times every session out.
        attacker.keepalive = False
        timeout = float(overrides.get("timeout", 10.0))
        until = time.monotonic() + timeout + 10
        while time.monotonic() < until:
            drain_until = time.monotonic() + 0.25
            while time.monotonic() < drain_until:
                for key, _ in attacker.selector.select(0.05):
                    with contextlib.suppress(OSError):
                        while True:
                            key.fileobj.recv(65535)  # type: ignore[union-attr]
            peak = max(peak, relay.rss_kib())
            if relay.ask("status")["members"] == 0:
                break
        time.sleep(2.0)
        after = relay.ask("status")
        result["members_after"] = after["members"]
        result["rss_after_kib"] = after["rss_kib"]
        trimmed = relay.ask("trim")
        result["rss_after_trim_kib"] = trimmed["rss_kib"]
        result["trim_ms"] = trimmed["took_ms"]
        result["rss_peak_kib"] = max(peak, result["rss_held_kib"])
        result["bytes_sent"] = dict(attacker.sent, total=sum(attacker.sent.values()))
        result["seconds"] = round(time.monotonic() - start, 1)
    finally:
        relay.close()
    return result


def describe(r: dict[str, Any]) -> str:
    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f} MiB"

    sent = r["bytes_sent"]
    grown = (r["rss_held_kib"] - r["rss_joined_kib"]) * 1024
    lines = [
        f"pattern {r['pattern']}: {r['joined']}/{r['sessions']} sessions joined ({r['udpchat']})",
        f"  relay RSS: empty {mib(r['rss_empty_kib'])}, joined {mib(r['rss_joined_kib'])},"
        f" holding {mib(r['rss_held_kib'])}, peak {mib(r['rss_peak_kib'])},"
        f" after the sessions ended {mib(r['rss_after_kib'])} ({r['members_after']} members),"
        f" after gc + malloc_trim {mib(r['rss_after_trim_kib'])} ({r['trim_ms']} ms)",
        f"  sent: {sent['attack'] / 1e6:.2f} MB of attack DATA, {sent['handshake'] / 1e6:.2f} MB"
        f" of handshakes, {sent['ack'] / 1e6:.2f} MB of ACKs; relay missed about"
        f" {r['relay_missed_datagrams']} datagrams; attack took {r['attack_s']} s",
        f"  held per session: {grown / max(r['joined'], 1) / 1024:.1f} KiB of RSS for"
        f" {sent['attack'] / max(r['joined'], 1) / 1024:.1f} KiB of attack DATA"
        f" ({grown / max(sent['attack'], 1):.1f}x); receive budget used: {r['budget_used']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    relay = sub.add_parser("relay", help="(internal) the relay process")
    relay.add_argument("--config", required=True)
    relay.add_argument("--lifetime", type=float, required=True)
    relay.add_argument("--verbose", action="store_true")
    parser.add_argument("--sessions", type=int, default=MAX_SESSIONS)
    parser.add_argument("--pattern", choices=[*PATTERNS, "all"], default="all")
    parser.add_argument(
        "--relay-option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a RelayConfig field for the relay, e.g. timeout=4.0 (repeatable)",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound per pattern")
    parser.add_argument("--json", action="store_true", help="also print results as JSON lines")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    ns = parser.parse_args()
    if ns.role == "relay":
        return relay_main(json.loads(ns.config), ns.lifetime, ns.verbose)
    if not 1 <= ns.sessions <= MAX_SESSIONS:
        parser.error(f"--sessions must be between 1 and {MAX_SESSIONS}")
    overrides = dict(RELAY_OVERRIDES)
    for option in ns.relay_option:
        name, _, value = option.partition("=")
        overrides[name] = json.loads(value)
    for pattern in PATTERNS if ns.pattern == "all" else (ns.pattern,):
        result = run(pattern, ns.sessions, overrides, ns.max_seconds, ns.verbose)
        print(describe(result), flush=True)
        if ns.json:
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
