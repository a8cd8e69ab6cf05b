"""Thread CPU a member spends per chat line it says and per fan-out DATA it receives.

In one process, sans I/O: a ``RelayCore`` and two members, a sender and a receiver, talk
through lists (no socket, no thread, no sleep but the ACK timer's wait in ``--shell``). Each
stage is timed with ``time.thread_time`` around exactly what the member does for it:

* ``say``: ``say()`` called until its DATA datagram is produced (sealed, ready to send);
* ``receive``: the fan-out DATA handed over until the ``MessageReceived`` is out;
* ``ack``: the receiver's delayed-ACK timer, when it has one: the wake-up that seals and
  sends the ACK (an ACK sent at once is part of ``receive``: compare receive + ack);
* ``posted``: the sender receiving the relay's POSTED until its own ``MessageReceived``.

Two layers: ``session`` (``ClientSession`` alone, as a one-loop bot host drives it: the call,
``next_timer``, ``datagrams_to_send``, ``events``) and ``shell`` (``ChatClient``'s real path
with a fake transport: ``Driver.call`` for ``say``; for what arrives, one turn of the driver's
loop as ``Driver._serve`` makes it: the timer read under the lock, ``_turn``, take, deliver
to the ``on_event`` callback). The relay's work and the transport are never timed.

Run it from two checkouts alternately to compare them (the machine is shared):

    PYTHONPATH=/path/to/checkout python bench/scripts/client_path_cost.py --rounds 3
    python bench/scripts/client_path_cost.py --profile shell --messages 2000

Output: median µs of thread CPU per operation, per round, and the median over rounds;
``--profile LAYER`` prints a cProfile (thread CPU clock, sorted by tottime) of the timed
sections of that layer instead. A diagnostic only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from udpchat import events as ev
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.transport import UdpTransport

RELAY: Address = ("127.0.0.1", 9)
SENDER: Address = ("127.0.0.1", 40001)
RECEIVER: Address = ("127.0.0.1", 40002)
TEXT = "x" * 100
RELAY_CONFIG = replace(RelayConfig(), flood_burst=10**9, flood_rate=1e9)

Stages = dict[str, list[float]]
# A timer due sooner than this after a fan-out DATA is its delayed ACK (the next other one,
# the heartbeat, is a second away).
ACK_WAIT = 0.01


class _Clock:
    """thread CPU spent in the timed sections, per stage (and a profile, if asked)."""

    def __init__(self, profile: cProfile.Profile | None, only: str | None = None) -> None:
        self.stages: Stages = {"say": [], "receive": [], "ack": [], "posted": []}
        self._profile = profile
        self._only = only  # the one stage profiled (None: all)

    def time(self, stage: str, action: Callable[[], Any]) -> Any:
        profile = self._profile if self._only in (None, stage) else None
        if profile is not None:
            profile.enable()
        start = time.thread_time()
        result = action()
        spent = time.thread_time() - start
        if profile is not None:
            profile.disable()
        self.stages[stage].append(spent * 1e6)
        return result


class _Relay:
    """The relay core, fed and drained outside every timed section."""

    def __init__(self, now: float) -> None:
        self.core = RelayCore(RELAY_CONFIG, now, random.Random(1).randbytes)

    def take(self, data: bytes, src: Address, now: float) -> list[tuple[bytes, Address]]:
        self.core.receive_datagram(data, src, now)
        return self.flush(now)

    def flush(self, now: float) -> list[tuple[bytes, Address]]:
        timer = self.core.next_timer()
        if timer is not None and timer <= now:
            self.core.handle_timer(now)
        return self.core.datagrams_to_send(now)


# --- the session alone, on a virtual clock -------------------------------------------------------


def session_round(messages: int, interval: float, clock: _Clock) -> None:
    now = 1000.0
    relay = _Relay(now)
    members = {
        address: ClientSession(
            ClientConfig(nick, RELAY, pace_rate=0.0), random.Random(seed).randbytes, now
        )
        for address, nick, seed in ((SENDER, "tx", 2), (RECEIVER, "rx", 3))
    }
    sender, receiver = members[SENDER], members[RECEIVER]

    def route(out: list[tuple[bytes, Address]], now: float, timed: bool) -> None:
        """Deliver the relay's output; time the members' part when ``timed``."""
        pending = deque(out)
        while pending:
            data, dst = pending.popleft()
            member = members[dst]
            stage = "receive" if dst == RECEIVER else "posted"
            if timed:
                replies = clock.time(stage, partial(_session_take, member, data, now))
            else:
                replies = _session_take(member, data, now)
            for reply, _ in replies:
                pending.extend(relay.take(reply, dst, now))

    for member in (sender, receiver):
        member.connect(now)
    for _ in range(200):  # the joins: bounded
        moved = False
        for address, member in members.items():
            for data, _ in member.datagrams_to_send(now):
                route(relay.take(data, address, now), now, False)
                moved = True
        if not moved and all(m.state is SessionState.JOINED for m in members.values()):
            break
        now += 0.001
        route(relay.flush(now), now, False)
        for member in members.values():
            _session_timers(member, now)
    for member in members.values():
        member.events()
    for i in range(messages):
        now += interval
        route(relay.flush(now), now, False)
        for address, member in members.items():
            for data, _ in _session_timers(member, now):
                route(relay.take(data, address, now), now, False)

        def say(now: float = now) -> list[tuple[bytes, Address]]:
            sender.say(TEXT, now)
            out = sender.datagrams_to_send(now)
            sender.next_timer()
            sender.events()
            return out

        for data, _ in clock.time("say", say):
            route(relay.take(data, SENDER, now), now, timed=True)
        # The receiver's delayed ACK, due one ACK_DELAY later.
        timer = receiver.next_timer()
        if timer is not None and timer < now + ACK_WAIT:
            now = max(now, timer)
            acks = clock.time("ack", partial(_session_timers, receiver, now))
            for data, _ in acks:
                route(relay.take(data, RECEIVER, now), now, False)
        if i == 0:  # the first message's costs are the joins' (caches, first POSTED)
            for samples in clock.stages.values():
                samples.clear()


def _session_take(member: ClientSession, data: bytes, now: float) -> list[tuple[bytes, Address]]:
    """What a one-loop host does with a datagram for ``member``: take it, flush what is due
    (an ACK sent at once is counted here), hand out the events, read the next timer."""
    member.receive_datagram(data, RELAY, now)
    out = member.datagrams_to_send(now)
    member.events()
    member.next_timer()
    return out


def _session_timers(member: ClientSession, now: float) -> list[tuple[bytes, Address]]:
    timer = member.next_timer()
    if timer is not None and timer <= now:
        member.handle_timer(now)
    out = member.datagrams_to_send(now)
    member.events()
    member.next_timer()
    return out


# --- ChatClient's real path, with a fake transport -----------------------------------------------


class _FakeTransport:
    """Records what is sent; gives out what was queued for it; never blocks. With ``real``
    (``--real-io``), each datagram is also sent on a real socket (to a sink) and the timer's
    wait is a real ``recvfrom`` on an idle one, so the system calls are counted too."""

    def __init__(self, local: Address, real: UdpTransport | None = None) -> None:
        self.local_address = local
        self.sent: list[tuple[bytes, Address]] = []
        self.inbound: deque[tuple[bytes, Address]] = deque()
        self.real = real

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))
        if self.real is not None:
            self.real.sendto(data, self.real.local_address)  # to itself: never read

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        return self.inbound.popleft() if self.inbound else None

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


def _turn(client: ChatClient, got: tuple[bytes, Address] | None) -> None:
    """One turn of the client's loop, as ``Driver._serve`` makes it."""
    driver = client._driver
    with driver.lock:
        timer = driver._next_timer()
        now = driver._look(0.0)
        driver._sleeping_until = now
    driver._turn(got, 0.0, timer)


def _wait_and_turn(idle: UdpTransport, wait: float, client: ChatClient) -> None:
    """The loop's sleep until its timer (a select on an idle socket), then its turn."""
    idle.recvfrom(wait)
    _turn(client, None)


def shell_round(messages: int, interval: float, clock: _Clock, real_io: bool = False) -> None:
    relay = _Relay(time.monotonic())
    sockets: list[UdpTransport] = []
    received: list[ev.ClientEvent] = []
    clients: dict[Address, ChatClient] = {}
    transports: dict[Address, _FakeTransport] = {}
    for address, nick in ((SENDER, "tx"), (RECEIVER, "rx")):
        client = ChatClient(ClientOptions(nick, RELAY, pace=False), on_event=received.append)
        real = None
        if real_io:
            real = UdpTransport.bind("127.0.0.1")
            real._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # drops: fine
            sockets.append(real)
        transport = _FakeTransport(address, real)
        transports[address] = transport
        client._transport = transport
        clients[address] = client
    sender, receiver = clients[SENDER], clients[RECEIVER]

    def pump(timed: bool) -> None:
        """Move datagrams until nothing moves; time the members' turns when ``timed``."""
        for _ in range(100):
            moved = False
            for address, transport in transports.items():
                sent, transport.sent = transport.sent, []
                for data, _ in sent:
                    moved = True
                    for reply, dst in relay.take(data, address, time.monotonic()):
                        transports[dst].inbound.append((reply, RELAY))
            for data, dst in relay.flush(time.monotonic()):
                transports[dst].inbound.append((data, RELAY))
            for address, transport in transports.items():
                while transport.inbound:
                    moved = True
                    got = transport.inbound.popleft()
                    client = clients[address]
                    if timed:
                        stage = "receive" if address == RECEIVER else "posted"
                        clock.time(stage, partial(_turn, client, got))
                    else:
                        _turn(client, got)
            if not moved:
                return

    try:
        for client in clients.values():
            client._driver.call(client._session.connect)
        deadline = time.monotonic() + 5.0
        while not all(c._session.state is SessionState.JOINED for c in clients.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the members did not join")
            pump(False)
            for client in clients.values():
                _turn(client, None)
            time.sleep(0.001)
        for i in range(messages):
            pump(False)
            clock.time("say", lambda: sender.say(TEXT))
            pump(True)
            # The receiver's loop sleeps until its timer (the delayed ACK), then wakes.
            timer = receiver._session.next_timer()
            if timer is not None and timer - time.monotonic() < ACK_WAIT:
                wait = max(timer - time.monotonic(), 0.0)
                idle = transports[RECEIVER].real
                if idle is None:
                    time.sleep(wait)
                    clock.time("ack", lambda: _turn(receiver, None))
                else:  # the wait is the loop's: a select on an idle socket, timed too
                    clock.time("ack", partial(_wait_and_turn, idle, wait, receiver))
            pump(False)
            if interval > 0:
                time.sleep(interval)
            _turn(sender, None)
            if i == 0:
                for samples in clock.stages.values():
                    samples.clear()
            received.clear()
    finally:
        for client in clients.values():
            client._driver.stop()
        for real in sockets:
            real.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between lines in the shell layer (virtual: 20 ms)")
    parser.add_argument("--real-io", action="store_true",
                        help="shell layer: real sendto and timer waits on loopback sockets")
    parser.add_argument("--layer", choices=["session", "shell", "both"], default="both")
    parser.add_argument("--profile", choices=["session", "shell"], default=None)
    parser.add_argument("--stage", choices=["say", "receive", "ack", "posted"], default=None,
                        help="profile this stage only")
    parser.add_argument("--top", type=int, default=30)
    ns = parser.parse_args()
    runners = {"session": lambda c: session_round(ns.messages, 0.02, c),
               "shell": lambda c: shell_round(ns.messages, ns.interval, c, ns.real_io)}
    if ns.profile is not None:
        profile = cProfile.Profile(time.thread_time)
        clock = _Clock(profile, ns.stage)
        runners[ns.profile](clock)
        counts = {k: len(v) for k, v in clock.stages.items()}
        print(f"{ns.profile}: profiled operations {counts}")
        pstats.Stats(profile).sort_stats("tottime").print_stats(ns.top)
        return
    layers = ["session", "shell"] if ns.layer == "both" else [ns.layer]
    for layer in layers:
        medians: dict[str, list[float]] = {}
        for _ in range(ns.rounds):
            clock = _Clock(None)
            runners[layer](clock)
            for stage, samples in clock.stages.items():
                if samples:
                    medians.setdefault(stage, []).append(statistics.median(samples))
        cells = "  ".join(
            f"{stage} {statistics.median(v):6.1f} ({'/'.join(f'{x:.1f}' for x in v)})"
            for stage, v in medians.items()
        )
        print(f"{layer:8s} µs/op  {cells}")


if __name__ == "__main__":
    main()
