"""Bytes and datagrams on the wire per chat message, counted on the seeded simulator.

The reference traffic of ``udpchat bench`` (relay + 1 sender + 2 receivers, 400 messages of
100 B at 50/s, each payload sent as the bench sends it: 100 characters of text) runs with
the real client sessions and the real relay core on the simulated network (virtual clock,
0.25 ms each way, seeded loss each way). Every datagram is counted by its sender with 28 B of
IPv4 + UDP headers, from the first HELLO to the end of a 1 s drain, and sorted by role:

* ``SAY``: DATA from the sender to the relay; ``POSTED``: DATA from the relay to the sender;
  ``fan-out``: DATA from the relay to a receiver; ``ACK c>r`` / ``ACK r>c``: ACK-only
  datagrams by direction; ``PING`` (either way); ``handshake``: HELLO .. ACCEPT; ``other``.

``wire/B`` is the figure ``udpchat bench`` reports: all wire bytes over the payload bytes
delivered (100 B per message per receiver). ``p50``/``p99`` are one-way latencies from
``say`` to each receiver's delivery, over every seed. The anatomy splits each role's bytes
into IP + UDP, the session header in the clear (protocol.md 8.1: version, type, token,
packet number and the sealed field's bin header), the AEAD tag, and the sealed plaintext
(the datagram's fields: ACK state, seq, flags, chunk framing and the message itself).

``--ack-delay`` / ``--ack-every`` set every link's ``LinkConfig.ack_delay`` / ``ack_every``
(both ends), to measure acknowledgement frequency against loss recovery.

    python bench/scripts/wire_cost.py --loss 0 10           # the account
    python bench/scripts/wire_cost.py --loss 5 10 20 30 --seeds 20 --latency-only
    python bench/scripts/wire_cost.py --loss 0 10 --ack-delay 0.025 --ack-every 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.client_support import RELAY, client_addr, relay_net
from udpchat import events as ev
from udpchat import wire
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import LinkConfig
from udpchat.relay.config import RelayConfig
from udpchat.seal import TAG_SIZE
from udpchat.sim import PathModel
from udpchat_bench.traffic import make_payload, padding, parse_payload
from udpchat_bench.udpchat_system import UNLIMITED

IP_UDP = 28
MESSAGES = 400
SIZE = 100
RATE = 50.0
DRAIN = 1.0
ROLES = ("SAY", "POSTED", "fan-out", "ACK c>r", "ACK r>c", "PING", "handshake", "other")
_HANDSHAKE = (wire.Hello, wire.Challenge, wire.Join, wire.Accept)


class _Timed:
    """A session as a simulator node that stamps each chat delivery with the virtual time."""

    def __init__(self, session: ClientSession, sent: dict[int, float], got: list[float]) -> None:
        self.session = session
        self._sent = sent
        self._got = got
        self._seen: set[int] = set()

    def _drain(self, now: float) -> None:
        for event in self.session.events():
            if isinstance(event, ev.MessageReceived) and not event.own and not event.history:
                index = parse_payload(event.text.encode("ascii"))[1]
                if index not in self._seen:
                    self._seen.add(index)
                    self._got.append(now - self._sent[index])

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.session.receive_datagram(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.session.datagrams_to_send(now)

    def next_timer(self) -> float | None:
        return self.session.next_timer()

    def handle_timer(self, now: float) -> None:
        self.session.handle_timer(now)
        self._drain(now)


@dataclass
class Account:
    datagrams: Counter[str] = field(default_factory=Counter)
    wire: Counter[str] = field(default_factory=Counter)
    clear: Counter[str] = field(default_factory=Counter)  # session header in the clear
    plaintext: Counter[str] = field(default_factory=Counter)  # sealed fields, tag excluded
    latencies: list[float] = field(default_factory=list)
    delivered: int = 0
    retransmissions: int = 0


def _role(src: Address, dst: Address, data: bytes, sender: Address) -> tuple[str, int]:
    """The datagram's role, and the size of its sealed field (0 when it has none)."""
    try:
        datagram = wire.decode_datagram(data)
    except wire.DecodeError:
        return "other", 0
    if isinstance(datagram, _HANDSHAKE):
        return "handshake", 0
    if not isinstance(datagram, wire.Protected):
        return "other", 0
    return _session_role(src, dst, datagram.kind, sender), len(datagram.sealed)


def _session_role(src: Address, dst: Address, kind: wire.DatagramType, sender: Address) -> str:
    if kind == wire.DatagramType.DATA:
        if dst == RELAY:
            return "SAY" if src == sender else "other"
        return "POSTED" if dst == sender else "fan-out"
    if kind == wire.DatagramType.ACK:
        return "ACK c>r" if dst == RELAY else "ACK r>c"
    if kind == wire.DatagramType.PING:
        return "PING"
    return "other"


def run(loss: float, seed: int, account: Account, link: LinkConfig, messages: int) -> None:
    relay_link = replace(RelayConfig().link, ack_delay=link.ack_delay, ack_every=link.ack_every)
    config = RelayConfig(flood_burst=UNLIMITED, flood_rate=float(UNLIMITED), link=relay_link)
    model = PathModel(loss=loss, delay=0.00025)
    net, _relay, sessions = relay_net(
        ("m0", "m1", "m2"), model, seed=seed, relay_config=config, pace_rate=0.0, link=link
    )
    sender_addr = client_addr(0)
    sent: dict[int, float] = {}
    got: list[float] = []
    for i, session in enumerate(sessions):
        net.detach(client_addr(i))
        net.attach(client_addr(i), _Timed(session, sent, got))

    def tap(src: Address, dst: Address, data: bytes) -> None:
        role, sealed = _role(src, dst, data, sender_addr)
        account.datagrams[role] += 1
        account.wire[role] += len(data) + IP_UDP
        if sealed:
            account.clear[role] += len(data) - sealed
            account.plaintext[role] += sealed - TAG_SIZE

    net.taps.append(tap)
    for session in sessions:
        session.connect(net.now)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 60)
    sender = sessions[0]
    filler = padding(SIZE, seed)
    for index in range(messages):
        sent[index] = net.now
        sender.say(make_payload(0, index, 0, filler).decode("ascii"), net.now)
        net.run(1 / RATE)
    expected = messages * (len(sessions) - 1)
    net.run_until(lambda: len(got) >= expected, 60)
    net.run(DRAIN)
    assert len(got) == expected, f"{len(got)} of {expected} delivered (seed {seed})"
    account.delivered += len(got)
    account.latencies.extend(got)
    account.retransmissions += sum(s.stats.retransmissions for s in sessions)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(
    loss_percent: float, seeds: int, latency_only: bool, link: LinkConfig, messages: int
) -> None:
    account = Account()
    for seed in range(1, seeds + 1):
        run(loss_percent / 100, seed, account, link, messages)
    payload = account.delivered * SIZE
    total = sum(account.wire.values())
    lat = account.latencies
    line = (
        f"loss {loss_percent:g}%: {seeds} seed(s), wire/B {total / payload:.3f}, "
        f"p50 {statistics.median(lat) * 1000:.2f} ms, p99 {_pct(lat, 0.99):.2f} ms, "
        f"max {max(lat) * 1000:.1f} ms"
    )
    print(line, flush=True)
    if latency_only:
        return
    per = messages * seeds
    print(
        f"  {'role':10} {'dgrams/msg':>10} {'bytes/msg':>10} {'B/dgram':>8} {'share':>6}"
        f"   per datagram: {'IP+UDP':>6} {'header':>6} {'tag':>4} {'fields':>6}"
    )
    roles = [role for role in ROLES if account.datagrams[role]]
    for role in [*roles, "all"]:
        wanted = roles if role == "all" else [role]
        n = sum(account.datagrams[r] for r in wanted)
        b = sum(account.wire[r] for r in wanted)
        anatomy = ""
        if role not in ("handshake", "other", "all"):
            clear, fields = account.clear[role] / n, account.plaintext[role] / n
            anatomy = f"{'':17}{IP_UDP:6d} {clear:6.1f} {TAG_SIZE:4d} {fields:6.1f}"
        print(f"  {role:10} {n / per:10.3f} {b / per:10.1f} {b / n:8.1f} {b / total:6.1%}{anatomy}")
    sealed = sum(account.datagrams[r] for r in ROLES if r not in ("handshake", "other"))
    print(
        f"  per message: {sum(account.clear.values()) / per:.1f} B of session headers in the"
        f" clear, {sealed * TAG_SIZE / per:.1f} B of tags,"
        f" {sum(account.datagrams.values()) * IP_UDP / per:.1f} B of IP + UDP"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--ack-delay", type=float, default=LinkConfig().ack_delay)
    parser.add_argument("--ack-every", type=int, default=LinkConfig().ack_every)
    args = parser.parse_args()
    link = LinkConfig(ack_delay=args.ack_delay, ack_every=args.ack_every)
    print(f"links: ack_delay {link.ack_delay * 1000:g} ms, ack_every {link.ack_every}")
    for loss in args.loss:
        report(loss, args.seeds, args.latency_only, link, args.messages)


if __name__ == "__main__":
    main()
