"""A bare-bones protocol client for exercising the relay core on a simulated network.

It speaks the handshake and the reliable stream straight from protocol.md with no comfort
(no reconnects, no heartbeat unless asked), so relay tests control every datagram.
"""

from __future__ import annotations

import hashlib
import random

from udpchat import messages as m
from udpchat import wire
from udpchat.reliability import Link, LinkConfig
from udpchat.seal import KeyDeriver, Sealer
from udpchat.sim import Address


def quick_room_key(secret: bytes, seed: int = 0) -> KeyDeriver:
    """A room key for tests: like the real one, a different key per secret and per relay
    salt, but without scrypt's 40 ms a derivation."""
    nonces = random.Random(seed).randbytes
    return lambda salt: Sealer(hashlib.sha256(secret + b"|" + salt).digest(), nonces)


class FakeClient:
    def __init__(self, nick: str, relay: Address, seed: int = 0, resume: wire.Resume | None = None):
        self.nick = nick
        self.relay = relay
        self.rng = random.Random(seed)
        self.nonce = self.rng.randbytes(8)
        self.resume = resume
        self.link: Link | None = None
        self.accept: wire.Accept | None = None
        self.reject: wire.Reject | None = None
        self.received: list[m.Message] = []
        self.other: list[wire.Datagram] = []
        self.out: list[bytes] = [wire.encode_hello(self.nonce)]
        self.heartbeat: float | None = None
        self.last_sent = 0.0
        self.handshake = self.out[0]  # retransmitted until the relay answers
        self.retry_at: float | None = None

    # Node protocol
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        datagram = wire.decode_datagram(data)
        if isinstance(datagram, wire.Challenge) and self.link is None:
            self.handshake = wire.encode_join(self.nonce, datagram.cookie, self.nick, self.resume)
            self.out.append(self.handshake)
        elif isinstance(datagram, wire.Accept) and self.link is None:
            self.accept = datagram
            self.link = Link(datagram.token, LinkConfig(max_retransmissions=50))
        elif isinstance(datagram, wire.Reject):
            self.reject = datagram
        elif isinstance(datagram, wire.PathChallenge) and self.link is not None:
            self.other.append(datagram)
            self.link.receive(datagram, now)
            self.out.append(self.link.encode_path(wire.PathResponse, datagram.data))
        elif isinstance(datagram, (wire.Data, wire.Ack, wire.Ping)) and self.link is not None:
            for data in self.link.receive(datagram, now) or []:
                self.received.append(m.decode_message(data))
        else:
            self.other.append(datagram)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        if self.link is None and self.reject is None:
            if out:
                self.retry_at = now + 0.25
            elif self.retry_at is not None and now >= self.retry_at:
                out.append(self.handshake)
                self.retry_at = now + 0.25
        if self.link is not None:
            if self.heartbeat is not None and now >= self.last_sent + self.heartbeat:
                self.link.ping()
            out.extend(self.link.datagrams_to_send(now))
        if out:
            self.last_sent = now
        return [(d, self.relay) for d in out]

    def next_timer(self) -> float | None:
        if self.link is None:
            return self.retry_at if self.reject is None else None
        timer = self.link.next_timer()
        if self.heartbeat is not None:
            beat = self.last_sent + self.heartbeat
            timer = beat if timer is None else min(timer, beat)
        return timer

    def handle_timer(self, now: float) -> None:
        if self.link is not None:
            self.link.handle_timer(now)

    # conveniences
    def send(self, message: m.Message) -> None:
        assert self.link is not None, "not joined"
        self.link.send(m.encode_message(message))

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [x for x in self.received if isinstance(x, kind)]

    @property
    def joined(self) -> bool:
        return any(isinstance(x, m.Welcome) for x in self.received)

    def room_events(self) -> list[tuple[int, str]]:
        """(seq, description) of every room event seen, posted own messages included."""
        out: list[tuple[int, str]] = []
        for x in self.received:
            if isinstance(x, m.ChatMessage):
                out.append((x.seq, f"{x.nick}: {x.text}"))
            elif isinstance(x, m.Posted):
                out.append((x.seq, "own"))
            elif isinstance(x, (m.Joined, m.Left, m.NickChanged, m.ActionMessage)):
                out.append((x.seq, type(x).__name__))
        return out
