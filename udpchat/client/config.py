"""What the client session's parts share: its settings, its counters and its errors.

``ClientConfig`` is frozen and checked when built; ``Counters`` is the one mutable tally every
part adds to (nothing is ever raised for a bad datagram: it is counted here), and
``ClientStats`` is the snapshot of it that /stats shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from udpchat.endpoint import Address
from udpchat.errors import UsageError
from udpchat.link import LinkConfig, LinkStats
from udpchat.names import nick_error

__all__ = [
    "RELAY_SILENCE", "ClientConfig", "ClientStats", "Counters", "LocalProtocolError",
    "QueueFull", "Trust", "trust_any",
]

# protocol.md 7.1: with one relay, it is lost after this much silence.
RELAY_SILENCE = 5.0


Trust = Callable[[bytes], "str | None"]
"""Decides whether to talk to the relay whose static public key is given: None to go on, or
the refusal to show (the join then ends). The shell checks it against the pinned keys."""


def trust_any(relay_key: bytes) -> str | None:
    """The core's default: every relay key is accepted (the shell passes a real check)."""
    return None


class LocalProtocolError(UsageError):
    """The session was asked to do something its current state does not allow."""


class QueueFull(UsageError):
    """Too many messages wait for the relay; nothing was queued (back-pressure)."""


@dataclass(frozen=True)
class ClientConfig:
    nick: str
    server: Address  # the relay's address: datagrams from anywhere else are dropped
    # The room's other relays, tried round-robin after ``server`` when the current one goes
    # silent (protocol.md 6.9). Empty: one relay, rejoined in place as ever.
    fallbacks: tuple[Address, ...] = ()
    link: LinkConfig = field(default_factory=LinkConfig)
    join_timeout: float = 10.0  # give up a join attempt after this (protocol.md 4)
    relay_silence: float = RELAY_SILENCE
    # With other relays to move to (protocol.md 6.9): silence after which the client moves
    # on (at least two heartbeats), and how long an attempt waits for a relay's CHALLENGE
    # before it tries the next one.
    failover_silence: float = 2.0
    failover_wait: float = 3.0
    quit_timeout: float = 2.0
    reconnect: bool = True
    max_reconnect_delay: float = 10.0
    max_pending: int = 1000  # messages queued while no link takes them
    # Requests leave at most this fast, a little under the relay's default flood limits
    # (protocol.md 6.5), so that a paste or a script is paced, not refused. 0: no pacing.
    pace_rate: float = 4.5
    pace_burst: int = 8

    def __post_init__(self) -> None:
        error = nick_error(self.nick)
        if error is not None:
            raise ValueError(error)
        names = (
            "join_timeout", "relay_silence", "quit_timeout", "max_reconnect_delay",
            "failover_silence", "failover_wait",
        )
        for name in names:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        relays = (self.server, *self.fallbacks)
        if len(set(relays)) != len(relays):
            raise ValueError("a relay is listed twice")


@dataclass
class Counters:
    """What the session dropped and why; the parts of the session add to one instance."""

    malformed: int = 0
    wrong_session: int = 0
    unexpected: int = 0
    bad_messages: int = 0
    foreign: int = 0
    reconnects: int = 0
    moves: int = 0  # times the session moved to another relay of its list
    # the replays and invalid datagrams of links already retired
    retired_replays: int = 0
    retired_invalid: int = 0


@dataclass(frozen=True)
class ClientStats:
    """Counters for /stats: what was dropped and why, and the current link's numbers."""

    malformed: int  # not udpchat, not authentic, or impossible ACK fields
    wrong_session: int  # a token or handshake nonce that is not ours
    replays: int  # packet numbers seen before (protocol.md 5.6)
    unexpected: int  # valid, but meaningless in the current state
    bad_messages: int  # stream messages that do not decode or make no sense
    reconnects: int  # times the session was re-established after losing the relay
    foreign: int  # datagrams from an address other than the relay's
    link: LinkStats
    moves: int = 0  # times the session moved to another relay of its list (protocol.md 6.9)

    @property
    def srtt(self) -> float:
        return self.link.srtt

    @property
    def rto(self) -> float:
        return self.link.rto

    @property
    def retransmissions(self) -> int:
        return self.link.retransmissions

    @property
    def loss_estimate(self) -> float:
        return self.link.loss_estimate
