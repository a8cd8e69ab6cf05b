"""What the relay reports to its operator (logged by the shell), in the past tense.

Named apart from the client's events (``udpchat.events``): a relay admits and removes
members, a client sees them join and leave.
"""

from __future__ import annotations

from dataclasses import dataclass

from udpchat.endpoint import Address

__all__ = [
    "DatagramDropped", "MemberAdmitted", "MemberMoved", "MemberNickChanged", "MemberRemoved",
    "RelayEvent", "RoomNotice",
]


@dataclass(frozen=True, slots=True)
class MemberAdmitted:
    nick: str
    addr: Address
    resumed: bool


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    nick: str
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class MemberNickChanged:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class MemberMoved:
    nick: str
    old: Address
    new: Address


@dataclass(frozen=True, slots=True)
class DatagramDropped:
    reason: str
    addr: Address


@dataclass(frozen=True, slots=True)
class RoomNotice:
    """What happened to a room shared with other relays (protocol.md 6.8), in words: its
    store out of reach or back, a member moved to another relay, a relay lost, an epoch."""

    text: str


RelayEvent = (
    MemberAdmitted | MemberRemoved | MemberNickChanged | MemberMoved | DatagramDropped | RoomNotice
)
