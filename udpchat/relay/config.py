"""What a relay operator can set, what the relay counts, and the limits protocol.md fixes.

Every part of the relay reads one ``RelayConfig`` and adds to one ``RelayStats``; neither
changes meaning when the parts move.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udpchat import messages as m
from udpchat import wire
from udpchat.link import LinkConfig

__all__ = [
    "AMPLIFICATION_FACTOR", "INITIAL_ANSWER_CREDIT", "LIST_CREDIT_FACTOR", "MAX_ANSWER_CREDIT",
    "MAX_SCALED_WINDOW", "RelayConfig", "RelayStats",
]

# RFC 9000 section 8: at most three times the bytes received, before validation.
AMPLIFICATION_FACTOR = 3
# protocol.md 6.5: member lists may take twice the bytes a member sent (ACKs and the other
# answers fit in the third time), and a member can bank at most this much of that.
LIST_CREDIT_FACTOR = AMPLIFICATION_FACTOR - 1
MAX_ANSWER_CREDIT = LIST_CREDIT_FACTOR * 64 * 1024
# protocol.md 6.3: the longest a notice waits in a large room (RelayConfig.notice_fanout).
MAX_SCALED_WINDOW = 1.0
# What a member starts with: the credit of one handshake-sized datagram.
INITIAL_ANSWER_CREDIT = LIST_CREDIT_FACTOR * wire.MIN_INITIAL_SIZE


@dataclass(frozen=True)
class RelayConfig:
    heartbeat: float = 1.0
    timeout: float = 10.0
    max_members: int = 1024
    history: int = 200
    join_history: int = 20
    flood_burst: int = 10
    flood_rate: float = 5.0
    # JOINs with a valid cookie, per host (protocol.md 4): spoofed datagrams cannot drain it.
    handshake_burst: int = 20
    handshake_rate: float = 5.0
    # Admissions for the whole relay (protocol.md 4.3): a JOIN beyond them is answered BUSY
    # with the time of a later slot, so that a room rejoining at once after a restart is let
    # in at a pace the relay keeps up with instead of in a burst it drops.
    admission_burst: int = 100
    admission_rate: float = 400.0
    # Answers to datagrams that proved nothing (RESET, VERSION and BAD_KEY rejects), per host.
    reply_burst: int = 20
    reply_rate: float = 10.0
    max_sources: int = 4096
    # protocol.md 6.5: members per host and per network, so one machine cannot fill the room;
    # generous enough for a LAN behind one NAT.
    max_members_per_host: int = 64
    max_members_per_network: int = 256
    cookie_lifetime: float = 10.0
    shutdown_grace: float = 1.0
    # Queued messages are shared bytes objects, so a generous per-member budget costs memory
    # only while that member really lags: 1 MiB holds two members' full bursts of 16 KiB
    # messages, or a second of fan-out at 8,000 messages a second.
    link: LinkConfig = field(default_factory=lambda: LinkConfig(send_buffer=1024 * 1024))
    # protocol.md 5.8: what all members together may hold in out-of-order packets and
    # reassembly, on top of each link's own cap (link.receive_buffer).
    receive_budget: int = 32 * 1024 * 1024
    # protocol.md 6.3: in a room of more than ``batch_notices_above`` members, join and
    # leave notices wait up to ``notice_window`` to share one room event (JOINED_BATCH,
    # LEFT_BATCH) with others of their kind, or until a batch names ``notice_batch``
    # members. In smaller rooms, or with a window of 0, every join and leave is its own
    # JOINED or LEFT at once: there a notice costs a handful of datagrams, and clients that
    # know only those kinds keep working.
    notice_window: float = 0.2
    notice_batch: int = 64
    batch_notices_above: int = 16
    # protocol.md 6.3: in a room of N members the window is N / ``notice_fanout`` seconds
    # when that is longer (at most MAX_SCALED_WINDOW): a batch costs a datagram to every
    # member and an ACK back from each, so join and leave notices cost at most about this
    # many datagrams a second each way, however large the room. Measured with `udpchat
    # load` on 2 cores, 1,000 members joining at 50 a second: 5 fan-outs a second (10,000
    # datagrams with their ACKs) kept the relay behind its socket, 2 did not.
    notice_fanout: float = 2000.0
    # protocol.md 6.7: in a room of more than this many members, WELCOME lists only the
    # first this many and the rest comes on request (WHO_PAGE), a page of this many at a
    # time; 0 always lists everyone.
    member_page: int = 100
    # protocol.md 6.7: how many of those WELCOME names in a paged room (never more than
    # ``member_page``). A newcomer needs the room's size and a few names at once, not a
    # page: in a room of 1,000, WELCOME with 100 names cost the joiner about 120 us and the
    # relay 30 us more than with 20, on the join's path (bench/scripts/join_cost.py).
    welcome_page: int = 20

    @property
    def welcome_names(self) -> int:
        """How many names WELCOME lists in a paged room (protocol.md 6.7)."""
        return min(self.welcome_page, self.member_page)

    def __post_init__(self) -> None:
        if self.receive_budget < 0:
            raise ValueError("receive_budget cannot be negative")
        if not 0 < self.heartbeat < self.timeout:
            raise ValueError("need 0 < heartbeat < timeout")
        if self.timeout > 3600:
            raise ValueError("timeout is at most an hour")
        if self.max_members < 1 or self.history < 0 or self.join_history < 0:
            raise ValueError("max_members must be positive and history sizes not negative")
        if not 0 <= self.notice_window <= 10:
            raise ValueError("notice_window is from 0 to 10 seconds")
        if not self.notice_fanout > 0:
            raise ValueError("notice_fanout must be above 0 (inf: the window never grows)")
        if not 0 <= self.member_page <= m.MAX_MEMBERS_LISTED:
            raise ValueError(f"member_page is from 0 to {m.MAX_MEMBERS_LISTED}")
        if not 1 <= self.welcome_page <= m.MAX_MEMBERS_LISTED:
            raise ValueError(f"welcome_page is from 1 to {m.MAX_MEMBERS_LISTED}")
        if self.batch_notices_above < 0:
            raise ValueError("batch_notices_above cannot be negative")
        if not 1 <= self.notice_batch <= m.MAX_BATCH:
            raise ValueError(f"notice_batch is from 1 to {m.MAX_BATCH}")
        if self.max_members_per_host < 1 or self.max_members_per_network < 1:
            raise ValueError("members per host and per network must be at least 1")
        if self.admission_burst < 1 or not 0 < self.admission_rate < float("inf"):
            raise ValueError("admission_burst must be at least 1 and admission_rate above 0")


@dataclass
class RelayStats:
    datagrams_received: int = 0
    bytes_received: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    malformed: int = 0
    unknown_session: int = 0
    rejected_by_link: int = 0
    bad_messages: int = 0
    unexpected: int = 0
    handshakes: int = 0
    rate_limited: int = 0
    bad_cookies: int = 0
    rejects: int = 0
    resets: int = 0
    flood_refused: int = 0
    deliveries: int = 0
    amplification_held: int = 0
    bad_key: int = 0
    auth_failures: int = 0
    short_handshakes: int = 0
    replayed_joins: int = 0
    network_full: int = 0
    resent_requests: int = 0
    from_port_zero: int = 0
    busy: int = 0  # JOINs answered BUSY (protocol.md 4.3)
    # protocol.md 6.8, a room shared by several relays:
    foreign_events: int = 0  # other relays' events fanned out here
    store_failures: int = 0  # calls the shared store did not answer
    store_refused: int = 0  # posts, private messages, joins, renames refused for it
    store_held: int = 0  # room events and store calls held until it answered again
    store_lost: int = 0  # held ones dropped, the oldest, when too many were held
    privates_undelivered: int = 0  # routed here for a member no longer here
    relays_lost: int = 0  # other relays' deaths this relay announced
    epoch_changes: int = 0  # times the store lost the room's history
