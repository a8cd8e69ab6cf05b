"""The relay's protocol logic, sans I/O: handshakes, membership, the room and its fan-out.

``RelayCore`` takes datagrams with their source address and ``now``, and hands back datagrams
to send with their destination. It keeps members by session token, not by address; timers
live in a heap so that idle members cost nothing between their own deadlines (no polling of
every member on every tick). protocol.md sections 4 to 7 describe what it implements.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from udpchat import messages as m
from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.names import nick_error, nick_key
from udpchat.ratelimit import TokenBucket
from udpchat.reliability import ASAP, Link, LinkConfig, SendBufferFull
from udpchat.seal import SEAL_OVERHEAD, Sealer, SealError

Address = tuple[str, int]
Rng = Callable[[int], bytes]

# protocol.md 4: cookies carry 4 bytes of issue time (ms) and 16 bytes of HMAC.
COOKIE_TIME_SIZE = 4
COOKIE_MAC_SIZE = 16
# RFC 9000 section 8: at most three times the bytes received, before validation.
AMPLIFICATION_FACTOR = 3
MAX_PENDING_EVENTS = 10_000
# Used JOIN nonces remembered against replays; a full table forgets the oldest early.
MAX_USED_JOINS = 65_536
RESET_SIZE = len(wire.encode_reset(bytes(wire.TOKEN_SIZE)))
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
    handshake_burst: int = 20
    handshake_rate: float = 5.0
    max_sources: int = 4096
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
    short_handshakes: int = 0
    replayed_joins: int = 0


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
    validated: bool = True
    received_unvalidated: int = 0
    sent_unvalidated: int = 0
    path_data: bytes | None = None
    scheduled: float = math.inf


class RelayCore:
    """The room: one instance per relay process."""

    def __init__(
        self,
        config: RelayConfig,
        now: float,
        rng: Rng,
        wall_offset: float = 0.0,
        sealer: Sealer | None = None,
    ) -> None:
        self.config = config
        self.stats = RelayStats()
        self._rng = rng
        self._wall_offset = wall_offset
        self._sealer = sealer
        # Sealing adds SEAL_OVERHEAD bytes: links build smaller datagrams so sealed ones fit.
        self._link_config = config.link
        if sealer is not None:
            limit = wire.MAX_DATAGRAM_SIZE - SEAL_OVERHEAD
            self._link_config = replace(
                config.link, max_datagram=min(config.link.max_datagram, limit)
            )
        self._secret = rng(32)
        self.epoch = rng(wire.EPOCH_SIZE)
        self.members: dict[bytes, Member] = {}
        self._by_nick: dict[str, Member] = {}
        self._by_join: dict[tuple[Address, bytes], Member] = {}
        self._sources: dict[str, TokenBucket] = {}
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
        self._out_plain: list[tuple[bytes, Address]] = []
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
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        plain = self._unseal(data, addr, now)
        if plain is None:
            return
        try:
            datagram = wire.decode_datagram(plain)
        except wire.UnsupportedVersion:
            self._drop("unsupported version", addr)
            if len(data) >= wire.MIN_INITIAL_SIZE:
                self._reject(
                    b"",
                    wire.RejectCode.VERSION,
                    f"this relay speaks udpchat protocol version {wire.PROTOCOL_VERSION}",
                    addr,
                )
            return
        except wire.DecodeError as exc:
            self.stats.malformed += 1
            self._drop(f"malformed: {exc}", addr)
            return
        if isinstance(datagram, (wire.Data, wire.Ack, wire.Ping, wire.PathResponse)):
            self._on_session_datagram(datagram, len(data), addr, now)
        elif isinstance(datagram, (wire.Hello, wire.Join)):
            if len(data) < wire.MIN_INITIAL_SIZE:
                # protocol.md 4.1: unpadded, it could draw an answer larger than itself.
                self.stats.short_handshakes += 1
                self._drop(f"{type(datagram).__name__} shorter than {wire.MIN_INITIAL_SIZE}", addr)
            elif isinstance(datagram, wire.Hello):
                self._on_hello(datagram, addr, now)
            else:
                self._on_join(datagram, addr, now)
        else:
            self.stats.unexpected += 1
            self._drop(f"unexpected {type(datagram).__name__}", addr)

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
        if self._sealer is not None:
            out = [(self._sealer.seal(d), a) for d, a in out]
        if self._out_plain:
            out.extend(self._out_plain)
            self._out_plain = []
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

    # --- sealing and handshakes -------------------------------------------------------------

    def _unseal(self, data: bytes, addr: Address, now: float) -> bytes | None:
        if self._sealer is None:
            return data
        try:
            return self._sealer.open(data)
        except SealError:
            self.stats.bad_key += 1
            self._drop("not sealed with the room key", addr)
            if len(data) >= wire.MIN_INITIAL_SIZE and self._allow_handshake(addr, now):
                # Unsealed, so that a client with another key can read it (protocol.md 8).
                self.stats.rejects += 1
                self._out_plain.append(
                    (
                        wire.encode_reject(
                            b"", wire.RejectCode.BAD_KEY, "the relay does not answer this room key"
                        ),
                        addr,
                    )
                )
            return None

    def _allow_handshake(self, addr: Address, now: float) -> bool:
        host = addr[0]
        bucket = self._sources.get(host)
        if bucket is None:
            if len(self._sources) >= self.config.max_sources:
                del self._sources[next(iter(self._sources))]
            bucket = TokenBucket(
                self.config.handshake_rate, self.config.handshake_burst, updated=now
            )
            self._sources[host] = bucket
        if bucket.take(now):
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
        if not self._allow_handshake(addr, now):
            return
        self.stats.handshakes += 1
        self._out.append(
            (wire.encode_challenge(hello.nonce, self._issue_cookie(hello.nonce, addr, now)), addr)
        )

    def _reject(self, nonce: bytes, code: wire.RejectCode, reason: str, addr: Address) -> None:
        self.stats.rejects += 1
        self._out.append((wire.encode_reject(nonce, code, reason), addr))

    def _on_join(self, join: wire.Join, addr: Address, now: float) -> None:
        age = self._cookie_age(join.cookie, join.nonce, addr, now)
        if age is None:
            self.stats.bad_cookies += 1
            if self._allow_handshake(addr, now):
                cookie = self._issue_cookie(join.nonce, addr, now)
                self._out.append((wire.encode_challenge(join.nonce, cookie), addr))
            return
        pending = self._by_join.get((addr, join.nonce))
        if pending is not None:  # our ACCEPT was lost: say it again
            self._out.append((self._accept(pending, join.nonce), addr))
            return
        used_until = self._used_joins.get((addr, join.nonce))
        if used_until is not None and now < used_until:
            # A JOIN that already made a session, replayed within its cookie's lifetime.
            self.stats.replayed_joins += 1
            self._drop("replayed JOIN", addr)
            return
        if not self._allow_handshake(addr, now):
            self._reject(
                join.nonce,
                wire.RejectCode.TOO_MANY_ATTEMPTS,
                "too many join attempts from this address; try again later",
                addr,
            )
            return
        if self.shutting_down:
            self._reject(
                join.nonce, wire.RejectCode.SHUTTING_DOWN, "the relay is shutting down", addr
            )
            return
        problem = nick_error(join.nick)
        if problem is not None:
            self._reject(join.nonce, wire.RejectCode.NICK_INVALID, problem, addr)
            return
        old = None
        resume = join.resume
        if resume is not None and resume.epoch == self.epoch:
            old = self.members.get(resume.token)
        key = nick_key(join.nick)
        holder = self._by_nick.get(key)
        if holder is not None and holder is not old:
            self._reject(
                join.nonce, wire.RejectCode.NICK_TAKEN, f"the nickname {join.nick} is taken", addr
            )
            return
        if old is None and len(self.members) >= self.config.max_members:
            self._reject(join.nonce, wire.RejectCode.RELAY_FULL, "the relay is full", addr)
            return
        self._admit(join, key, addr, old, age, now)

    def _admit(
        self, join: wire.Join, key: str, addr: Address, old: Member | None, rtt: float, now: float
    ) -> None:
        token = self._rng(wire.TOKEN_SIZE)
        while token in self.members:
            token = self._rng(wire.TOKEN_SIZE)
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
                token, self._link_config, rtt_hint=max(rtt, 0.0001), budget=self.receive_budget
            ),
            last_heard=now,
            # a resume is the same person: it keeps its flood bucket (protocol.md 4.2, 6.5)
            bucket=old.bucket
            if old is not None
            else TokenBucket(config.flood_rate, config.flood_burst, updated=now),
            join=(addr, join.nonce),
        )
        self.members[token] = member
        self._by_nick[key] = member
        self._by_join[(addr, join.nonce)] = member
        self._remember_join((addr, join.nonce), now)
        self._members_cache = None
        self._out.append((self._accept(member, join.nonce), addr))
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
            backlog = chats[len(chats) - config.join_history :] if config.join_history else []
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

    def _accept(self, member: Member, nonce: bytes) -> bytes:
        return wire.encode_accept(
            wire.Accept(
                nonce,
                member.token,
                self.epoch,
                int(self.config.heartbeat * 1000),
                int(self.config.timeout * 1000),
            )
        )

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
        self, datagram: wire.SessionDatagram, size: int, addr: Address, now: float
    ) -> None:
        member = self.members.get(datagram.token)
        if member is None:
            self.stats.unknown_session += 1
            self._drop("unknown session", addr)
            if size >= RESET_SIZE:
                self.stats.resets += 1
                self._out.append((wire.encode_reset(datagram.token), addr))
            return
        highest = member.link.highest_pn
        delivered = member.link.receive(datagram, now)
        if delivered is None:
            self.stats.rejected_by_link += 1
            self._drop("replayed or impossible", addr)
            return
        member.link.count_received(size)
        member.last_heard = now
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
            if len(datagram) > budget:
                self.stats.amplification_held += 1
                continue  # counts as lost; retransmitted once the address is validated
            budget -= len(datagram)
            member.sent_unvalidated += len(datagram)
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
            return
        if isinstance(message, (m.Say, m.Action)):
            problem = m.text_error(message.text) or self._flood(member, now)
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
            self._answer(member, m.Error(problem) if problem else m.Members(self._member_list()))
        elif isinstance(message, m.Quit):
            self._remove(member, m.LeaveReason.QUIT, message.reason, now)
            member.link.acknowledge_now()  # before the session is forgotten
            self._closing.append(member)
        else:
            self.stats.bad_messages += 1
            self._drop(f"a client may not send {type(message).__name__}", member.addr)

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
        if member.bucket.take(now):
            return None
        self.stats.flood_refused += 1
        return (
            f"flood control: at most {self.config.flood_burst} messages at once, "
            f"then {self.config.flood_rate:g} a second; this one was not delivered"
        )

    def _private(self, member: Member, message: m.PrivateSend, now: float) -> None:
        target = self._by_nick.get(nick_key(message.to))
        problem = (
            m.text_error(message.text)
            or (None if target is not None else f"no such nickname: {message.to}")
            or self._flood(member, now)
        )
        if problem is not None or target is None:
            self._answer(member, m.Error(problem or ""))
            return
        private = m.Private(self._time(now), member.nick, target.nick, message.text)
        if target is not member and not self._deliver(target, m.encode_message(private)):
            self._remove(target, m.LeaveReason.DROPPED, "could not keep up", None)
            self._answer(member, m.Error(f"{target.nick} could not take the message"))
            return
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
        self.members.pop(member.token, None)
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
