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

protocol.md "Reliability" specifies the behaviour on the wire; the names of the constants
below follow it (and RFC 9002 where they come from there).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.errors import UsageError
from udpchat.messages import MAX_MESSAGE_SIZE
from udpchat.reorder import ReorderBuffer
from udpchat.rtt import RttEstimator
from udpchat.seal import REKEY_INTERVAL, SESSION_ENVELOPE, SealError, SessionCipher, SessionKeys

# RFC 9002 6.1.1: a packet is lost once a packet sent this many sequence numbers later is
# acknowledged.
K_PACKET_THRESHOLD = 3
# protocol.md "Timers": how long a receiver may hold back an ACK for in-order data.
ACK_DELAY = 0.001
# protocol.md "Reliability": an ACK is sent at once when this many packets are unacknowledged.
ACK_EVERY = 2
# protocol.md "Replay protection": how far behind the highest packet number a datagram may be.
REPLAY_WINDOW = 64
# protocol.md 5.1: what a receiver delivers in place of a message over MAX_MESSAGE_SIZE.
OVERSIZED_PREFIX = 16
# Past this many retransmissions the backoff factor stops growing (any RTO times 1.5**64 is
# far beyond any max_rto).
MAX_BACKOFF_EXPONENT = 64
# A timer value meaning "now, whatever now is".
ASAP = float("-inf")


class SendBufferFull(UsageError):
    """The link holds as much unsent data as it may; try again once ``send_buffer_free`` grows."""


class LinkDead(UsageError):
    """Raised by ``send`` on a link that has given up on its peer."""


@dataclass(frozen=True)
class LinkConfig:
    """Tuning knobs; the defaults suit a LAN and still adapt to slower paths via the RTT."""

    min_rto: float = 0.004
    max_rto: float = 1.0
    initial_rtt: float = 0.1
    backoff: float = 1.5
    ack_delay: float = ACK_DELAY
    max_retransmissions: int = 16
    window: int = wire.WINDOW
    send_buffer: int = 256 * 1024
    # protocol.md 5.8: bytes (as accounted: payload plus per-packet and per-chunk overhead)
    # this link may hold for out-of-order packets and reassembly. The default holds a full
    # window of full-size packets (about 90 KB accounted) while the largest message is being
    # reassembled (up to 72 KB with the bytearray's slack).
    receive_buffer: int = 3 * MAX_MESSAGE_SIZE
    # The largest datagram this link builds (sealed, as it goes on the wire).
    max_datagram: int = wire.MAX_DATAGRAM_SIZE
    # protocol.md 8.1: packet numbers per key phase. A protocol constant: both ends of a
    # session must use the same one; tests lower it to see many key phases.
    rekey_interval: int = REKEY_INTERVAL

    def __post_init__(self) -> None:
        if not 1 <= self.window <= wire.WINDOW:
            raise ValueError(f"window must be between 1 and {wire.WINDOW} packets")
        if self.backoff < 1:
            raise ValueError("backoff must be at least 1")
        if self.max_retransmissions < 1:
            raise ValueError("max_retransmissions must be at least 1")
        if not 256 <= self.max_datagram <= wire.MAX_DATAGRAM_SIZE:
            raise ValueError(f"max_datagram must be between 256 and {wire.MAX_DATAGRAM_SIZE}")
        if self.rekey_interval < 1:
            raise ValueError("rekey_interval must be at least 1")
        if self.send_buffer < MAX_MESSAGE_SIZE:
            raise ValueError(f"send_buffer must hold at least one {MAX_MESSAGE_SIZE}-byte message")
        if self.receive_buffer < 0:
            raise ValueError("receive_buffer cannot be negative")


@dataclass(slots=True)
class LinkStats:
    """Counters for /stats and the benchmarks."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    retransmissions: int = 0
    fast_retransmissions: int = 0
    acks_sent: int = 0
    messages_sent: int = 0
    messages_delivered: int = 0
    duplicates: int = 0
    replays: int = 0
    out_of_window: int = 0
    invalid: int = 0
    auth_failures: int = 0
    oversized: int = 0
    over_budget: int = 0
    srtt: float = 0.0
    rto: float = 0.0

    @property
    def loss_estimate(self) -> float:
        """Share of packets that needed a retransmission (spurious ones included)."""
        total = self.packets_sent + self.retransmissions
        return self.retransmissions / total if total else 0.0


@dataclass(slots=True)
class _Packet:
    seq: int
    more: bool
    chunks: list[bytes]
    first_sent: float
    last_sent: float
    deadline: float
    retransmits: int = 0
    # Retransmissions since the peer last acknowledged anything new: what the backoff and
    # the decision that the peer is gone go by.
    stalled: int = 0


def _chunk_cost(length: int) -> int:
    """Encoded size of a msgpack bin of ``length`` bytes."""
    return length + (2 if length < 256 else 3 if length < 65536 else 5)


def _partial_cost(partial: bytearray) -> int:
    """Accounted size of a reassembly buffer: what CPython allocated for it, slack included."""
    return sys.getsizeof(partial) if partial else 0


_REPLAY_MASK = (1 << REPLAY_WINDOW) - 1
_DEFAULT_CONFIG = LinkConfig()


class Link:
    """One end of a reliable, ordered message stream over datagrams.

    A relay holds one per member, so the object is kept small: slots, and the send queue
    is only allocated while something waits in it.
    """

    __slots__ = (
        "_ack_deadline",
        "_ack_now",
        "_budget",
        "_buffer",
        "_cipher",
        "_discarding",
        "_expected",
        "_held",
        "_in_flight",
        "_largest_acked",
        "_next_pn",
        "_next_seq",
        "_partial",
        "_peer_ack",
        "_ping_requested",
        "_queue",
        "_queue_offset",
        "_queued_bytes",
        "_replay_bits",
        "_replay_highest",
        "_stalled",
        "_unacked",
        "config",
        "dead",
        "rtt",
        "stats",
        "token",
    )

    def __init__(
        self,
        token: bytes,
        config: LinkConfig = _DEFAULT_CONFIG,
        rtt_hint: float | None = None,
        *,
        keys: SessionKeys,
        budget: ReceiveBudget | None = None,
    ) -> None:
        self.token = token
        self.config = c = config
        self._cipher = SessionCipher(keys.send, keys.receive, keys.padded, c.rekey_interval)
        self.stats = LinkStats()
        self.dead = False
        self.rtt = RttEstimator(
            initial_rtt=rtt_hint if rtt_hint else c.initial_rtt,
            min_rto=c.min_rto,
            max_rto=c.max_rto,
            max_ack_delay=c.ack_delay,
        )
        if rtt_hint:
            self.rtt.on_sample(rtt_hint)
        self._next_pn = 0
        # anti-replay sliding window over packet numbers (as in RFC 4303 3.4.3)
        self._replay_highest = -1
        self._replay_bits = 0
        # sending
        self._next_seq = 0
        self._queue: deque[bytes] | None = None
        self._queue_offset = 0
        self._queued_bytes = 0
        self._in_flight: dict[int, _Packet] = {}
        self._peer_ack = 0
        self._largest_acked = -1
        self._stalled = False  # a packet in flight was retransmitted since the last progress
        # receiving
        self._expected = 0
        self._buffer = ReorderBuffer(0)  # packets out of order; its base is _expected
        self._partial = bytearray()
        self._discarding = False
        self._held = 0  # accounted bytes of _buffer and _partial, also charged to _budget
        self._budget = budget
        # acknowledging
        self._ack_now = False
        self._ack_deadline: float | None = None
        self._unacked = 0
        self._ping_requested = False
        self._sync_stats()

    # --- sending ----------------------------------------------------------------------------

    @property
    def send_buffer_free(self) -> int:
        return max(self.config.send_buffer - self._queued_bytes, 0)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing waiting for an ACK."""
        return not self._queue and not self._in_flight

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def highest_pn(self) -> int:
        """The highest packet number received so far (-1 before any)."""
        return self._replay_highest

    def send(self, message: bytes) -> None:
        """Queue one message; it goes out at the next ``datagrams_to_send``."""
        if self.dead:
            raise LinkDead("the link has given up on its peer")
        if len(message) > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {len(message)} bytes is over {MAX_MESSAGE_SIZE}")
        if not message:
            raise ValueError("a message is never empty (protocol.md 5.1)")
        if self._queued_bytes + len(message) > self.config.send_buffer:
            raise SendBufferFull(f"{self._queued_bytes} bytes already queued")
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        self._queued_bytes += len(message)
        self.stats.messages_sent += 1

    def acknowledge_now(self) -> None:
        """Send the ACK fields at the next flush even if nothing else goes out."""
        self._ack_now = True

    def ping(self) -> None:
        """Ask the peer for an immediate ACK (heartbeat, liveness and RTT probe)."""
        self._ping_requested = True

    # --- receiving --------------------------------------------------------------------------

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
        if isinstance(datagram, wire.Ping):
            self._ack_now = True
            return []
        if isinstance(datagram, wire.Data):
            return self._on_data(datagram, now)
        return []

    def receive_sealed(self, envelope: wire.Protected, now: float) -> list[bytes] | None:
        """``open`` then ``receive``: the messages a datagram as it arrived completed."""
        datagram = self.open(envelope)
        return None if datagram is None else self.receive(datagram, now)

    def _ack_is_plausible(self, ack: int, bits: int) -> bool:
        if ack > self._next_seq:
            return False
        return bits == 0 or ack + bits.bit_length() < self._next_seq

    def _on_ack(self, ack: int, bits: int, now: float) -> None:
        if ack < self._peer_ack and not bits:
            return  # an old ACK overtaken by a newer one
        self._peer_ack = max(self._peer_ack, ack)
        newly: list[_Packet] = []
        flight = self._in_flight
        while flight:
            seq = next(iter(flight))  # the lowest: packets enter in sequence order
            if seq >= ack:
                break
            newly.append(flight.pop(seq))
        while bits:
            low = bits & -bits
            seq = ack + low.bit_length()
            bits ^= low
            packet = flight.pop(seq, None)
            if packet is not None:
                newly.append(packet)
        if not newly:
            return
        if not flight:
            self._in_flight = {}  # a dict keeps its grown table: idle members get a small one
        largest = max(newly, key=lambda p: p.seq)
        if largest.seq > self._largest_acked:
            self._largest_acked = largest.seq
            if largest.retransmits == 0:
                self.rtt.on_sample(now - largest.last_sent)
        if self._stalled:
            self._reset_backoff()
        self._detect_losses(largest, now)
        self._sync_stats()

    def _reset_backoff(self) -> None:
        """RFC 9002 6.2.1: an ACK of new data resets the backoff. The peer is alive, and a
        receiver short of buffer space drops packets that are out of order (protocol.md
        5.8): once the gap before them is filled they must go again soon, not after waits
        that grew while they could not be taken."""
        self._stalled = False
        rto = self.rtt.rto
        for packet in self._in_flight.values():
            if packet.stalled:
                packet.stalled = 0
                packet.deadline = min(packet.deadline, packet.last_sent + rto)

    def _detect_losses(self, acked: _Packet, now: float) -> None:
        """RFC 9002 6.1: packets sent before an acknowledged one are lost after a packet
        threshold or a time threshold; the rest get an earlier timer."""
        loss_delay = self.rtt.loss_delay()
        for packet in self._in_flight.values():
            if packet.seq >= acked.seq:
                break
            if packet.last_sent >= acked.last_sent:
                continue  # already retransmitted after the acknowledged packet went out
            if acked.seq - packet.seq >= K_PACKET_THRESHOLD or now - packet.last_sent >= loss_delay:
                if packet.deadline > now:
                    packet.deadline = now
                    self.stats.fast_retransmissions += 1
            else:
                packet.deadline = min(packet.deadline, packet.last_sent + loss_delay)

    def _on_data(self, data: wire.Data, now: float) -> list[bytes]:
        seq = data.seq
        if seq < self._expected or seq in self._buffer:
            self.stats.duplicates += 1
            self._ack_now = True  # our ACK was probably lost
            return []
        if seq >= self._expected + wire.WINDOW:
            self.stats.out_of_window += 1
            self._ack_now = True
            return []
        if seq != self._expected:
            self._ack_now = True  # a gap: tell the sender now (fast retransmit)
            if not self._hold(seq, data.more, data.chunks):
                self.stats.over_budget += 1  # left unacknowledged: the sender sends it again
            return []
        # In order: always processed, whatever the budgets say, so the stream moves on.
        filled_gap = bool(self._buffer)
        delivered: list[bytes] = []
        self._expected += 1
        self._reassemble(data.more, data.chunks, delivered)
        held = self._buffer.advance()
        while held is not None:
            self._expected += 1
            self._reassemble(*held, delivered)
            held = self._buffer.advance()
        self._recount()
        self._unacked += 1
        if filled_gap or self._unacked >= ACK_EVERY:
            self._ack_now = True
        elif self._ack_deadline is None:
            self._ack_deadline = now + self.config.ack_delay
        self.stats.messages_delivered += len(delivered)
        return delivered

    def _hold(self, seq: int, more: bool, chunks: Sequence[bytes]) -> bool:
        """Keep an out-of-order packet if both the link's and the shared cap allow it."""
        buffer = self._buffer
        cost = buffer.cost_with(chunks) - buffer.cost()  # at most
        if self._held + cost > self.config.receive_buffer:
            return False
        if self._budget is not None and not self._budget.fits(cost):
            return False
        buffer.add(seq, more, chunks)
        self._recount()
        return True

    def _recount(self) -> None:
        """Account what the link holds now, here and in the shared budget."""
        held = self._buffer.cost() + _partial_cost(self._partial)
        if held != self._held:
            if self._budget is not None:
                self._budget.charge(held - self._held)
            self._held = held

    def _reassemble(self, more: bool, chunks: Sequence[bytes], out: list[bytes]) -> None:
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            continues = more and i == last
            if self._discarding:
                self._discarding = continues  # the rest of an oversized message
                continue
            partial = self._partial
            if not partial and not continues:
                out.append(chunk)  # a whole message in one chunk: no copy
                continue
            if len(partial) + len(chunk) > MAX_MESSAGE_SIZE:
                # protocol.md 5.1: its first bytes stand for it in the stream; they never
                # decode, and tell the relay which request it was.
                prefix = bytes(partial[:OVERSIZED_PREFIX])
                out.append(prefix + chunk[: OVERSIZED_PREFIX - len(prefix)])
                self.stats.oversized += 1
                self._discarding = continues
                self._partial = bytearray()
            elif continues:
                partial += chunk
            else:
                partial += chunk
                out.append(bytes(partial))
                self._partial = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Accounted bytes this link holds for out-of-order packets and reassembly."""
        return self._held

    def release_buffers(self) -> None:
        """Forget everything received but not yet delivered and give its bytes back to the
        shared budget; the owner calls it when it drops the link."""
        self._buffer.clear()
        self._partial = bytearray()
        self._discarding = False
        self._recount()

    def _ack_fields(self) -> tuple[int, int]:
        return self._expected, self._buffer.ack_bits

    # --- output and timers ------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now: retransmissions first, then new data, then a bare ACK or PING."""
        if self.dead:
            return []
        flight = self._in_flight
        due = [p for p in flight.values() if p.deadline <= now] if flight else []
        ack_due = self._ack_now or (self._ack_deadline is not None and self._ack_deadline <= now)
        if not (due or self._queue or ack_due or self._ping_requested):
            return []  # the common case for a relay flushing a member with nothing due
        out: list[bytes] = []
        ack, bits = self._ack_fields()
        for packet in due:
            packet.stalled += 1
            packet.retransmits += 1
            packet.last_sent = now
            packet.deadline = now + self._backoff(packet.stalled)
            self._stalled = True
            self.stats.retransmissions += 1
            out.append(self._encode_data(packet, ack, bits))
        window = self.config.window
        while (
            self._queue and len(flight) < window and self._next_seq < self._peer_ack + wire.WINDOW
        ):
            packet = self._pack_packet(now)
            self._in_flight[packet.seq] = packet
            self.stats.packets_sent += 1
            out.append(self._encode_data(packet, ack, bits))
        if self._ping_requested:
            out.append(self._seal(wire.DatagramType.PING, wire.ack_fields(ack, bits)))
        elif ack_due and not out:
            out.append(self._seal(wire.DatagramType.ACK, wire.ack_fields(ack, bits)))
            self.stats.acks_sent += 1
        if out:
            self._ping_requested = False
            self._ack_now = False
            self._ack_deadline = None
            self._unacked = 0
            self.stats.datagrams_sent += len(out)
            self.stats.bytes_sent += sum(len(d) for d in out)
        return out

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

    def _backoff(self, retransmits: int) -> float:
        # The exponent is capped: the relay's links never give up by count, and 1.5**1751
        # overflows a float; long before that the wait is max_rto anyway.
        exponent = min(retransmits, MAX_BACKOFF_EXPONENT)
        return min(self.rtt.rto * self.config.backoff**exponent, self.config.max_rto)

    def _encode_data(self, packet: _Packet, ack: int, bits: int) -> bytes:
        return self._seal(
            wire.DatagramType.DATA,
            wire.data_fields(ack, bits, packet.seq, packet.more, packet.chunks),
        )

    def _pack_packet(self, now: float) -> _Packet:
        """Fill one DATA packet from the queue: whole messages, the last one maybe split."""
        plaintext = min(self.config.max_datagram - SESSION_ENVELOPE, self._cipher.max_plaintext)
        budget = plaintext - wire.DATA_FIELDS_OVERHEAD
        chunks: list[bytes] = []
        more = False
        queue = self._queue
        assert queue is not None
        while queue and len(chunks) < wire.MAX_CHUNKS:
            message = queue[0]
            remaining = len(message) - self._queue_offset
            cost = _chunk_cost(remaining)
            if cost <= budget:
                chunks.append(message[self._queue_offset :] if self._queue_offset else message)
                budget -= cost
                queue.popleft()
                self._queue_offset = 0
                self._queued_bytes -= remaining
                continue
            take = budget - (_chunk_cost(budget) - budget)
            if take <= 16 and chunks:
                break  # not worth splitting: the message starts the next packet
            start = self._queue_offset
            chunks.append(message[start : start + take])
            self._queue_offset += take
            self._queued_bytes -= take
            more = True
            break
        if not queue:
            self._queue = None  # an idle member's link holds no empty deque
        seq = self._next_seq
        self._next_seq += 1
        return _Packet(seq, more, chunks, now, now, now + self.rtt.rto)

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` / ``datagrams_to_send`` has work."""
        if self.dead:
            return None
        deadline = self._ack_deadline
        for packet in self._in_flight.values():
            if deadline is None or packet.deadline < deadline:
                deadline = packet.deadline
        if self._ack_now or self._ping_requested:
            return ASAP
        return deadline

    def handle_timer(self, now: float) -> None:
        """Give up on the peer once a packet has been retransmitted too often in vain.

        In vain means with nothing new acknowledged meanwhile: a receiver short of buffer
        space drops packets that are out of order (protocol.md 5.8), which costs them
        retransmissions while the peer is plainly alive and taking the packets in order.
        """
        limit = self.config.max_retransmissions
        for packet in self._in_flight.values():
            if packet.deadline <= now and packet.stalled >= limit:
                self.dead = True
                break

    def _accept_pn(self, pn: int) -> bool:
        """Anti-replay: a packet number is accepted once, and only within the window."""
        highest = self._replay_highest
        if pn > highest:
            shift = pn - highest
            # A jump past the window clears it (and never builds a huge shifted integer).
            bits = self._replay_bits << shift | 1 if shift < REPLAY_WINDOW else 1
            self._replay_bits = bits & _REPLAY_MASK
            self._replay_highest = pn
            return True
        offset = highest - pn
        if offset >= REPLAY_WINDOW or self._replay_bits >> offset & 1:
            return False
        self._replay_bits |= 1 << offset
        return True

    def _sync_stats(self) -> None:
        self.stats.srtt = self.rtt.srtt
        self.stats.rto = self.rtt.rto
