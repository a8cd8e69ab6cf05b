"""The reliability layer: one ``Link`` per client-relay pair, sans I/O.

A link turns an ordered stream of messages (opaque byte strings) into DATA datagrams with
sequence numbers, and turns what arrives back into the same stream: complete, in order,
exactly once. It never touches a socket or a clock; the caller passes ``now`` and moves the
bytes (the style of aioquic's QuicConnection):

* ``send(message)`` queues a message; ``SendBufferFull`` is the back-pressure signal.
* ``open(envelope)`` authenticates and decrypts a session datagram with the session's keys
  (udpchat.seal); ``receive(datagram, now)`` takes what it returns and gives the messages it
  completed, or ``None`` if it was a replay or broke the rules (counted in ``stats``).
  Nothing that fails to authenticate reaches the replay window, the ACK logic or the caller.
* ``datagrams_to_send(now)`` returns sealed datagrams: new data, retransmissions and ACKs,
  each with a packet number of its own, which is also its AEAD nonce.
* ``next_timer()`` / ``handle_timer(now)`` drive retransmission, delayed ACKs and failure.

What a link holds on the receiving side (packets that arrived out of order, a message being
reassembled) is chosen by the peer, so it is bounded in bytes as CPython spends them, per link
and, through a shared ``ReceiveBudget``, across all the links of a relay.

The link is one class built from three mixins, one per idea: ``SendSide`` (udpchat.link.
sending), ``LossRecovery`` (udpchat.link.recovery) and ``ReceiveSide`` (udpchat.link.
receiving); this module holds what ties them together: the state (one set of slots),
authentication, and the output and timers. protocol.md "Reliability" specifies the
behaviour on the wire.
"""

from __future__ import annotations

from udpchat import session_bytes, wire
from udpchat.budget import ReceiveBudget
from udpchat.link.config import ASAP, LinkConfig, LinkStats
from udpchat.link.receiving import ReceiveSide
from udpchat.link.recovery import LossRecovery
from udpchat.link.reorder import ReorderBuffer
from udpchat.link.rtt import RttEstimator
from udpchat.link.sending import SendSide
from udpchat.link.state import NO_PARTIAL, Packet
from udpchat.seal import SealError, SessionCipher, SessionKeys

__all__ = ["Link"]

_DEFAULT_CONFIG = LinkConfig()


class Link(SendSide, LossRecovery, ReceiveSide):
    """One end of a reliable, ordered message stream over datagrams.

    A relay holds one per member, so the object is kept small: slots (declared once, in
    ``LinkState``), and the send queue is only allocated while something waits in it.
    """

    __slots__ = ()

    def __init__(
        self,
        token: bytes,
        config: LinkConfig = _DEFAULT_CONFIG,
        rtt_hint: float | None = None,
        *,
        keys: SessionKeys,
        budget: ReceiveBudget | None = None,
    ) -> None:
        if len(token) != wire.TOKEN_SIZE:  # sealing takes it as it is, for every datagram
            raise ValueError(f"a token is {wire.TOKEN_SIZE} bytes")
        self.token = token
        self.config = c = config
        self._cipher = SessionCipher(keys.send, keys.receive, keys.padded, c.rekey_interval)
        self.stats = LinkStats()
        self.dead = False
        # The handshake's estimate (protocol.md 4) starts the estimator as a first sample
        # would, but is not one: the first ACK's sample replaces it. A JOIN or HELLO that was
        # retransmitted unchanged makes that estimate include the retransmission waits (Karn),
        # and kept as a sample it would hold the RTO near MAX_RTO for dozens of ACKs.
        self.rtt = RttEstimator(
            initial_rtt=rtt_hint if rtt_hint else c.initial_rtt,
            min_rto=c.min_rto,
            max_rto=c.max_rto,
            max_ack_delay=c.ack_delay,
            assumed=not rtt_hint,
        )
        self._next_pn = 0
        # anti-replay sliding window over packet numbers (as in RFC 4303 3.4.3)
        self._replay_highest = -1
        self._replay_bits = 0
        # sending
        self._next_seq = 0
        self._queue = None
        self._queue_lazy = None
        self._queue_offset = 0
        self._queued_bytes = 0
        self._in_flight = {}
        self._peer_ack = 0
        self._largest_acked = -1
        self._stalled = False  # a packet in flight was retransmitted since the last progress
        # receiving
        self._expected = 0
        self._buffer = ReorderBuffer(0)  # packets out of order; its base is _expected
        self._partial = NO_PARTIAL
        self._discarding = False
        self._held = 0  # accounted bytes of _buffer and _partial, also charged to _budget
        self._budget = budget
        # acknowledging
        self._ack_now = False
        self._ack_deadline = None
        self._unacked = 0
        self._ping_requested = False
        self._sync_stats()

    def _back_off_estimate(self, due: list[Packet]) -> None:
        """protocol.md 5.5: a packet's first timeout before any sample, on an assumed RTT,
        grows the estimate for the packets after it: once for each flush in which some
        packet times out for the first time, never for a packet's later retries (those back
        off on their own)."""
        if any(packet.stalled == 0 for packet in due):
            self.rtt.back_off(self.config.backoff)
            self._sync_stats()

    def acknowledge_now(self) -> None:
        """Send the ACK fields at the next flush even if nothing else goes out."""
        self._ack_now = True

    @property
    def ack_deadline(self) -> float | None:
        """When the ACK held back for in-order data is due; None when none is held back."""
        return self._ack_deadline

    def ping(self) -> None:
        """Ask the peer for an immediate ACK (heartbeat, liveness and RTT probe)."""
        self._ping_requested = True

    def open(self, envelope: wire.Protected) -> wire.SessionDatagram | None:
        """Authenticate and decrypt a session datagram of this link (protocol.md 8).

        ``None``: it does not authenticate (counted in ``auth_failures``: forged, altered,
        or sealed for another session), or authenticates but does not decode (``invalid``).
        Either way the caller must drop it before anything else is done with it.
        """
        try:
            plaintext = self._cipher.open(envelope)
        except SealError:
            self.stats.auth_failures += 1
            return None
        try:
            return wire.decode_session(envelope, plaintext)
        except wire.DecodeError:
            self.stats.invalid += 1
            return None

    def receive(self, datagram: wire.SessionDatagram, now: float) -> list[bytes] | None:
        """Process one datagram of this link; return the messages it completed.

        ``None`` means the datagram was dropped: a replayed packet number, or ACK
        information that cannot be true. The caller must not treat it as a sign of life.
        """
        if isinstance(datagram, (wire.PathChallenge, wire.PathResponse)):
            if self._accept_pn(datagram.pn):
                return []
            self.stats.replays += 1
            return None
        if not self._ack_is_plausible(datagram.ack, datagram.ack_bits):
            self.stats.invalid += 1
            return None
        if not self._accept_pn(datagram.pn):
            self.stats.replays += 1
            return None
        self.stats.datagrams_received += 1
        self._on_ack(datagram.ack, datagram.ack_bits, now)
        if isinstance(datagram, wire.Data):
            return self._on_data(datagram, now)
        if isinstance(datagram, wire.Ping):
            self._ack_now = True
        return []

    def receive_sealed(self, envelope: wire.Protected, now: float) -> list[bytes] | None:
        """``open`` then ``receive``: the messages a datagram as it arrived completed."""
        datagram = self.open(envelope)
        return None if datagram is None else self.receive(datagram, now)

    # --- output and timers ------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now: retransmissions first, then new data, then a bare ACK or PING."""
        if self.dead:
            return []
        flight = self._in_flight
        due = [p for p in flight.values() if p.deadline <= now] if flight else None
        ack_deadline = self._ack_deadline
        ack_due = self._ack_now or (ack_deadline is not None and ack_deadline <= now)
        if not (due or self._queue or ack_due or self._ping_requested):
            return []  # the common case for a relay flushing a member with nothing due
        out: list[bytes] = []
        ack, bits = self._expected, self._buffer.ack_bits  # what _ack_fields gives
        # The token and the cipher's seal, once for every datagram of this flush; each
        # datagram has a packet number of its own (its nonce: never two with the same).
        seal, token, stats = self._cipher.seal, self.token, self.stats
        data_fields, data_kind = session_bytes.data_fields, wire.DatagramType.DATA
        if due:
            if self.rtt.assumed and self.rtt.samples == 0:
                self._back_off_estimate(due)
            for packet in due:
                packet.stalled += 1
                packet.retransmits += 1
                packet.last_sent = now
                packet.deadline = now + self._backoff(packet.stalled) + packet.slack
                self._stalled = True
                stats.retransmissions += 1
                pn = self._next_pn
                self._next_pn = pn + 1
                fields = data_fields(ack, bits, packet.seq, packet.flags, packet.chunks)
                out.append(seal(data_kind, token, pn, fields))
        if self._queue:
            window = self.config.window
            limit = self._peer_ack + wire.WINDOW
            while self._queue and len(flight) < window and self._next_seq < limit:
                packet = self._pack_packet(now)
                flight[packet.seq] = packet
                stats.packets_sent += 1
                pn = self._next_pn
                self._next_pn = pn + 1
                fields = data_fields(ack, bits, packet.seq, packet.flags, packet.chunks)
                out.append(seal(data_kind, token, pn, fields))
        if self._ping_requested or (ack_due and not out):
            if self._ping_requested:
                kind = wire.DatagramType.PING
            else:
                kind = wire.DatagramType.ACK
                stats.acks_sent += 1
            pn = self._next_pn
            self._next_pn = pn + 1
            out.append(seal(kind, token, pn, session_bytes.ack_fields(ack, bits)))
        if out:
            self._ping_requested = False
            self._ack_now = False
            self._ack_deadline = None
            self._unacked = 0
            stats.datagrams_sent += len(out)
            size = 0
            for datagram in out:
                size += len(datagram)
            stats.bytes_sent += size
        return out

    def has_output(self, now: float) -> bool:
        """Whether ``datagrams_to_send(now)`` would send anything (an ACK that acknowledged
        nothing new, say, leaves nothing to send)."""
        if self.dead:
            return False
        if self._queue or self._ack_now or self._ping_requested:
            return True
        ack_deadline = self._ack_deadline
        if ack_deadline is not None and ack_deadline <= now:
            return True
        # a loop, not any() over a generator: this is asked for every datagram received
        for packet in self._in_flight.values():  # noqa: SIM110
            if packet.deadline <= now:
                return True  # a retransmission is due
        return False

    def encode_path(self, kind: type[wire.PathChallenge | wire.PathResponse], data: bytes) -> bytes:
        """A PATH_CHALLENGE or PATH_RESPONSE with this link's token and next packet number."""
        self.stats.datagrams_sent += 1
        if kind is wire.PathChallenge:
            return self._seal(wire.DatagramType.PATH_CHALLENGE, wire.path_fields(data))
        return self._seal(wire.DatagramType.PATH_RESPONSE, wire.path_fields(data))

    def count_received(self, size: int) -> None:
        """Account the size of a datagram the caller decoded for this link."""
        self.stats.bytes_received += size

    def _seal(self, kind: wire.DatagramType, fields: bytes) -> bytes:
        """One datagram under a fresh packet number: never two with the same (key, nonce)."""
        pn = self._next_pn
        self._next_pn += 1
        return self._cipher.seal(kind, self.token, pn, fields)

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` / ``datagrams_to_send`` has work."""
        if self.dead:
            return None
        if self._ack_now or self._ping_requested:
            return ASAP
        deadline = self._ack_deadline
        flight = self._in_flight
        if flight:
            for packet in flight.values():
                if deadline is None or packet.deadline < deadline:
                    deadline = packet.deadline
        return deadline
