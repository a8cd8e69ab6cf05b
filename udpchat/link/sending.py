"""The sending side of a link: the queue of messages, packing them into DATA packets
(whole messages first, the last one maybe split across packets), and the send buffer that
is the back-pressure signal.

Invariant: packets enter ``_in_flight`` in sequence order, so its first key is the lowest
unacknowledged sequence number (the ACK and loss logic rely on that).
"""

from __future__ import annotations

from collections import deque

from udpchat import wire
from udpchat.link.config import LinkDead, SendBufferFull
from udpchat.link.state import LAZY_SLACK, LinkState, Packet
from udpchat.messages import MAX_MESSAGE_SIZE
from udpchat.seal import FRAME_HEADER_SIZE, PAD_BUCKETS, SESSION_ENVELOPE

__all__ = ["SendSide", "chunk_cost"]


def chunk_cost(length: int) -> int:
    """Encoded size of a msgpack bin of ``length`` bytes."""
    return length + (2 if length < 256 else 3 if length < 65536 else 5)


class SendSide(LinkState):
    """Mixin of ``Link``: its state is ``LinkState``'s."""

    __slots__ = ()

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

    def send(self, message: bytes, lazy: bool = False) -> None:
        """Queue one message; it goes out at the next ``datagrams_to_send``.

        ``lazy``: its ACK may wait (protocol.md 5.3): a packet that carries only such
        messages is flagged LAZY, and the peer acknowledges it with whatever it sends next
        within LAZY_ACK_DELAY instead of on its own within ACK_DELAY.
        """
        if self.dead:
            raise LinkDead("the link has given up on its peer")
        size = len(message)
        if size > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {size} bytes is over {MAX_MESSAGE_SIZE}")
        if not size:
            raise ValueError("a message is never empty (protocol.md 5.1)")
        queued = self._queued_bytes + size
        if queued > self.config.send_buffer:
            raise SendBufferFull(f"{self._queued_bytes} bytes already queued")
        queue = self._queue
        if queue is None or self._queue_lazy is None:
            self._queue = queue = deque()
            self._queue_lazy = deque()
        queue.append(message)
        self._queue_lazy.append(lazy)
        self._queued_bytes = queued
        self.stats.messages_sent += 1

    def _pack_packet(self, now: float) -> Packet:
        """Fill one DATA packet from the queue: whole messages, the last one maybe split."""
        plaintext = self.config.max_datagram - SESSION_ENVELOPE
        if self._cipher.padded:  # what its largest bucket holds (SessionCipher.max_plaintext)
            plaintext = min(plaintext, PAD_BUCKETS[-1] - FRAME_HEADER_SIZE)
        budget = plaintext - wire.DATA_FIELDS_OVERHEAD
        chunks: list[bytes] = []
        flags = 0
        queue, lazy_marks = self._queue, self._queue_lazy
        assert queue is not None and lazy_marks is not None
        lazy = True  # while every message with a chunk here is
        while queue and len(chunks) < wire.MAX_CHUNKS:
            message = queue[0]
            remaining = len(message) - self._queue_offset
            cost = remaining + (2 if remaining < 256 else 3 if remaining < 65536 else 5)
            if cost <= budget:
                chunks.append(message[self._queue_offset :] if self._queue_offset else message)
                budget -= cost
                queue.popleft()
                lazy = lazy_marks.popleft() and lazy
                self._queue_offset = 0
                self._queued_bytes -= remaining
                continue
            take = budget - (chunk_cost(budget) - budget)
            if take <= 16 and chunks:
                break  # not worth splitting: the message starts the next packet
            start = self._queue_offset
            chunks.append(message[start : start + take])
            lazy = lazy and lazy_marks[0]
            self._queue_offset += take
            self._queued_bytes -= take
            flags = wire.MORE
            break
        if not queue:
            self._queue = self._queue_lazy = None  # an idle member's link holds no deque
        seq = self._next_seq
        self._next_seq += 1
        if lazy:
            return Packet(seq, flags | wire.LAZY, chunks, now, now, now + self.rtt.rto + LAZY_SLACK)
        return Packet(seq, flags, chunks, now, now, now + self.rtt.rto)
