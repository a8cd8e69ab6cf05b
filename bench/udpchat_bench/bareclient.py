"""A bare protocol client: the handshake and one reliable session, nothing more.

What the load generator's members, its join probe and the tests' fake client have in common:
HELLO, the JOIN that answers a CHALLENGE (``udpchat.handshake.Joiner``), the session keys from
the ACCEPT, then one ``Link``. There is no comfort on purpose (no reconnect, no heartbeat, no
decoding of messages, no addresses): whoever drives it decides what to send and when, so a test
controls every datagram and a load generator keeps thousands of them cheaply.

Sans-I/O like the cores it talks to: ``now`` is passed in, randomness comes from the caller.
Invariants: one ``Link`` per client, made once, from the first ACCEPT that authenticates; until
then the last handshake datagram is repeated every ``retry_s`` seconds, and never after a
REJECT.
"""

from __future__ import annotations

from collections.abc import Callable

from udpchat import wire
from udpchat.handshake import Joiner
from udpchat.link import Link, LinkConfig
from udpchat.seal import PskDeriver, SessionKeys

__all__ = ["DEFAULT_LINK_CONFIG", "HANDSHAKE_RETRY_S", "BareClient"]

HANDSHAKE_RETRY_S = 0.25
"""How long a HELLO or JOIN waits for its answer before it is sent again."""

DEFAULT_LINK_CONFIG = LinkConfig()


class BareClient:
    """One member's handshake and session, driven datagram by datagram.

    ``receive`` takes a datagram from the relay, already decoded, and returns the messages it
    completed (raw, in order); ``take_datagrams`` returns what to send now (handshake, its
    retries, path responses, then the link's datagrams); ``next_timer``/``handle_timer`` as for
    any endpoint. Datagrams it does not act on, and path challenges it answered, go to
    ``unhandled``, which does nothing here.
    """

    __slots__ = (
        "accept",
        "auth_failures",
        "handshake",
        "joiner",
        "keys",
        "link",
        "link_config",
        "nick",
        "nonce",
        "out",
        "payload",
        "reject",
        "retry_at",
        "retry_s",
    )

    def __init__(
        self,
        nick: str,
        nonce: bytes,
        rng: Callable[[int], bytes],
        resume: wire.Resume | None = None,
        room_key: PskDeriver | None = None,
        link_config: LinkConfig | None = None,
        retry_s: float = HANDSHAKE_RETRY_S,
    ) -> None:
        self.nick = nick
        self.nonce = nonce
        self.joiner = Joiner(nonce, nick, rng, resume, room_key)
        self.link_config = link_config or DEFAULT_LINK_CONFIG
        self.retry_s = retry_s
        self.handshake = wire.encode_hello(nonce)
        self.out: list[bytes] = [self.handshake]
        self.retry_at: float | None = None
        self.accept: wire.Accept | None = None
        self.payload: wire.AcceptPayload | None = None
        self.reject: wire.Reject | None = None
        self.keys: SessionKeys | None = None
        self.link: Link | None = None
        self.auth_failures = 0

    def receive(self, datagram: wire.Datagram, now: float) -> list[bytes]:
        """Act on one datagram from the relay; return the messages it completed."""
        if isinstance(datagram, wire.Protected) and self.link is not None:
            opened = self.link.open(datagram)
            if opened is None:
                self.auth_failures += 1
                return []
            delivered = self.link.receive(opened, now)
            if isinstance(opened, wire.PathChallenge):
                self.unhandled(opened)
                if delivered is not None:  # not a replay: prove we are on this path
                    self.out.append(self.link.encode_path(wire.PathResponse, opened.data))
            return delivered or []
        if isinstance(datagram, wire.Challenge) and self.link is None:
            self.handshake = self.joiner.join_for(datagram)
            self.out.append(self.handshake)
        elif isinstance(datagram, wire.Accept) and self.link is None:
            accepted = self.joiner.keys_for(datagram)
            if accepted is None:
                self.auth_failures += 1
                return []
            self.accept = datagram
            self.payload, self.keys = accepted
            self.link = Link(datagram.token, self.link_config, keys=self.keys)
        elif isinstance(datagram, wire.Busy) and self.link is None:
            if datagram.nonce == self.nonce:  # protocol.md 4.3: the same JOIN, later
                self.retry_at = now + datagram.retry_ms / 1000
        elif isinstance(datagram, wire.Reject):
            self.reject = datagram
        else:
            self.unhandled(datagram)
        return []

    def unhandled(self, item: object) -> None:
        """A datagram the client did not act on, or a path challenge it answered."""

    def take_datagrams(self, now: float) -> list[bytes]:
        """Everything to send now; a handshake datagram going out starts its retry timer."""
        out, self.out = self.out, []
        if self.link is None and self.reject is None:
            if out:
                self.retry_at = now + self.retry_s
            elif self.retry_at is not None and now >= self.retry_at:
                out.append(self.handshake)
                self.retry_at = now + self.retry_s
        if self.link is not None:
            out.extend(self.link.datagrams_to_send(now))
        return out

    def next_timer(self) -> float | None:
        if self.link is None:
            return self.retry_at if self.reject is None else None
        return self.link.next_timer()

    def handle_timer(self, now: float) -> None:
        if self.link is not None:
            self.link.handle_timer(now)
