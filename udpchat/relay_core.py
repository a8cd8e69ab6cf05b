"""The relay's protocol logic, sans I/O: handshakes, membership, the room and its fan-out.

``RelayCore`` takes datagrams with their source address and ``now``, and hands back datagrams
to send with their destination. It keeps members by session token, not by address; timers
live in a heap so that idle members cost nothing between their own deadlines (no polling of
every member on every tick). protocol.md sections 4 to 8 describe what it implements: every
session is a Noise handshake (udpchat.handshake) with the relay's static key, injected like
the random source, and every session datagram is sealed by its member's link.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.endpoint import Address
from udpchat.link import ASAP, Link, LinkConfig, SendBufferFull
from udpchat.names import nick_error, nick_key
from udpchat.netblock import address_key, host_key, prefix_key
from udpchat.noise import DHLEN, NoiseError, public_key
from udpchat.ratelimit import BucketTable, TokenBucket
from udpchat.seal import PskDeriver

Rng = Callable[[int], bytes]

# protocol.md 4: cookies carry 4 bytes of issue time (ms) and 16 bytes of HMAC.
COOKIE_TIME_SIZE = 4
COOKIE_MAC_SIZE = 16
# RFC 9000 section 8: at most three times the bytes received, before validation.
AMPLIFICATION_FACTOR = 3
MAX_PENDING_EVENTS = 10_000
# Used JOIN nonces remembered against replays; a full table forgets the oldest early.
MAX_USED_JOINS = 65_536
# protocol.md 6.1: message ids remembered to answer a resent request without posting it
# twice: at least this many, and at least as many as the history holds.
MIN_REMEMBERED_IDS = 1024
# protocol.md 7.1: on the relay a link never gives up by counting transmissions; the member
# timeout ends a silent session, so a client has that long to resume in place.
RELAY_LINK_TRANSMISSIONS = 1_000_000
RESET_SIZE = len(wire.encode_reset(bytes(wire.TOKEN_SIZE), bytes(wire.RESET_TOKEN_SIZE)))
# protocol.md 6.5: member lists may take twice the bytes a member sent (ACKs and the other
# answers fit in the third time), and a member can bank at most this much of that.
LIST_CREDIT_FACTOR = AMPLIFICATION_FACTOR - 1
MAX_ANSWER_CREDIT = LIST_CREDIT_FACTOR * 64 * 1024
# What a member list costs besides its nicknames: the DATA datagram around it.
LIST_OVERHEAD = 40
# protocol.md 4: what BAD_KEY says when a JOIN's handshake does not authenticate.
WRONG_KEY = "wrong room key"
# Session datagrams a client sends (PATH_CHALLENGE goes the other way).
RELAY_BOUND = frozenset(
    {
        wire.DatagramType.DATA,
        wire.DatagramType.ACK,
        wire.DatagramType.PING,
        wire.DatagramType.PATH_RESPONSE,
    }
)
LEAVE_REASONS = {
    m.LeaveReason.QUIT: "quit",
    m.LeaveReason.TIMEOUT: "timed out",
    m.LeaveReason.DROPPED: "dropped",
}


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

    def __post_init__(self) -> None:
        if self.receive_budget < 0:
            raise ValueError("receive_budget cannot be negative")
        if not 0 < self.heartbeat < self.timeout:
            raise ValueError("need 0 < heartbeat < timeout")
        if self.timeout > 3600:
            raise ValueError("timeout is at most an hour")
        if self.max_members < 1 or self.history < 0 or self.join_history < 0:
            raise ValueError("max_members must be positive and history sizes not negative")
        if self.max_members_per_host < 1 or self.max_members_per_network < 1:
            raise ValueError("members per host and per network must be at least 1")


# --- what the relay reports to its operator (logged by the shell) ----------------------------


@dataclass(frozen=True, slots=True)
class MemberJoined:
    nick: str
    addr: Address
    resumed: bool


@dataclass(frozen=True, slots=True)
class MemberLeft:
    nick: str
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class MemberRenamed:
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


RelayEvent = MemberJoined | MemberLeft | MemberRenamed | MemberMoved | DatagramDropped


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


@dataclass(slots=True, eq=False)
class Member:
    token: bytes
    nick: str
    key: str
    addr: Address
    link: Link
    last_heard: float
    bucket: TokenBucket
    join: tuple[Address, bytes] | None  # (address, nonce) until the client is heard from
    accept: bytes  # the ACCEPT, sent again as is for a retransmitted JOIN
    resume_secret: bytes  # protocol.md 4.2: what a resume of this session must prove
    validated: bool = True
    received_unvalidated: int = 0
    sent_unvalidated: int = 0
    path_data: bytes | None = None
    scheduled: float = math.inf
    flood_told: bool = False  # the flood refusal of this burst was given in words
    list_told: bool = False  # likewise for a member list refused for want of credit
    oversized_answered: int = 0  # the link's oversized messages already answered as such
    # protocol.md 6.5: bytes of member lists the member may still be sent
    answer_credit: float = LIST_CREDIT_FACTOR * wire.MIN_INITIAL_SIZE


class RelayCore:
    """The room: one instance per relay process."""

    def __init__(
        self,
        config: RelayConfig,
        now: float,
        rng: Rng,
        wall_offset: float = 0.0,
        room_key: PskDeriver | None = None,
        static_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.stats = RelayStats()
        self._rng = rng
        self._wall_offset = wall_offset
        self._secret = rng(32)
        self.epoch = rng(wire.EPOCH_SIZE)
        # protocol.md 4: the relay's identity. The shell keeps it across restarts; without
        # one, the relay is a new identity (clients that pinned the old one refuse it).
        if static_key is None:
            static_key = rng(DHLEN)
        if len(static_key) != DHLEN:
            raise ValueError(f"a static key has {DHLEN} bytes, not {len(static_key)}")
        self._static_key = static_key
        self.relay_key = public_key(static_key)
        self._reset_secret = hs.reset_secret(static_key)
        # protocol.md 8: the psk is salted with the relay's public key; derived once, here.
        self._psk = room_key(self.relay_key) if room_key is not None else None
        self._link_config = replace(config.link, max_retransmissions=RELAY_LINK_TRANSMISSIONS)
        self.members: dict[bytes, Member] = {}
        self._by_nick: dict[str, Member] = {}
        self._by_join: dict[tuple[Address, bytes], Member] = {}
        self._join_buckets = BucketTable(
            config.handshake_rate, config.handshake_burst, config.max_sources, now
        )
        self._reply_buckets = BucketTable(
            config.reply_rate, config.reply_burst, config.max_sources, now
        )
        self._per_host: dict[str, int] = {}
        self._per_network: dict[str, int] = {}
        # msgid -> what it got: a room seq (SAY, ACTION) or (time, recipient) (PRIVATE_SEND)
        self._answered: dict[bytes, int | tuple[int, str]] = {}
        self._max_answered = max(config.history, MIN_REMEMBERED_IDS)
        self._timers: list[tuple[float, int, bytes]] = []
        self._timer_order = 0
        # Members with something to flush, in order; a new member goes first, so its
        # WELCOME is not queued behind the fan-out of its own JOINED.
        self._dirty: dict[Member, None] = {}
        self._used_joins: dict[tuple[Address, bytes], float] = {}
        self._members_cache: tuple[str, ...] | None = None
        # (data, excluded member, sole recipient): room events to all but one, and answers
        # to one member, which must not overtake events queued before them.
        self._fanout: deque[tuple[bytes, Member | None, Member | None]] = deque()
        self._hold_fanout = False
        self._draining = False
        self._closing: list[Member] = []
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[RelayEvent] = []
        self.room_seq = 0
        self._history: deque[tuple[int, bool, bytes]] = deque(maxlen=max(config.history, 1))
        self.shutting_down = False
        self._shutdown_deadline = math.inf
        # protocol.md 5.8: what all members' links may hold together of what they received.
        self.receive_budget = ReceiveBudget(config.receive_budget)

    # --- public API -------------------------------------------------------------------------

    def events(self) -> list[RelayEvent]:
        out, self._events = self._events, []
        return out

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram from ``addr``; garbage is counted and dropped, never raised."""
        if addr[1] == 0:  # protocol.md 3.1: no answer could ever reach it
            self.stats.from_port_zero += 1
            self._drop("from port 0", addr)
            return
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        try:
            datagram = wire.decode_datagram(data)
        except wire.UnsupportedVersion as exc:
            self._drop("unsupported version", addr)
            # protocol.md 3.1: in the requester's version, so that an older client can read
            # it (REJECT has had the same fields since version 1).
            version = exc.version if 0 < exc.version <= wire.MAX_VERSION else wire.PROTOCOL_VERSION
            self._refuse(
                data,
                wire.RejectCode.VERSION,
                f"this relay speaks udpchat protocol version {wire.PROTOCOL_VERSION}",
                addr,
                now,
                version,
            )
            return
        except wire.DecodeError as exc:
            self.stats.malformed += 1
            self._drop(f"malformed: {exc}", addr)
            return
        if isinstance(datagram, wire.Protected) and datagram.kind in RELAY_BOUND:
            self._on_session_datagram(datagram, len(data), addr, now)
        elif isinstance(datagram, (wire.Hello, wire.Join)):
            if len(data) < wire.MIN_INITIAL_SIZE:
                # protocol.md 4.1: unpadded, it could draw an answer larger than itself.
                self.stats.short_handshakes += 1
                self._drop(f"{type(datagram).__name__} shorter than {wire.MIN_INITIAL_SIZE}", addr)
            elif isinstance(datagram, wire.Hello):
                self._on_hello(datagram, addr, now)
            else:
                self._on_join(datagram, data, addr, now)
        else:
            self.stats.unexpected += 1
            name = datagram.kind.name if isinstance(datagram, wire.Protected) else None
            self._drop(f"unexpected {name or type(datagram).__name__}", addr)

    def datagrams_to_send(
        self, now: float, limit: int | None = None
    ) -> list[tuple[bytes, Address]]:
        """What to send now. With ``limit``, stop flushing members once that many datagrams
        are ready (call again until it returns fewer): the first ones can be on the wire
        while a big fan-out is still being encoded, and a new member, flushed first, gets
        its WELCOME without waiting for its JOINED to reach a thousand others."""
        out = self._out
        self._out = []
        dirty = self._dirty
        while dirty and (limit is None or len(out) < limit):
            member = next(iter(dirty))
            del dirty[member]
            self._flush(member, now, out)
            if member.token in self.members:
                self._reschedule(member)
        for member in self._closing:
            self._flush(member, now, out)
        self._closing.clear()
        if self._hold_fanout:  # the newcomer's first datagrams are in this batch: release
            self._hold_fanout = False
            self._drain_fanout()
        self.stats.datagrams_sent += len(out)
        self.stats.bytes_sent += sum(len(d) for d, _ in out)
        return out

    def next_timer(self) -> float | None:
        if self._dirty or self._fanout:
            return ASAP  # output is waiting for the next datagrams_to_send
        timers = self._timers
        while timers:
            deadline, _, token = timers[0]
            member = self.members.get(token)
            if member is not None and member.scheduled == deadline:
                return min(deadline, self._shutdown_deadline)
            heapq.heappop(timers)
        return None if math.isinf(self._shutdown_deadline) else self._shutdown_deadline

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, token = heapq.heappop(timers)
            member = self.members.get(token)
            if member is None or member.scheduled != deadline:
                continue
            member.scheduled = math.inf
            if now >= member.last_heard + self.config.timeout:  # same sum as _reschedule
                self._remove(member, m.LeaveReason.TIMEOUT, "timed out", now)
                continue
            member.link.handle_timer(now)
            if member.link.dead:
                self._remove(member, m.LeaveReason.DROPPED, "connection lost", now)
                continue
            self._dirty[member] = None
        if now >= self._shutdown_deadline:
            for member in list(self.members.values()):
                self._forget(member)

    def shutdown(self, reason: str, now: float) -> None:
        """Tell every member the relay is going away; ``closed`` once they acknowledged."""
        self.shutting_down = True
        self._shutdown_deadline = now + self.config.shutdown_grace
        notice = m.encode_message(m.Shutdown(reason))
        for member in self.members.values():
            self._deliver(member, notice)

    @property
    def closed(self) -> bool:
        """After ``shutdown``: every member acknowledged, or the grace period ran out."""
        return self.shutting_down and all(mb.link.idle for mb in self.members.values())

    def member_nicks(self) -> list[str]:
        return sorted(mb.nick for mb in self.members.values())

    # --- handshakes -------------------------------------------------------------------------

    def _refuse(
        self,
        data: bytes,
        code: wire.RejectCode,
        reason: str,
        addr: Address,
        now: float,
        version: int = wire.PROTOCOL_VERSION,
    ) -> None:
        """Answer a datagram of another version, or a JOIN whose handshake does not
        authenticate, with a REJECT bound to it (protocol.md 4): its nonce is the datagram's
        hash, which only whoever sent or saw the datagram knows. Only datagrams of handshake
        size get one, within the per-host reply budget, so that no answer is larger than its
        request and a flood of junk draws only a trickle."""
        if len(data) < wire.MIN_INITIAL_SIZE or not self._allow_handshake(addr, now):
            return
        self.stats.rejects += 1
        reject = wire.encode_reject(wire.request_hash(data), code, reason, version)
        self._out.append((reject, addr))

    def _allow_handshake(self, addr: Address, now: float) -> bool:
        """May we answer a datagram that proved nothing about its source (a RESET, a VERSION
        or BAD_KEY reject)? None is larger than what it answers; the budget per host only
        stops the relay from being a steady reflector."""
        if self._reply_buckets.take(host_key(addr[0]), now):
            return True
        self.stats.rate_limited += 1
        return False

    def _allow_join(self, addr: Address, now: float) -> bool:
        """A JOIN with a valid cookie: its source proved it receives our datagrams, so
        spoofed datagrams can never drain the bucket its host's own JOINs need."""
        if self._join_buckets.take(host_key(addr[0]), now):
            return True
        self.stats.rate_limited += 1
        return False

    def _cookie(self, nonce: bytes, addr: Address, issued_ms: int) -> bytes:
        issued = issued_ms.to_bytes(COOKIE_TIME_SIZE, "big")
        mac = hmac.new(
            self._secret, issued + nonce + f"{addr[0]}|{addr[1]}".encode(), hashlib.sha256
        ).digest()
        return issued + mac[:COOKIE_MAC_SIZE]

    def _issue_cookie(self, nonce: bytes, addr: Address, now: float) -> bytes:
        return self._cookie(nonce, addr, int(now * 1000) & 0xFFFFFFFF)

    def _cookie_age(self, cookie: bytes, nonce: bytes, addr: Address, now: float) -> float | None:
        """Seconds since the cookie was issued to ``addr``, or None if it is not ours."""
        if len(cookie) != COOKIE_TIME_SIZE + COOKIE_MAC_SIZE:
            return None
        issued_ms = int.from_bytes(cookie[:COOKIE_TIME_SIZE], "big")
        if not hmac.compare_digest(self._cookie(nonce, addr, issued_ms), cookie):
            return None
        age = ((int(now * 1000) - issued_ms) & 0xFFFFFFFF) / 1000
        return age if age <= self.config.cookie_lifetime else None

    def _on_hello(self, hello: wire.Hello, addr: Address, now: float) -> None:
        # No limit per source: a CHALLENGE is a thirtieth of the HELLO it answers and costs
        # one HMAC, so answering spoofed HELLOs harms nobody, and limiting them would let a
        # spoofer lock a victim's address out of the room.
        self.stats.handshakes += 1
        self._challenge(hello.nonce, addr, now)

    def _challenge(self, nonce: bytes, addr: Address, now: float) -> None:
        """CHALLENGE: the cookie, the relay's static public key (the client checks it and
        encrypts its JOIN to it), and whether the room needs a key."""
        cookie = self._issue_cookie(nonce, addr, now)
        keyed = self._psk is not None
        self._out.append((wire.encode_challenge(nonce, cookie, self.relay_key, keyed), addr))

    def _reject(self, nonce: bytes, code: wire.RejectCode, reason: str, addr: Address) -> None:
        self.stats.rejects += 1
        self._out.append((wire.encode_reject(nonce, code, reason), addr))

    def _on_join(self, join: wire.Join, data: bytes, addr: Address, now: float) -> None:
        age = self._cookie_age(join.cookie, join.nonce, addr, now)
        if age is None:
            self.stats.bad_cookies += 1  # answered like a HELLO, for the same reasons
            self._challenge(join.nonce, addr, now)
            return
        pending = self._by_join.get((addr, join.nonce))
        if pending is not None:  # our ACCEPT was lost: say it again, never a new handshake
            self._out.append((pending.accept, addr))
            return
        used_until = self._used_joins.get((addr, join.nonce))
        if used_until is not None and now < used_until:
            # A JOIN that already made a session, replayed within its cookie's lifetime.
            self.stats.replayed_joins += 1
            self._drop("replayed JOIN", addr)
            return
        if not self._allow_join(addr, now):
            self._reject(
                join.nonce,
                wire.RejectCode.TOO_MANY_ATTEMPTS,
                "too many join attempts from this address; try again later",
                addr,
            )
            return
        # protocol.md 4: the DH work, only now that the cookie has proved the address.
        try:
            responder, request = hs.read_join(self._static_key, join, self._psk)
        except NoiseError:
            self.stats.bad_key += 1
            self._drop("JOIN handshake does not authenticate: wrong room key", addr)
            self._refuse(data, wire.RejectCode.BAD_KEY, WRONG_KEY, addr, now)
            return
        except wire.DecodeError as exc:
            self.stats.malformed += 1
            self._drop(f"malformed JOIN payload: {exc}", addr)
            return
        if self.shutting_down:
            self._reject(
                join.nonce, wire.RejectCode.SHUTTING_DOWN, "the relay is shutting down", addr
            )
            return
        problem = nick_error(request.nick)
        if problem is not None:
            self._reject(join.nonce, wire.RejectCode.NICK_INVALID, problem, addr)
            return
        old = None
        resume = request.resume
        if resume is not None and resume.epoch == self.epoch:
            candidate = self.members.get(resume.token)
            # protocol.md 4.2: the token and epoch are no secret on the path; only the
            # holder of the old session's keys can make the proof.
            if candidate is not None and hmac.compare_digest(
                hs.resume_proof(candidate.resume_secret, join.nonce), resume.proof
            ):
                old = candidate
        key = nick_key(request.nick)
        holder = self._by_nick.get(key)
        if holder is not None and holder is not old:
            self._reject(
                join.nonce,
                wire.RejectCode.NICK_TAKEN,
                f"the nickname {request.nick} is taken",
                addr,
            )
            return
        if old is None and len(self.members) >= self.config.max_members:
            self._reject(join.nonce, wire.RejectCode.RELAY_FULL, "the relay is full", addr)
            return
        crowd = self._crowding(addr, old)
        if crowd is not None:
            self.stats.network_full += 1
            self._reject(join.nonce, wire.RejectCode.RELAY_FULL, crowd, addr)
            return
        self._admit(join.nonce, request, responder, key, addr, old, age, now)

    def _crowding(self, addr: Address, old: Member | None) -> str | None:
        """Why ``addr``'s host or network may not have one more member, or None."""
        host, network = address_key(addr[0]), prefix_key(addr[0])
        old_host = old_network = None
        if old is not None:
            old_host, old_network = address_key(old.addr[0]), prefix_key(old.addr[0])
        hosted = self._per_host.get(host, 0) - (old_host == host)
        if hosted >= self.config.max_members_per_host:
            return f"the room is full for your address ({self.config.max_members_per_host} members)"
        networked = self._per_network.get(network, 0) - (old_network == network)
        if networked >= self.config.max_members_per_network:
            return (
                f"the room is full for your network ({self.config.max_members_per_network} members)"
            )
        return None

    def _count_address(self, addr: Address, step: int) -> None:
        for table, key in (
            (self._per_host, address_key(addr[0])),
            (self._per_network, prefix_key(addr[0])),
        ):
            count = table.get(key, 0) + step
            if count > 0:
                table[key] = count
            else:
                table.pop(key, None)

    def _admit(
        self,
        nonce: bytes,
        join: wire.JoinPayload,
        responder: hs.Responder,
        key: str,
        addr: Address,
        old: Member | None,
        rtt: float,
        now: float,
    ) -> None:
        token = self._rng(wire.TOKEN_SIZE)
        while token in self.members:
            token = self._rng(wire.TOKEN_SIZE)
        accept, keys = hs.accept(
            responder,
            nonce,
            token,
            wire.AcceptPayload(
                self.epoch,
                int(self.config.heartbeat * 1000),
                int(self.config.timeout * 1000),
                hs.reset_token(self._reset_secret, token),
            ),
            self._rng(DHLEN),
            padded=self._psk is not None,
        )
        resumed = 0
        if old is not None:
            resumed = old.link.stats.messages_delivered
            self._forget(old)
        config = self.config
        member = Member(
            token=token,
            nick=join.nick,
            key=key,
            addr=addr,
            link=Link(
                token,
                self._link_config,
                rtt_hint=max(rtt, 0.0001),
                keys=keys,
                budget=self.receive_budget,
            ),
            last_heard=now,
            # a resume is the same person: it keeps its flood bucket (protocol.md 4.2, 6.5)
            bucket=old.bucket
            if old is not None
            else TokenBucket(config.flood_rate, config.flood_burst, updated=now),
            join=(addr, nonce),
            accept=accept,
            resume_secret=hs.resume_secret(keys.receive),
        )
        self.members[token] = member
        self._count_address(addr, +1)
        self._by_nick[key] = member
        self._by_join[(addr, nonce)] = member
        self._remember_join((addr, nonce), now)
        self._members_cache = None
        self._out.append((accept, addr))
        self._events.append(MemberJoined(join.nick, addr, old is not None))
        members = self._member_list()
        first = self._history[0][0] if self._history else self.room_seq + 1
        self._deliver(
            member, m.encode_message(m.Welcome(join.nick, members, self.room_seq, first, resumed))
        )
        resume = join.resume
        if resume is not None and resume.epoch == self.epoch:
            backlog = [data for seq, _, data in self._history if seq > resume.last_seq]
        else:
            chats = [data for _, chat, data in self._history if chat]
            backlog = chats[-config.join_history :] if config.join_history else []
        # Newest first until half the send buffer is used: a gap, if any, is at the start,
        # where the client can see it.
        budget = config.link.send_buffer // 2
        kept: list[bytes] = []
        for data in reversed(backlog):
            budget -= len(data)
            if budget < 0:
                break
            kept.append(data)
        for data in reversed(kept):
            self._deliver(member, data)
        if old is None:
            # Held until the next datagrams_to_send has taken the newcomer's ACCEPT and
            # WELCOME: in a big room, queueing JOINED for everyone takes milliseconds.
            self._hold_fanout = True
            self._post(m.Joined(self._next_seq(), self._time(now), join.nick), member, chat=False)
        elif old.nick != join.nick:
            self._post(
                m.NickChanged(self._next_seq(), self._time(now), old.nick, join.nick),
                None,
                chat=False,
            )
        self._dirty = {member: None, **self._dirty}
        self._reschedule(member)

    def _remember_join(self, key: tuple[Address, bytes], now: float) -> None:
        """Keep used (address, nonce) pairs for as long as their cookie could be valid."""
        used = self._used_joins
        while used:
            oldest = next(iter(used))
            if used[oldest] > now and len(used) < MAX_USED_JOINS:
                break
            del used[oldest]
        used[key] = now + self.config.cookie_lifetime

    def _member_list(self) -> tuple[str, ...]:
        """The sorted member list for WELCOME and MEMBERS, rebuilt only when it changed."""
        if self._members_cache is None:
            self._members_cache = self._members_fitting([mb.nick for mb in self.members.values()])
        return self._members_cache

    @staticmethod
    def _members_fitting(nicks: list[str]) -> tuple[str, ...]:
        """As many nicknames as fit in one message (a huge room lists a prefix)."""
        nicks = sorted(nicks)[: m.MAX_MEMBERS_LISTED]
        budget = m.MAX_MESSAGE_SIZE - 256
        out: list[str] = []
        for nick in nicks:
            budget -= len(nick.encode()) + 3
            if budget < 0:
                break
            out.append(nick)
        return tuple(out)

    # --- sessions ---------------------------------------------------------------------------

    def _on_session_datagram(
        self, envelope: wire.Protected, size: int, addr: Address, now: float
    ) -> None:
        member = self.members.get(envelope.token)
        if member is None:
            self.stats.unknown_session += 1
            self._drop("unknown session", addr)
            if size >= RESET_SIZE and self._allow_handshake(addr, now):
                # protocol.md 7.2: a stateless reset, provable by this identity only.
                self.stats.resets += 1
                proof = hs.reset_token(self._reset_secret, envelope.token)
                self._out.append((wire.encode_reset(envelope.token, proof), addr))
            return
        # protocol.md 8: nothing that fails to authenticate is looked at any further; in
        # particular it never moves the session or marks its packet number as seen.
        datagram = member.link.open(envelope)
        if datagram is None:
            self.stats.auth_failures += 1
            self._drop("session datagram does not authenticate", addr)
            return
        highest = member.link.highest_pn
        delivered = member.link.receive(datagram, now)
        if delivered is None:
            self.stats.rejected_by_link += 1
            self._drop("replayed or impossible", addr)
            return
        member.link.count_received(size)
        member.last_heard = now
        member.answer_credit = min(
            member.answer_credit + LIST_CREDIT_FACTOR * size, MAX_ANSWER_CREDIT
        )
        if member.join is not None:
            self._by_join.pop(member.join, None)
            member.join = None
        if addr != member.addr and datagram.pn > highest:
            self._move(member, addr)  # only the newest datagram may move a session
        if not member.validated and addr == member.addr:
            member.received_unvalidated += size
            if isinstance(datagram, wire.PathResponse) and datagram.data == member.path_data:
                member.validated = True
                member.path_data = None
            elif member.path_data is not None:
                self._challenge_path(member)
        for data in delivered:
            self._on_message(member, data, now)
            if member.token not in self.members:
                break  # it quit
        if member.token in self.members:
            self._dirty[member] = None

    def _move(self, member: Member, addr: Address) -> None:
        self._events.append(MemberMoved(member.nick, member.addr, addr))
        self._count_address(member.addr, -1)
        self._count_address(addr, +1)
        member.addr = addr
        member.validated = False
        member.received_unvalidated = 0
        member.sent_unvalidated = 0
        member.path_data = self._rng(wire.PATH_DATA_SIZE)

    def _challenge_path(self, member: Member) -> None:
        assert member.path_data is not None
        datagram = member.link.encode_path(wire.PathChallenge, member.path_data)
        member.sent_unvalidated += len(datagram)
        self._out.append((datagram, member.addr))

    def _flush(self, member: Member, now: float, out: list[tuple[bytes, Address]]) -> None:
        if member.validated:
            for datagram in member.link.datagrams_to_send(now):
                out.append((datagram, member.addr))
            return
        budget = AMPLIFICATION_FACTOR * member.received_unvalidated - member.sent_unvalidated
        if budget <= 0:
            self.stats.amplification_held += 1
            return
        for datagram in member.link.datagrams_to_send(now):
            size = len(datagram)
            if size > budget:
                self.stats.amplification_held += 1
                continue  # counts as lost; retransmitted once the address is validated
            budget -= size
            member.sent_unvalidated += size
            out.append((datagram, member.addr))

    def _reschedule(self, member: Member) -> None:
        expiry = member.last_heard + self.config.timeout
        link_timer = member.link.next_timer()
        blocked = not member.validated and (
            AMPLIFICATION_FACTOR * member.received_unvalidated <= member.sent_unvalidated
        )
        deadline = expiry if link_timer is None or blocked else min(link_timer, expiry)
        if deadline < member.scheduled:
            member.scheduled = deadline
            self._timer_order += 1
            heapq.heappush(self._timers, (deadline, self._timer_order, member.token))

    # --- the room ---------------------------------------------------------------------------

    def _time(self, now: float) -> int:
        return min(max(int(now + self._wall_offset), 0), m.MAX_TIME)

    def _next_seq(self) -> int:
        self.room_seq += 1
        return self.room_seq

    def _deliver(self, member: Member, data: bytes) -> bool:
        try:
            member.link.send(data)
        except SendBufferFull:
            return False
        self.stats.deliveries += 1
        self._dirty[member] = None
        return True

    def _post(self, event: m.RoomEvent, exclude: Member | None, chat: bool) -> None:
        """Append a room event to the history and fan it out to every member but one.

        Fan-outs go through one FIFO so that room order holds even while one is held back
        (a newcomer's JOINED waits until its WELCOME is on its way)."""
        data = m.encode_message(event)
        if self.config.history:
            self._history.append((event.seq, chat, data))
        self._fanout.append((data, exclude, None))
        if not self._hold_fanout:
            self._drain_fanout()

    def _drain_fanout(self) -> None:
        if self._draining:
            return  # a LEFT posted while draining joins the queue behind the current event
        self._draining = True
        try:
            while self._fanout:
                data, exclude, only = self._fanout.popleft()
                if only is not None:
                    recipients = [only] if only.token in self.members else []
                else:
                    recipients = [mb for mb in self.members.values() if mb is not exclude]
                laggards = [mb for mb in recipients if not self._deliver(mb, data)]
                for member in laggards:
                    if member.token in self.members:
                        self._remove(member, m.LeaveReason.DROPPED, "could not keep up", None)
        finally:
            self._draining = False

    def _on_message(self, member: Member, data: bytes, now: float) -> None:
        try:
            message = m.decode_message(data)
        except wire.DecodeError as exc:
            self.stats.bad_messages += 1
            self._drop(f"bad message: {exc}", member.addr)
            self._answer_undecodable(member, data, exc, now)
            return
        if isinstance(message, (m.Say, m.Action)):
            problem = self._flood(member, now)
            earlier = self._answered.get(message.msgid) if message.msgid else None
            if problem is None and isinstance(earlier, int):  # resent: posted already
                self.stats.resent_requests += 1
                self._answer(member, m.Posted(earlier))
                return
            if problem is None:
                problem = m.text_error(message.text)
            if problem is not None:
                self._answer(member, m.Refused(problem))
                return
            seq = self._next_seq()
            event: m.RoomEvent
            if isinstance(message, m.Say):
                event = m.ChatMessage(seq, self._time(now), member.nick, message.text)
            else:
                event = m.ActionMessage(seq, self._time(now), member.nick, message.text)
            if self._answer(member, m.Posted(seq)):
                self._remember(message.msgid, seq)
                self._post(event, member, chat=True)
        elif isinstance(message, m.PrivateSend):
            self._private(member, message, now)
        elif isinstance(message, m.NickRequest):
            problem = self._flood(member, now)
            if problem is not None:
                self._answer(member, m.Error(problem))
            else:
                self._rename(member, message.nick, now)
        elif isinstance(message, m.Who):
            problem = self._flood(member, now)
            if problem is None:
                self._answer_who(member)
            else:
                self._answer(member, m.Error(problem))
        elif isinstance(message, m.Quit):
            self._remove(member, m.LeaveReason.QUIT, message.reason, now)
            member.link.acknowledge_now()  # before the session is forgotten
            self._closing.append(member)
        else:
            self.stats.bad_messages += 1
            self._drop(f"a client may not send {type(message).__name__}", member.addr)

    def _answer_undecodable(
        self, member: Member, data: bytes, exc: wire.DecodeError, now: float
    ) -> None:
        """protocol.md 6.1: a request gets its one answer even when it cannot be read (too
        long, or a field out of range), or a client counting answers would pair every later
        one with the wrong request."""
        kind = m.peek_kind(data)
        if kind not in m.ANSWERED_KINDS:
            return  # not a request that is answered (or not one at all)
        oversized = member.link.stats.oversized > member.oversized_answered
        member.oversized_answered = member.link.stats.oversized
        flood = self._flood(member, now)  # charged first, like every request (6.5)
        if flood is not None:
            reason = flood
        elif oversized or len(data) > m.MAX_TEXT_BYTES:
            reason = f"message too long: the limit is {m.MAX_TEXT_BYTES} bytes of UTF-8"
        else:
            reason = f"the relay could not read this request ({exc})"
        if kind in (m.MessageKind.SAY, m.MessageKind.ACTION):
            self._answer(member, m.Refused(reason[: wire.MAX_REASON_BYTES // 4]))
        else:
            self._answer(member, m.Error(reason[: wire.MAX_REASON_BYTES // 4]))

    def _answer_who(self, member: Member) -> None:
        """MEMBERS, if the member has sent enough to earn it: a tiny WHO must not buy a big
        list over and over (protocol.md 6.5)."""
        listed = self._member_list()
        cost = sum(len(nick.encode()) + 1 for nick in listed) + LIST_OVERHEAD
        if cost > member.answer_credit:
            self.stats.flood_refused += 1
            reason = "" if member.list_told else "too many member lists; try again in a moment"
            member.list_told = True
            self._answer(member, m.Error(reason))
            return
        member.list_told = False
        member.answer_credit -= cost
        self._answer(member, m.Members(listed))

    def _remember(self, msgid: bytes, answer: int | tuple[int, str]) -> None:
        """Keep what a request with a message id got, for a copy resent after a rejoin."""
        if not msgid:
            return
        answered = self._answered
        while len(answered) >= self._max_answered:
            del answered[next(iter(answered))]
        answered[msgid] = answer

    def _answer(self, member: Member, message: m.RelayMessage) -> bool:
        """Send a member the answer to its request; a member whose queue cannot take even
        that is dropped, since answers matched by counting would otherwise go astray."""
        data = m.encode_message(message)
        if self._fanout:  # events are held: the answer queues behind them, in room order
            self._fanout.append((data, None, member))
            return True
        if self._deliver(member, data):
            return True
        if member.token in self.members:
            self._remove(member, m.LeaveReason.DROPPED, "could not keep up", None)
        return False

    def _flood(self, member: Member, now: float) -> str | None:
        """None if the request may go ahead; else its refusal. protocol.md 6.5: only the first
        refusal of a burst says why; the rest are empty, so that refusals can never make the
        relay send a member much more than it sent."""
        if member.bucket.take(now):
            member.flood_told = False
            return None
        self.stats.flood_refused += 1
        if member.flood_told:
            return ""
        member.flood_told = True
        return (
            f"flood control: at most {self.config.flood_burst} messages at once, "
            f"then {self.config.flood_rate:g} a second; this one was not delivered"
        )

    def _private(self, member: Member, message: m.PrivateSend, now: float) -> None:
        problem = self._flood(member, now)
        earlier = self._answered.get(message.msgid) if message.msgid else None
        if problem is None and isinstance(earlier, tuple):  # resent: delivered already
            self.stats.resent_requests += 1
            when, to = earlier
            self._answer(member, m.Private(when, member.nick, to, message.text))
            return
        target = self._by_nick.get(nick_key(message.to))
        if problem is None:
            problem = m.text_error(message.text)
        if problem is None and target is None:
            problem = f"no such nickname: {message.to}"
        if problem is not None or target is None:
            self._answer(member, m.Error(problem or ""))
            return
        private = m.Private(self._time(now), member.nick, target.nick, message.text)
        if target is not member and not self._deliver(target, m.encode_message(private)):
            self._remove(target, m.LeaveReason.DROPPED, "could not keep up", None)
            self._answer(member, m.Error(f"{target.nick} could not take the message"))
            return
        self._remember(message.msgid, (private.time, private.to))
        self._answer(member, private)

    def _rename(self, member: Member, nick: str, now: float) -> None:
        problem = nick_error(nick)
        key = nick_key(nick) if problem is None else ""
        holder = self._by_nick.get(key)
        if problem is None and holder is not None and holder is not member:
            problem = f"the nickname {nick} is taken"
        if problem is None and nick == member.nick:
            problem = f"you are already {nick}"
        if problem is not None:
            self._answer(member, m.Error(problem))
            return
        old = member.nick
        del self._by_nick[member.key]
        member.nick, member.key = nick, key
        self._by_nick[key] = member
        self._members_cache = None
        self._events.append(MemberRenamed(old, nick))
        self._post(m.NickChanged(self._next_seq(), self._time(now), old, nick), None, chat=False)

    def _forget(self, member: Member) -> None:
        """Drop a session from every table, without telling anyone."""
        if self.members.pop(member.token, None) is not None:
            self._count_address(member.addr, -1)
        self._members_cache = None
        if self._by_nick.get(member.key) is member:
            del self._by_nick[member.key]
        if member.join is not None:
            self._by_join.pop(member.join, None)
        self._dirty.pop(member, None)
        member.link.release_buffers()  # its bytes go back to the shared receive budget

    def _remove(self, member: Member, reason: m.LeaveReason, text: str, now: float | None) -> None:
        self._forget(member)
        self._events.append(MemberLeft(member.nick, LEAVE_REASONS[reason], text))
        when = self._time(now) if now is not None else self._time(member.last_heard)
        self._post(m.Left(self._next_seq(), when, member.nick, reason, text), None, chat=False)

    def _drop(self, reason: str, addr: Address) -> None:
        if len(self._events) < MAX_PENDING_EVENTS:  # a flood must not grow memory
            self._events.append(DatagramDropped(reason, addr))
