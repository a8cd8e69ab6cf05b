"""The relay's coordinator, sans I/O: datagrams and time in, datagrams and reports out.

``RelayCore`` takes datagrams with their source address and ``now``, and hands back datagrams
to send with their destination (``udpchat.endpoint.Endpoint``). It reads the envelope and
passes each datagram to the part that owns it: handshakes to the gate, session datagrams
(after their member's link has authenticated them) to path validation and then, message by
message, to the room. protocol.md sections 4 to 8 describe what it implements: every session
is a Noise handshake (udpchat.handshake) with the relay's static key, injected like the
random source, and every session datagram is sealed by its member's link. Nothing here
touches a socket, a thread, a clock or an unseeded random source.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.endpoint import Address
from udpchat.link import ASAP
from udpchat.names import nick_key
from udpchat.noise import DHLEN
from udpchat.relay.cluster import Cluster
from udpchat.relay.config import RelayConfig, RelayStats
from udpchat.relay.events import RelayEvent
from udpchat.relay.gate import Gate
from udpchat.relay.outbox import Outbox
from udpchat.relay.paths import Paths
from udpchat.relay.room import Room
from udpchat.relay.room_log import MemoryRoomLog, RoomLog
from udpchat.relay.sessions import Dormant, Member, MemberState, SessionTable
from udpchat.relay.shared_log import LogUnavailable, SharedLog
from udpchat.seal import PskDeriver

__all__ = ["RELAY_BOUND", "RelayCore", "Rng"]

Rng = Callable[[int], bytes]

# Session datagrams a client sends (PATH_CHALLENGE goes the other way).
RELAY_BOUND = frozenset(
    {
        wire.DatagramType.DATA,
        wire.DatagramType.ACK,
        wire.DatagramType.PING,
        wire.DatagramType.PATH_RESPONSE,
    }
)


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
        room_log: RoomLog | None = None,
    ) -> None:
        self.config = config
        self.stats = RelayStats()
        # The injected random source is drawn from in this order: the cookie secret, the
        # log's epoch, the static key (when none is given).
        secret = rng(32)
        self.log: RoomLog = room_log if room_log is not None else MemoryRoomLog(config.history, rng)
        # protocol.md 4: the relay's identity. The shell keeps it across restarts; without
        # one, the relay is a new identity (clients that pinned the old one refuse it).
        if static_key is None:
            static_key = rng(DHLEN)
        self.outbox = Outbox()
        # protocol.md 5.8: what all members' links may hold together of what they received.
        self.receive_budget = ReceiveBudget(config.receive_budget)
        self.sessions = SessionTable(config.timeout)
        self.paths = Paths(self.stats, self.outbox, self.sessions, rng)
        self.gate = Gate(
            config,
            self.stats,
            self.outbox,
            self.sessions,
            self.log,
            rng,
            secret,
            static_key,
            room_key,
            self.receive_budget,
            now,
        )
        self.room = Room(config, self.stats, self.outbox, self.sessions, self.log, wall_offset)
        # A held fan-out's newcomer datagrams were taken by the last datagrams_to_send.
        self._held_taken = False
        # protocol.md 6.8: a log other relays share makes this relay one of the room's.
        self.cluster: Cluster | None = None
        if isinstance(self.log, SharedLog):
            self.cluster = Cluster(self.room, self.log, hs.reset_secret(static_key))
            self.cluster.now = now
            self.room.cluster = self.gate.cluster = self.cluster
        # protocol.md 6.6: the members of a room kept across a restart hold their nicknames
        # and may resume their places for one member timeout from now.
        for kept in self.log.kept_members():
            self.sessions.add_dormant(
                Dormant(
                    kept.token,
                    kept.nick,
                    nick_key(kept.nick),
                    kept.resume_secret,
                    now + config.timeout,
                )
            )
        self.shutting_down = False
        self._shutdown_deadline = math.inf
        self._now = now  # the latest time the shell gave: next_timer's horizon

    @property
    def relay_key(self) -> bytes:
        return self.gate.relay_key

    @property
    def epoch(self) -> bytes:
        return self.log.epoch

    @property
    def room_seq(self) -> int:
        """The newest room event's number (in a shared room, the newest sent here)."""
        return self.log.last_seq if self.cluster is None else self.cluster.seq

    @property
    def members(self) -> dict[bytes, Member]:
        return self.sessions.members

    # --- the Endpoint -----------------------------------------------------------------------

    def events(self) -> list[RelayEvent]:
        return self.outbox.take_events()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram from ``addr``; garbage is counted and dropped, never raised."""
        self._release_taken_hold()
        if self.cluster is not None:  # a store that lost the room: that comes first
            self.cluster.now = now
            self.cluster.check_epoch()
        self._now = now
        if addr[1] == 0:  # protocol.md 3.1: no answer could ever reach it
            self.stats.from_port_zero += 1
            self.outbox.drop("from port 0", addr)
            return
        size = len(data)
        self.stats.datagrams_received += 1
        self.stats.bytes_received += size
        try:
            datagram = wire.decode_datagram(data)
        except wire.UnsupportedVersion as exc:
            self.outbox.drop("unsupported version", addr)
            # protocol.md 3.1: in the requester's version, so that an older client can read
            # it (REJECT has had the same fields since version 1).
            version = exc.version if 0 < exc.version <= wire.MAX_VERSION else wire.PROTOCOL_VERSION
            self.gate.refuse(
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
            self.outbox.drop(f"malformed: {exc}", addr)
            return
        match datagram:
            case wire.Protected(kind=kind) if kind in RELAY_BOUND:
                self._on_session_datagram(datagram, size, addr, now)
            case wire.Hello() | wire.Join() if size < wire.MIN_INITIAL_SIZE:
                # protocol.md 4.1: unpadded, it could draw an answer larger than itself.
                self.stats.short_handshakes += 1
                name = type(datagram).__name__
                self.outbox.drop(f"{name} shorter than {wire.MIN_INITIAL_SIZE}", addr)
            case wire.Hello():
                self.gate.on_hello(datagram, addr, now)
            case wire.Join():
                admission = self.gate.on_join(datagram, data, addr, now, self.shutting_down)
                if admission is not None:
                    self.room.welcome(admission, now)
                    self.sessions.mark_first(admission.member)
                    self.sessions.reschedule(admission.member)
            case wire.Protected(kind=kind):
                self.stats.unexpected += 1
                self.outbox.drop(f"unexpected {kind.name}", addr)
            case _:
                self.stats.unexpected += 1
                self.outbox.drop(f"unexpected {type(datagram).__name__}", addr)

    def datagrams_to_send(
        self, now: float, limit: int | None = None
    ) -> list[tuple[bytes, Address]]:
        """What to send now. With ``limit``, stop flushing members once that many datagrams
        are ready (call again until it returns fewer): the first ones can be on the wire
        while a big fan-out is still being encoded, and a new member, flushed first, gets
        its WELCOME without waiting for its JOINED to reach a thousand others.

        The room log commits first (one transaction for everything since the last call):
        nothing is sent that a crash could make the room forget. If the commit raises,
        nothing is taken, and the next call tries again."""
        self._now = now
        room = self.room
        self._release_taken_hold()
        if self.cluster is not None:
            self.cluster.flush_posts()  # protocol.md 6.8: the turn's posts, numbered together
        try:
            self.log.commit()
        except LogUnavailable:
            if self.cluster is None:
                raise
            self.cluster.failed()  # a shared store holds nothing back: send what we have
        out = self.outbox.take_datagrams()
        sessions = self.sessions
        dirty = sessions.dirty
        if dirty:
            # Taken whole (flushing marks nobody); what a ``limit`` leaves goes back in
            # front of anything marked meanwhile.
            sessions.dirty = {}
            flush, reschedule = self.paths.flush, sessions.reschedule
            pending = iter(dirty)
            sessions.carried = set()
            try:
                for member in pending:
                    if limit is not None and len(out) >= limit:
                        rest = {member: None}
                        rest.update(dict.fromkeys(pending))
                        sessions.carried = set(rest)
                        rest.update(sessions.dirty)
                        sessions.dirty = rest
                        break
                    flush(member, now, out)
                    if member.live:
                        reschedule(member)
            except BaseException:
                # the faulty member's output is lost, not the others' marks
                sessions.dirty = {**dict.fromkeys(pending), **sessions.dirty}
                raise
        if sessions.closing:
            for member in sessions.closing:
                self.paths.flush(member, now, out)
                member.advance(MemberState.GONE)
            sessions.closing.clear()
        # The newcomer's first datagrams are in this batch: the held fan-out (a JOINED, a
        # batch of leaves, thousands of datagrams in a large room) is queued at the next
        # call, once the shell has sent these (next_timer says ASAP meanwhile).
        self._held_taken = room.held
        if out:
            stats = self.stats
            stats.datagrams_sent += len(out)
            size = 0
            for data, _ in out:
                size += len(data)
            stats.bytes_sent += size
        return out

    def next_timer(self) -> float | None:
        sessions = self.sessions
        if sessions.dirty or self.room.pending or self._held_taken or self.gate.spare is None:
            # output is waiting for the next datagrams_to_send, or (a join took the spare
            # ephemeral key) handle_timer makes the next, after that join's ACCEPT has gone
            return ASAP
        cluster = self.cluster
        if cluster is not None and cluster.waiting:
            return ASAP  # the other relays' doings, to take
        # The earliest of these (asked every turn: no list, no min over a tuple).
        deadline = self._shutdown_deadline
        due = sessions.next_deadline(self._now + self.config.heartbeat)
        if due is not None and due < deadline:
            deadline = due
        if not self.shutting_down and sessions.dormant:
            # shutting down, nobody not back yet is expired (handle_timer), so no wake
            due = sessions.next_dormant_expiry()
            if due is not None and due < deadline:
                deadline = due
        due = self.room.notice_deadline
        if due is not None and due < deadline:
            deadline = due
        if cluster is not None:
            due = cluster.deadline()
            if due is not None and due < deadline:
                deadline = due
        return None if deadline == math.inf else deadline

    def handle_timer(self, now: float) -> None:
        self._release_taken_hold()
        self.gate.prepare()
        self._now = now
        if self.cluster is not None:
            # protocol.md 6.8: what the other relays did, before this relay's own timers
            # (a member that moved to another relay must not time out here).
            self.cluster.now = now
            self.cluster.check_epoch()
            self.cluster.handle(now)
        self.room.flush_due(now)  # protocol.md 6.3: the batch window of join/leave notices
        for member in self.sessions.due(now):
            if self.sessions.expired(member, now):
                self.room.remove(member, m.LeaveReason.TIMEOUT, "timed out", now)
                continue
            member.link.handle_timer(now)
            if member.link.dead:
                self.room.remove(member, m.LeaveReason.DROPPED, "connection lost", now)
                continue
            self.sessions.mark(member)
        expiry = self.sessions.next_dormant_expiry()
        if expiry is not None and expiry <= now and not self.shutting_down:
            for dormant in self.sessions.dormant_due(now):
                self.room.expire(dormant, now)
        if now >= self._shutdown_deadline:
            for member in list(self.sessions.members.values()):
                self.sessions.forget(member)

    # --- the shell's other calls --------------------------------------------------------------

    def shutdown(self, reason: str, now: float) -> None:
        """Tell every member the relay is going away; ``closed`` once they acknowledged."""
        self._release_taken_hold()
        self.shutting_down = True
        self._shutdown_deadline = now + self.config.shutdown_grace
        self.room.announce_shutdown(reason)

    def _release_taken_hold(self) -> None:
        """Once a newcomer's first datagrams were taken (by the last ``datagrams_to_send``),
        the fan-out held behind them goes before anything else is handled: a PRIVATE or a
        SHUTDOWN, sent to members directly, must not overtake the room events queued before
        it."""
        if self._held_taken:
            self._held_taken = False
            if self.room.held:
                self.room.release()

    @property
    def closed(self) -> bool:
        """After ``shutdown``: every member acknowledged, or the grace period ran out."""
        return self.shutting_down and all(mb.link.idle for mb in self.sessions.members.values())

    def member_nicks(self) -> list[str]:
        return sorted(mb.nick for mb in self.sessions.members.values())

    # --- sessions ---------------------------------------------------------------------------

    def _on_session_datagram(
        self, envelope: wire.Protected, size: int, addr: Address, now: float
    ) -> None:
        member = self.sessions.members.get(envelope.token)
        if member is None:
            self.stats.unknown_session += 1
            self.outbox.drop("unknown session", addr)
            self.gate.reset(envelope.token, size, addr, now)
            return
        # protocol.md 8: nothing that fails to authenticate is looked at any further; in
        # particular it never moves the session or marks its packet number as seen.
        datagram = member.link.open(envelope)
        if datagram is None:
            self.stats.auth_failures += 1
            self.outbox.drop("session datagram does not authenticate", addr)
            return
        link = member.link
        # the path is looked at only when the datagram came from elsewhere, or the address
        # is being validated; then with the highest packet number seen before this one
        moved = addr != member.addr or member.state is MemberState.VALIDATING
        highest = link.highest_pn if moved else -1
        delivered = link.receive(datagram, now)
        if delivered is None:
            self.stats.rejected_by_link += 1
            self.outbox.drop("replayed or impossible", addr)
            return
        self.sessions.heard(member, size, now)
        if moved:
            self.paths.check(member, datagram, size, addr, highest)
        for data in delivered:
            self.room.on_message(member, data, now)
            if not member.live:
                break  # it quit
        if member.live:
            # Its own answer leaves after the fan-out its datagram caused (a POSTED is LAZY,
            # and its sendto wakes the poster, a few hundred µs the others would wait for);
            # not so a newcomer whose WELCOME holds the room's output back.
            sessions = self.sessions
            if self.room.held:
                sessions.mark(member)
            elif member in sessions.dirty or link.has_output(now):
                sessions.mark_last(member)
            else:  # nothing to flush (a bare ACK): only its timer may have moved
                sessions.reschedule(member)
