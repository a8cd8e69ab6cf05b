"""Load benchmark: what one relay costs with hundreds or thousands of members.

Three processes on 127.0.0.1:

* the **relay**: a ``RelayServer`` in a worker of its own (``python -m udpchat_bench.load
  relay``), built with a handshake limit high enough for one IP to bring in every member (the
  ``udpchat relay`` command has no option for that); optionally under cProfile;
* the **load generator** (``... load members``): N simulated members sharing a few sockets
  (the relay tells sessions apart by token, not address). Each is a ``BareClient``: a real
  handshake, then a ``Link`` that acknowledges what it receives; it sends a heartbeat each
  heartbeat interval (staggered over the second), a PING or a bare ACK as a client would
  (protocol.md 7.1: with the defaults, every other one is a PING) and, on request, a light
  chat load round robin;
* this process, the **harness**: it reads the relay's CPU time (``/proc/<pid>/stat``, utime +
  stime) and resident memory (``/proc/<pid>/status``, VmRSS), and times the join of one more
  member (HELLO sent to WELCOME received) under that load with a bare client of its own.

Per member count the run is: relay up (memory at 0 members), members join, settle (memory at
N members), an idle window (CPU with heartbeats only), join probes, a chat window (CPU and
fan-out deliveries per second as counted by the members). Figures are reported, never
asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import heapq
import json
import math
import os
import pstats
import queue
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from udpchat import messages as m
from udpchat import wire
from udpchat.client.config import RELAY_SILENCE
from udpchat.client.uplink import ask_after, silence_for, wants_answer
from udpchat.endpoint import Address
from udpchat.memory import settle_heap
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import SOCKET_BUFFER, RelayOptions, RelayServer
from udpchat.stores import MEMORY, SQLITE, StoreError, parse_store
from udpchat.transport import kernel_drops
from udpchat_bench.bareclient import BareClient
from udpchat_bench.floor import bare_loop
from udpchat_bench.harness import worker_env
from udpchat_bench.load_stages import Stages, enable_stamps, receive_stamped, stamp_handshakes
from udpchat_bench.worker import emit

LOCALHOST = "127.0.0.1"
MEMBERS_PER_SOCKET = 50
JOIN_WAVE = 50  # handshakes in flight at once while members join
# Datagrams handled between two looks for joiners' answers, and at most per step (see
# LoadGenerator.step).
JOINER_CHECK = 64
STEP_DATAGRAMS = 1024
HANDSHAKE_RETRY_S = 0.5
SETTLE_S = 2.0
STOP_TIMEOUT_S = 10.0
CHAT_TEXT = "load test chat line, about as long as a short sentence"
FLOOR_MIN_S = 1.5  # the bare loop's shortest run (udpchat_bench.floor counts its middle)


@dataclass(frozen=True)
class LoadResult:
    """One member count's figures. CPU is in % of one core; memory in bytes."""

    members: int
    joined: int
    join_phase_s: float
    window_s: float
    relay_cpu_idle_pct: float
    relay_cpu_chat_pct: float
    relay_rss_empty_kib: int
    relay_rss_kib: int
    relay_bytes_per_member: float
    chat_rate: float
    deliveries_per_s: float
    join_ms_median: float
    join_ms: tuple[float, ...]
    generator_cpu_pct: float
    # Datagrams the kernel dropped while members joined: full receive buffers (-1: unknown).
    relay_drops: int = -1
    member_drops: int = -1
    # Every member's join (first HELLO to WELCOME) while the room filled, in ms.
    members_join_ms_p50: float = math.nan
    members_join_ms_max: float = math.nan
    join_rate: float = 0.0  # members started a second (0: JOIN_WAVE in flight at a time)
    # As many heartbeats (``members`` a heartbeat interval, every other one answered) served
    # by a bare Python socket loop right after the relay, % of a core of its thread: what a
    # loop that wakes for each datagram costs on the machine then (``udpchat_bench.floor``).
    floor_cpu_pct: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["join_ms"] = list(self.join_ms)
        return data


# --- /proc ----------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid``, all threads, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- the relay worker -------------------------------------------------------------------------


def relay_main(params: Mapping[str, Any]) -> int:
    """Serve until told ``stop`` on stdin (or the lifetime runs out)."""
    members = int(params["members"])
    config = RelayConfig(
        handshake_burst=members + 200,
        handshake_rate=max(1000.0, float(members)),
        max_members=max(1024, members + 64),
        max_members_per_host=max(1024, members + 64),  # every member is on this machine
        max_members_per_network=max(1024, members + 64),
        heartbeat=float(params.get("heartbeat", 1.0)),
    )
    baseline = bool(params.get("baseline", False))
    if baseline:  # the relay without its join-storm defences (udpchat_bench.storm)
        config = replace(config, admission_burst=1_000_000, admission_rate=1e9)
    server = RelayServer(
        RelayOptions(
            host=LOCALHOST,
            port=0,
            config=config,
            socket_buffer=0 if baseline else int(params.get("socket_buffer", SOCKET_BUFFER)),
            store=parse_store(str(params.get("store", MEMORY)), params.get("room")),
        )
    )
    if baseline:
        server._driver._inbox.is_urgent = None
    stop = threading.Event()
    commands: queue.Queue[str] = queue.Queue()
    _watch_stdin(stop, float(params.get("max_lifetime_s", 600.0)), commands)

    def stopper() -> None:
        stop.wait()
        server.stop(goodbye=False)

    threading.Thread(target=stopper, name="stopper", daemon=True).start()
    profile_path = params.get("profile")
    # CPU of the serving thread, not the wall clock: its waits are not work
    profiler = cProfile.Profile(time.thread_time) if profile_path else None
    waits_ms = stamp_handshakes(server) if params.get("stamps") else []
    _serve_commands(server, profiler, commands)
    settle_heap()  # as the udpchat relay command does once its relay has started
    emit("ready", port=server.address[1], pid=os.getpid())
    server.serve_forever()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile_path))
    stats = server.stats
    emit(
        "result",
        deliveries=stats.deliveries,
        datagrams_received=stats.datagrams_received,
        waits_ms=waits_ms,
        handled_ms=getattr(server, "_handled_ms", []),
    )
    return 0


def _serve_commands(
    server: RelayServer, profiler: cProfile.Profile | None, commands: queue.Queue[str]
) -> None:
    """Answer ``drops`` (the kernel's count for the relay's socket) from a thread of its
    own, and with a profiler let ``profile on`` / ``profile off`` reach the serving thread.

    cProfile only sees the thread that enables it, so those two are taken inside the serving
    loop: each wait for a datagram first looks for a pending one.
    """
    switches: queue.Queue[str] = queue.Queue()

    def answer() -> None:
        while True:
            command = commands.get()
            if command == "drops":
                stats = server.stats
                emit(
                    "drops",
                    drops=server.kernel_drops() or 0,
                    datagrams=stats.datagrams_received + stats.datagrams_sent,
                )
            else:
                switches.put(command)

    threading.Thread(target=answer, name="commands", daemon=True).start()
    if profiler is None:
        return
    transport = server._transport  # the benchmark's own relay; no other way into its loop
    receive = transport.recvfrom

    def recvfrom(timeout: float | None) -> tuple[bytes, Address] | None:
        while not switches.empty():
            command = switches.get_nowait()
            if command == "profile on":
                profiler.enable()
            elif command == "profile off":
                profiler.disable()
        return receive(min(timeout, 0.05) if timeout is not None else 0.05)

    transport.recvfrom = recvfrom  # type: ignore[method-assign]


def _watch_stdin(
    stop: threading.Event, lifetime: float, commands: queue.Queue[str] | None = None
) -> None:
    def read() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            if commands is not None and command:
                commands.put(command)
        stop.set()

    threading.Thread(target=read, name="stdin", daemon=True).start()
    expiry = threading.Timer(lifetime, stop.set)
    expiry.daemon = True
    expiry.start()

    def expire() -> None:
        emit("error", error="lifetime exceeded")
        os._exit(3)

    watchdog = threading.Timer(lifetime + 10.0, expire)
    watchdog.daemon = True
    watchdog.start()


# --- the load generator -----------------------------------------------------------------------


class _Member(BareClient):
    """One simulated member: a bare client, where it sits, and when it next needs a turn."""

    __slots__ = (
        "index", "join_s", "last_heard", "next_beat", "scheduled", "sock", "stages", "started",
        "welcomed",
    )

    def __init__(self, index: int, sock: int, nonce: bytes) -> None:
        super().__init__(f"m{index}", nonce, os.urandom, retry_s=HANDSHAKE_RETRY_S)
        self.index = index
        self.sock = sock
        self.welcomed = False
        self.started = 0.0  # its first HELLO
        self.join_s = math.nan  # from its first HELLO to its WELCOME
        self.next_beat = math.inf
        self.last_heard = -math.inf  # when the relay last sent this member's session anything
        self.scheduled = math.inf
        self.stages: Stages | None = None  # with stamps: its handshake's stages


def open_member_sockets(count: int, selector: selectors.BaseSelector) -> list[socket.socket]:
    """``count`` (at least one) non-blocking UDP sockets on loopback with large receive
    buffers, each registered with ``selector`` under its index: many simulated members
    share each one."""
    socks: list[socket.socket] = []
    for i in range(max(1, count)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((LOCALHOST, 0))
        sock.setblocking(False)
        socks.append(sock)
        selector.register(sock, selectors.EVENT_READ, i)
    return socks


class LoadGenerator:
    """N members on a few sockets, driven by one thread with a timer heap (no polling)."""

    def __init__(
        self, relay: Address, count: int, heartbeat: float, chat_rate: float, stamps: bool = False
    ) -> None:
        self.relay = relay
        self.stamps = stamps
        self.heartbeat = heartbeat
        # as a client with one relay and the default silence, on a loopback round trip
        # measured at its handshake
        self.ask_after = ask_after(heartbeat, silence_for(RELAY_SILENCE, heartbeat))
        self.chat_rate = chat_rate
        self.selector = selectors.DefaultSelector()
        self.socks = open_member_sockets(math.ceil(count / MEMBERS_PER_SOCKET), self.selector)
        self.members = [
            _Member(i, i // MEMBERS_PER_SOCKET, os.urandom(wire.HANDSHAKE_NONCE_SIZE))
            for i in range(count)
        ]
        self.by_nonce = {mb.nonce: mb for mb in self.members}
        self.by_token: dict[bytes, _Member] = {}
        self.timers: list[tuple[float, int, int]] = []  # (deadline, order, member index)
        self.order = 0
        self.dirty: set[int] = set()
        self.deliveries = 0
        self.posted = 0
        self.refused = 0
        self.rejects = 0
        self.welcomed = 0
        self.chatting = False
        self.next_chat = math.inf
        self.chat_cursor = 0
        # Datagrams read and not yet handled (joiners' are handled as soon as read).
        self.later: deque[tuple[wire.Datagram, float]] = deque()
        if stamps:
            for sock in self.socks:
                enable_stamps(sock)
            for member in self.members:
                member.stages = Stages()

    # sending

    def _send(self, member: _Member, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.socks[member.sock].sendto(data, self.relay)

    def _schedule(self, member: _Member, deadline: float) -> None:
        if deadline < member.scheduled:
            member.scheduled = deadline
            self.order += 1
            heapq.heappush(self.timers, (deadline, self.order, member.index))

    def _flush(self, now: float) -> None:
        for index in self.dirty:
            member = self.members[index]
            out = member.take_datagrams(now)
            for data in out:
                self._send(member, data)
            stages = member.stages
            challenged = stages is not None and not math.isnan(stages.challenge_read)
            if out and stages is not None and challenged and member.link is None:
                stages.note("join_sent", time.time())
            timer = member.next_timer()
            if timer is not None:
                self._schedule(member, max(timer, now))
        self.dirty.clear()

    # handshakes

    def start_handshake(self, member: _Member, now: float) -> None:
        for data in member.take_datagrams(now):  # the HELLO; its retry timer starts
            self._send(member, data)
        if member.stages is not None:
            member.stages.note("hello_sent", time.time())
        member.joiner.prepare()  # the JOIN's ephemeral key, while the HELLO is on its way
        timer = member.next_timer()
        if timer is not None:
            self._schedule(member, timer)

    # receiving

    def joining(self, datagram: wire.Datagram) -> bool:
        """Whether ``datagram`` is for a member still joining (its handshake, its WELCOME)."""
        if isinstance(datagram, wire.Protected):
            member = self.by_token.get(datagram.token)
            return member is not None and not member.welcomed
        return True

    def on_message(self, member: _Member, raw: bytes, now: float, arrived: float) -> None:
        """One message a member's link delivered: counted, and a WELCOME starts its beat."""
        kind = raw[1] if len(raw) > 1 else -1
        if kind == m.MessageKind.MESSAGE:
            self.deliveries += 1
        elif kind == m.MessageKind.POSTED:
            self.posted += 1
        elif kind == m.MessageKind.REFUSED:
            self.refused += 1
        elif kind == m.MessageKind.WELCOME and not member.welcomed:
            if member.stages is not None:
                member.stages.note("welcome_arrived", arrived)
                member.stages.note("welcome_read", time.time())
            member.welcomed = True
            member.join_s = now - member.started
            self.welcomed += 1
            offset = (member.index / max(len(self.members), 1)) * self.heartbeat
            member.next_beat = now + self.heartbeat + offset
            self._schedule(member, member.next_beat)

    def receive(self, datagram: wire.Datagram, now: float, arrived: float = math.nan) -> None:
        if isinstance(datagram, wire.Protected):
            member = self.by_token.get(datagram.token)
            if member is None:
                return
            member.last_heard = now
            for raw in member.receive(datagram, now):
                self.on_message(member, raw, now, arrived)
            self.dirty.add(member.index)
        elif isinstance(datagram, (wire.Challenge, wire.Accept, wire.Busy)):
            member = self.by_nonce.get(datagram.nonce)
            if member is not None and member.link is None:
                if member.stages is not None and not isinstance(datagram, wire.Busy):
                    stage = "challenge" if isinstance(datagram, wire.Challenge) else "accept"
                    member.stages.note(f"{stage}_arrived", arrived)
                    member.stages.note(f"{stage}_read", time.time())
                member.receive(datagram, now)
                if member.link is not None:
                    self.by_token[member.link.token] = member
                self.dirty.add(member.index)
        elif isinstance(datagram, wire.Reject):
            self.rejects += 1

    def _drain(
        self, key: selectors.SelectorKey, into: list[tuple[wire.Datagram, float]]
    ) -> None:
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        stamps = self.stamps
        for _ in range(512):
            arrived = math.nan
            try:
                if stamps:
                    data, _, arrived = receive_stamped(sock, 65535)
                else:
                    data, _ = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with contextlib.suppress(wire.DecodeError):
                into.append((wire.decode_datagram(data), arrived))

    def _joiners_first(
        self,
        read: list[tuple[wire.Datagram, float]],
        later: deque[tuple[wire.Datagram, float]],
    ) -> None:
        """Handle joiners' datagrams in ``read`` now and send their answers; queue the rest
        in ``later``. A real member is a process of its own and does not wait for a thousand
        others' fan-out before it reads its CHALLENGE or WELCOME."""
        now = time.monotonic()
        joined = False
        for datagram, arrived in read:
            if self.joining(datagram):
                self.receive(datagram, now, arrived)
                joined = True
            else:
                later.append((datagram, arrived))
        if joined:
            self._flush(now)

    # timers

    def _on_timer(self, member: _Member, now: float) -> None:
        member.handle_timer(now)  # a handshake due again goes out at the next flush
        link = member.link
        if link is not None and member.welcomed:
            if now >= member.next_beat:  # the heartbeat; protocol.md 7.1
                srtt, heard = link.rtt.srtt, member.last_heard
                if wants_answer(now, self.heartbeat, srtt, heard, self.ask_after):
                    link.ping()
                else:
                    link.acknowledge_now()
                member.next_beat = now + self.heartbeat
            self._schedule(member, member.next_beat)
        self.dirty.add(member.index)

    def _run_timers(self, now: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            deadline, _, index = heapq.heappop(timers)
            member = self.members[index]
            if member.scheduled != deadline:
                continue
            member.scheduled = math.inf
            self._on_timer(member, now)

    def _chat(self, now: float) -> None:
        if not self.chatting or now < self.next_chat:
            return
        count = len(self.members)
        for _ in range(count):
            member = self.members[self.chat_cursor % count]
            self.chat_cursor += 1
            if member.welcomed and member.link is not None:
                with contextlib.suppress(Exception):
                    member.link.send(m.encode_message(m.Say(CHAT_TEXT)))
                    self.dirty.add(member.index)
                break
        self.next_chat = max(self.next_chat + 1.0 / self.chat_rate, now - 1.0)

    def step(self, now: float, max_wait: float) -> None:
        deadlines = [now + max_wait]
        if self.timers:
            deadlines.append(self.timers[0][0])
        if self.chatting:
            deadlines.append(self.next_chat)
        later = self.later
        wait = 0.0 if later else max(0.0, min(deadlines) - now)
        read: list[tuple[wire.Datagram, float]] = []
        for key, _ in self.selector.select(wait):
            self._drain(key, read)
        # Joiners' datagrams first: a real member is a process of its own and does not
        # wait for a thousand others' fan-out before it reads its CHALLENGE or WELCOME.
        self._joiners_first(read, later)
        # At most STEP_DATAGRAMS of the others per step, so that timers (heartbeats,
        # retransmissions) and the flush (ACKs) are never starved; what is left waits in
        # ``later`` for the next step, which does not sleep.
        for _ in range(STEP_DATAGRAMS // JOINER_CHECK):
            if not later:
                break
            now = time.monotonic()
            for _ in range(min(JOINER_CHECK, len(later))):
                datagram, arrived = later.popleft()
                self.receive(datagram, now, arrived)
            if later:  # a joiner's answer that came meanwhile does not wait for the rest
                read = []
                for key in list(self.selector.get_map().values()):
                    self._drain(key, read)
                self._joiners_first(read, later)
        now = time.monotonic()
        self._run_timers(now)
        self._chat(now)
        self._flush(now)

    def join_all(self, deadline: float, rate: float = 0.0) -> None:
        """Every member joins: ``JOIN_WAVE`` handshakes in flight at once, or with ``rate``
        one new member every 1/rate seconds, however many are in flight."""
        pending = list(reversed(self.members))
        in_flight: list[_Member] = []
        start = time.monotonic()
        started = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            in_flight = [mb for mb in in_flight if not mb.welcomed]
            while pending and (
                start + started / rate <= now if rate > 0 else len(in_flight) < JOIN_WAVE
            ):
                member = pending.pop()
                in_flight.append(member)
                member.started = now
                self.start_handshake(member, now)
                started += 1
            if not pending and not in_flight:
                return
            wait = 0.05 if rate <= 0 or not pending else max(0.0, start + started / rate - now)
            self.step(now, min(wait, 0.05))
        raise RuntimeError(f"only {self.welcomed} of {len(self.members)} members joined in time")

    def set_chat(self, on: bool) -> None:
        self.chatting = on and self.chat_rate > 0
        self.next_chat = time.monotonic() if self.chatting else math.inf

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()


def members_main(params: Mapping[str, Any]) -> int:
    stop = threading.Event()
    commands: queue.Queue[str] = queue.Queue()
    _watch_stdin(stop, float(params.get("max_lifetime_s", 600.0)), commands)
    count = int(params["members"])
    generator = LoadGenerator(
        (LOCALHOST, int(params["port"])),
        count,
        float(params.get("heartbeat", 1.0)),
        float(params.get("chat_rate", 0.0)),
        bool(params.get("stamps", False)),
    )
    start = time.monotonic()
    try:
        generator.join_all(
            start + float(params.get("join_timeout_s", 120.0)), float(params.get("join_rate", 0))
        )
        emit(
            "joined",
            members=generator.welcomed,
            seconds=time.monotonic() - start,
            join_ms=[1000 * mb.join_s for mb in generator.members if mb.welcomed],
            drops=sum(kernel_drops(sock) or 0 for sock in generator.socks),
            stages=[
                mb.stages.spans_ms()
                for mb in generator.members
                if mb.stages is not None and mb.welcomed
            ],
        )
        while not stop.is_set():
            generator.step(time.monotonic(), 0.05)
            while not commands.empty():
                command = commands.get_nowait()
                if command == "chat":
                    generator.set_chat(True)
                elif command == "idle":
                    generator.set_chat(False)
                elif command.startswith("mark "):
                    emit(
                        "mark",
                        name=command.split(" ", 1)[1],
                        deliveries=generator.deliveries,
                        posted=generator.posted,
                        refused=generator.refused,
                        time=time.monotonic(),
                    )
    finally:
        generator.close()
    emit("result", deliveries=generator.deliveries, rejects=generator.rejects)
    return 0


# --- the harness ------------------------------------------------------------------------------


class _Proc:
    """A worker subprocess; its stdout lines become events."""

    def __init__(
        self, role: str, params: Mapping[str, Any], module: str = "udpchat_bench.load"
    ) -> None:
        self._stderr: IO[bytes] = open(os.devnull, "wb")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                role,
                "--json-args",
                json.dumps(params),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=worker_env(),
            text=True,
        )
        self.role = role
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.put(event)
        self.events.put(None)

    def wait(self, kind: str, timeout: float, name: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.role}: no '{kind}' within {timeout:.0f} s") from None
            if event is None:
                raise RuntimeError(f"{self.role}: exited before '{kind}'")
            if event.get("event") == "error":
                raise RuntimeError(f"{self.role}: {event.get('error')}")
            if event.get("event") == kind and (name is None or event.get("name") == name):
                return event

    def tell(self, command: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()

    def reap(self) -> None:
        self.tell("stop")
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self._stderr.close()


def probe_join(relay: Address, nick: str, timeout: float = 5.0) -> float:
    """Seconds from HELLO sent to WELCOME received for one more member; it then quits.

    Like a real client it sends a handshake datagram again when no answer came (a datagram
    lost to a full buffer) and waits as long as a BUSY asks: the time it reports is then the
    time that join took, retries included."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        nonce = os.urandom(wire.HANDSHAKE_NONCE_SIZE)
        client = BareClient(nick, nonce, os.urandom)
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        welcomed: float | None = None
        while welcomed is None:
            for data in client.take_datagrams(time.monotonic()):
                sock.sendto(data, relay)
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"join probe: the relay did not welcome one more member within {timeout:g} s"
                )
            timer = client.next_timer()
            wait_until = deadline if timer is None else min(deadline, timer)
            datagram = _recv_datagram(sock, wait_until)
            if isinstance(datagram, wire.Reject):
                raise RuntimeError(f"join probe refused: {datagram.reason}")
            if isinstance(datagram, (wire.Challenge, wire.Accept)) and (
                datagram.nonce != client.nonce
            ):
                continue
            if datagram is not None:
                for raw in client.receive(datagram, time.monotonic()):
                    if isinstance(m.decode_message(raw), m.Welcome):
                        welcomed = time.perf_counter() - start
        leave_probe(client, sock, relay)
        return welcomed


def leave_probe(client: BareClient, sock: socket.socket, relay: Address) -> None:
    """Leave, so a probe does not stay a member: QUIT, acknowledged within a second."""
    link = client.link
    assert link is not None
    link.send(m.encode_message(m.Quit("probe done")))
    deadline = time.monotonic() + 1.0
    while not link.idle and time.monotonic() < deadline:
        for data in client.take_datagrams(time.monotonic()):
            sock.sendto(data, relay)
        datagram = _recv_datagram(sock, min(deadline, time.monotonic() + 0.01))
        if isinstance(datagram, wire.Reset):
            break
        if datagram is not None:
            client.receive(datagram, time.monotonic())


def _recv_datagram(sock: socket.socket, deadline: float) -> wire.Datagram | None:
    """The next datagram that decodes, or None once ``deadline`` passed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            continue
        with contextlib.suppress(wire.DecodeError):
            return wire.decode_datagram(data)


def run_one(
    members: int,
    chat_rate: float,
    duration: float,
    join_probes: int = 7,
    heartbeat: float = 1.0,
    profile: str | None = None,
    progress: Callable[[str], None] | None = None,
    join_rate: float = 0.0,
    baseline: bool = False,
    socket_buffer: int = SOCKET_BUFFER,
    store: str = MEMORY,
) -> LoadResult:
    """Measure one member count with a fresh relay (and a fresh room in ``store``)."""
    say = progress or (lambda _: None)
    lifetime = 120.0 + 3 * duration + members / 5
    scratch = tempfile.TemporaryDirectory(prefix="udpchat-load-")
    url, room = fresh_room(store, members, Path(scratch.name))
    relay = _Proc(
        "relay",
        {
            "members": members,
            "heartbeat": heartbeat,
            "profile": profile,
            "max_lifetime_s": lifetime,
            "baseline": baseline,
            "socket_buffer": socket_buffer,
            "store": url,
            "room": room,
        },
    )
    generator: _Proc | None = None
    try:
        ready = relay.wait("ready", 30)
        pid, port = int(ready["pid"]), int(ready["port"])
        time.sleep(0.5)
        rss_empty = proc_rss_kib(pid)
        say(f"{members} members: joining")
        generator = _Proc(
            "members",
            {
                "members": members,
                "port": port,
                "heartbeat": heartbeat,
                "chat_rate": chat_rate,
                "max_lifetime_s": lifetime,
                "join_timeout_s": 60.0 + members / 10 + (members / join_rate if join_rate else 0),
                "join_rate": join_rate,
            },
        )
        gen_pid = generator.proc.pid
        joined = generator.wait("joined", 90.0 + members / 5)
        relay.tell("drops")
        relay_drops = int(relay.wait("drops", 10)["drops"])
        time.sleep(SETTLE_S)
        rss_full = proc_rss_kib(pid)

        say(f"{members} members: idle window of {duration:g} s")
        relay.tell("profile on")  # only the idle window is profiled
        cpu0, gen0, t0 = proc_cpu_s(pid), proc_cpu_s(gen_pid), time.monotonic()
        time.sleep(duration)
        cpu1, gen1, t1 = proc_cpu_s(pid), proc_cpu_s(gen_pid), time.monotonic()
        relay.tell("profile off")
        idle_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        gen_pct = 100 * (gen1 - gen0) / (t1 - t0)

        say(f"{members} members: {join_probes} join probes")
        samples = []
        for k in range(join_probes):
            samples.append(1000 * probe_join((LOCALHOST, port), f"probe{k}"))
            time.sleep(0.2)

        say(f"{members} members: chat window of {duration:g} s at {chat_rate:g} messages/s")
        generator.tell("chat")
        time.sleep(min(1.0, duration / 4))
        generator.tell("mark start")
        before = generator.wait("mark", 10, name="start")
        cpu2, t2 = proc_cpu_s(pid), time.monotonic()
        time.sleep(duration)
        generator.tell("mark end")
        after = generator.wait("mark", 10, name="end")
        cpu3, t3 = proc_cpu_s(pid), time.monotonic()
        generator.tell("idle")
        chat_pct = 100 * (cpu3 - cpu2) / (t3 - t2)
        deliveries = (after["deliveries"] - before["deliveries"]) / (after["time"] - before["time"])
    finally:
        if generator is not None:
            generator.reap()
        relay.reap()
        scratch.cleanup()
    floor_s = max(duration, FLOOR_MIN_S)
    say(f"{members} members: a bare loop on as many heartbeats, {floor_s:g} s")
    floor = bare_loop(
        members / heartbeat,
        floor_s,
        peers=math.ceil(members / MEMBERS_PER_SOCKET),  # as many sockets as the generator's
        answer_every=2,
    )
    return LoadResult(
        members=members,
        joined=int(joined["members"]),
        join_phase_s=round(float(joined["seconds"]), 3),
        window_s=duration,
        relay_cpu_idle_pct=round(idle_pct, 2),
        relay_cpu_chat_pct=round(chat_pct, 2),
        relay_rss_empty_kib=rss_empty,
        relay_rss_kib=rss_full,
        relay_bytes_per_member=round(1024 * (rss_full - rss_empty) / max(members, 1), 1),
        chat_rate=chat_rate,
        deliveries_per_s=round(deliveries, 1),
        join_ms_median=round(statistics.median(samples), 3),
        join_ms=tuple(round(s, 3) for s in samples),
        generator_cpu_pct=round(gen_pct, 2),
        relay_drops=relay_drops,
        member_drops=int(joined.get("drops", -1)),
        members_join_ms_p50=round(statistics.median(joined["join_ms"]), 2),
        members_join_ms_max=round(max(joined["join_ms"]), 2),
        join_rate=join_rate,
        floor_cpu_pct=round(floor.cpu_pct, 2),
    )


def store_error(store: str) -> str | None:
    """Why ``store`` cannot be the load benchmark's room store, or None: ``memory:``,
    ``sqlite:`` (a fresh file for each room size, in a temporary directory) or
    ``redis://HOST:PORT/DB`` (a fresh room for each size on that server)."""
    if store in (MEMORY, SQLITE):
        return None
    if store.startswith(("redis://", "rediss://")):
        try:
            parse_store(store, "load")
        except StoreError as error:
            return str(error)
        return None
    return f"--store: expected memory:, sqlite: or redis://HOST:PORT/DB, got {store!r}"


def fresh_room(store: str, members: int, scratch: Path) -> tuple[str, str | None]:
    """The store URL and room name of one measured relay: nothing left from an earlier run
    (a room that already had members would make it a rejoin, not a join)."""
    problem = store_error(store)
    if problem is not None:
        raise ValueError(problem)
    if store == SQLITE:
        return f"{SQLITE}{scratch / f'load-{members}.sqlite3'}", None
    if store == MEMORY:
        return MEMORY, None
    return store, f"load-{os.getpid()}-{members}-{int(time.time())}"


def run_load(
    members: Sequence[int] = (100, 500, 1000),
    chat_rate: float = 2.0,
    duration: float = 10.0,
    join_probes: int = 7,
    heartbeat: float = 1.0,
    profile_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
    join_rate: float = 0.0,
    baseline: bool = False,
    socket_buffer: int = SOCKET_BUFFER,
    store: str = MEMORY,
) -> list[LoadResult]:
    """Run the load benchmark for each member count; one fresh relay per count.

    ``chat_rate`` is messages per second for the whole room during the chat window; each is
    fanned out to every other member. With ``profile_dir`` the relay runs under cProfile and
    leaves ``relay-<N>.prof`` there, covering the idle window only. ``store``: where the
    relay keeps its room (see ``store_error``).
    """
    problem = store_error(store)
    if problem is not None:
        raise ValueError(problem)
    if duration <= 0 or chat_rate < 0 or join_probes < 1 or heartbeat <= 0:
        raise ValueError("need duration > 0, chat_rate >= 0, join_probes >= 1, heartbeat > 0")
    results = []
    for count in members:
        if count < 1:
            raise ValueError("member counts must be positive")
        profile = None
        if profile_dir is not None:
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            profile = str(Path(profile_dir) / f"relay-{count}.prof")
        results.append(
            run_one(
                count,
                chat_rate,
                duration,
                join_probes,
                heartbeat,
                profile,
                progress,
                join_rate,
                baseline,
                socket_buffer,
                store,
            )
        )
    return results


def format_table(results: Sequence[LoadResult]) -> str:
    header = (
        f"{'members':>7} {'joined':>6} {'join phase s':>12} {'CPU idle %':>10} {'floor %':>7} "
        f"{'CPU chat %':>10} {'RSS MiB':>8} {'B/member':>9} {'deliv/s':>9} "
        f"{'join ms (median)':>16} {'gen CPU %':>9} {'drops relay/members':>19} "
        f"{'joins p50/max ms':>16}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.members:>7} {r.joined:>6} {r.join_phase_s:>12.1f} {r.relay_cpu_idle_pct:>10.2f} "
            f"{r.floor_cpu_pct:>7.2f} "
            f"{r.relay_cpu_chat_pct:>10.2f} {r.relay_rss_kib / 1024:>8.1f} "
            f"{r.relay_bytes_per_member:>9.0f} {r.deliveries_per_s:>9.1f} "
            f"{r.join_ms_median:>16.3f} {r.generator_cpu_pct:>9.1f} "
            f"{f'{r.relay_drops}/{r.member_drops}':>19} "
            f"{f'{r.members_join_ms_p50:.1f}/{r.members_join_ms_max:.0f}':>16}"
        )
    return "\n".join(lines)


def print_profile(path: str, limit: int = 25) -> None:
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udpchat_bench.load")
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("relay", "members"):
        worker = sub.add_parser(role)
        worker.add_argument("--json-args", required=True)
    run = sub.add_parser("run", help="run the benchmark and print a table")
    run.add_argument("--members", type=int, nargs="+", default=[100, 500, 1000])
    run.add_argument("--chat-rate", type=float, default=2.0)
    run.add_argument("--duration", type=float, default=10.0)
    run.add_argument("--join-probes", type=int, default=7)
    run.add_argument("--profile-dir", default=None)
    run.add_argument("--join-rate", type=float, default=0.0, help="members started a second")
    run.add_argument("--baseline", action="store_true", help="the relay without its defences")
    run.add_argument("--socket-buffer", type=int, default=SOCKET_BUFFER, help="relay's, bytes")
    run.add_argument("--store", default=MEMORY, help="memory:, sqlite: or redis://HOST:PORT/DB")
    run.add_argument("--json", action="store_true", help="print results as JSON lines")
    ns = parser.parse_args(argv)
    if ns.role == "relay":
        return relay_main(json.loads(ns.json_args))
    if ns.role == "members":
        return members_main(json.loads(ns.json_args))
    results = run_load(
        ns.members,
        ns.chat_rate,
        ns.duration,
        ns.join_probes,
        profile_dir=ns.profile_dir,
        join_rate=ns.join_rate,
        baseline=ns.baseline,
        socket_buffer=ns.socket_buffer,
        store=ns.store,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    if ns.json:
        for r in results:
            print(json.dumps(r.to_dict()))
    else:
        print(format_table(results))
    if ns.profile_dir:
        for r in results:
            print(f"\n--- relay profile, {r.members} members ---")
            print_profile(str(Path(ns.profile_dir) / f"relay-{r.members}.prof"))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # stdin and timer threads must not keep a finished worker alive
