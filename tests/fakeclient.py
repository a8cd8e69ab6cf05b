"""A bare-bones protocol client for exercising the relay core on a simulated network, and
the small helpers relay and link tests build datagrams and keys with.

``FakeClient`` is the benchmark tools' ``BareClient`` (the handshake and one reliable stream
straight from protocol.md, no reconnects, no heartbeat unless asked) made a simulated-network
endpoint, so relay tests control every datagram.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.endpoint import Address
from udpchat.handshake import Joiner
from udpchat.link import LinkConfig
from udpchat.seal import PskDeriver, SessionCipher, SessionKeys
from udpchat_bench.bareclient import BareClient


def quick_room_key(secret: bytes) -> PskDeriver:
    """A room key for tests: like the real one, a different psk per secret and per relay
    key, but without scrypt's 40 ms a derivation."""
    return lambda relay_key: hashlib.sha256(secret + b"|" + relay_key).digest()


def random_keys(seed: int = 0, padded: bool = False) -> SessionKeys:
    """Session keys nobody else has: for links that stand for strangers or for a pair in a
    reliability test (``swap`` them for the other end)."""
    rng = random.Random(seed)
    return SessionKeys(rng.randbytes(32), rng.randbytes(32), padded)


def swap(keys: SessionKeys) -> SessionKeys:
    """The other end's keys: it receives with our send key and sends with our receive key."""
    return SessionKeys(keys.receive, keys.send, keys.padded)


def join_datagram(
    nonce: bytes,
    challenge: wire.Challenge,
    nick: str,
    resume: wire.Resume | None = None,
    room_key: PskDeriver | None = None,
    seed: int = 0,
) -> bytes:
    """A well-formed JOIN answering ``challenge``, as a client would send it."""
    return Joiner(nonce, nick, random.Random(seed).randbytes, resume, room_key).join_for(challenge)


def stray_session(
    token: bytes,
    pn: int = 0,
    kind: wire.DatagramType = wire.DatagramType.PING,
    fields: bytes | None = None,
    seed: int = 0,
) -> bytes:
    """A session datagram sealed with keys nobody shares: what someone who knows (or guesses)
    a token, but holds no session key, can send."""
    keys = random_keys(seed)
    cipher = SessionCipher(keys.send, keys.receive, padded=False, interval=2**64)
    if fields is None:
        fields = session_bytes.ack_fields(0, 0)
    return cipher.seal(kind, token, pn, fields)


class FakeClient(BareClient):
    """A ``BareClient`` on a simulated network: an endpoint with an address, a heartbeat when
    asked, and every message decoded and kept for the test to look at."""

    def __init__(
        self,
        nick: str,
        relay: Address,
        seed: int = 0,
        resume: wire.Resume | None = None,
        room_key: PskDeriver | None = None,
        link_config: LinkConfig | None = None,
        resume_secret: bytes = b"",
    ):
        rng = random.Random(seed)
        nonce = rng.randbytes(8)
        if resume is not None and resume_secret:  # protocol.md 4.2: prove the old session
            resume = replace(resume, proof=hs.resume_proof(resume_secret, nonce))
        super().__init__(
            nick,
            nonce,
            rng.randbytes,
            resume,
            room_key,
            link_config or LinkConfig(max_retransmissions=50),
        )
        self.relay = relay
        self.rng = rng
        self.resume = resume
        self.received: list[m.Message] = []
        self.other: list[object] = []
        self.heartbeat: float | None = None
        self.last_sent = 0.0

    # Node protocol
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        for raw in self.receive(wire.decode_datagram(data), now):
            self.received.append(m.decode_message(raw))

    def unhandled(self, item: object) -> None:
        self.other.append(item)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        link, beat = self.link, self.heartbeat
        if link is not None and beat is not None and now >= self.last_sent + beat:
            link.ping()
        out = self.take_datagrams(now)
        if out:
            self.last_sent = now
        return [(d, self.relay) for d in out]

    def next_timer(self) -> float | None:
        timer = super().next_timer()
        if self.link is not None and self.heartbeat is not None:
            beat = self.last_sent + self.heartbeat
            timer = beat if timer is None else min(timer, beat)
        return timer

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

    @property
    def resume_secret(self) -> bytes:
        """What a later JOIN resuming this session must prove it holds (protocol.md 4.2)."""
        assert self.keys is not None, "not accepted"
        return hs.resume_secret(self.keys.send)
