"""The receiving side of a link: anti-replay over packet numbers, in-order delivery through
the reorder buffer, reassembly of split messages, and the accounting that bounds what a peer
can make a link hold.

What a link holds on the receiving side (packets that arrived out of order, a message being
reassembled) is chosen by the peer, so it is bounded in bytes as CPython spends them, per
link (``LinkConfig.receive_buffer``) and, through a shared ``ReceiveBudget``, across all the
links of a relay. A packet in order is always taken, whatever the budgets say, so the stream
moves on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from udpchat import wire
from udpchat.link.config import LAZY_ACK_DELAY, OVERSIZED_PREFIX, REPLAY_WINDOW
from udpchat.link.state import NO_PARTIAL, LinkState
from udpchat.messages import MAX_MESSAGE_SIZE

__all__ = ["ReceiveSide"]


def _partial_cost(partial: bytes | bytearray) -> int:
    """Accounted size of a reassembly buffer: what CPython allocated for it, slack included."""
    return sys.getsizeof(partial) if partial else 0


_REPLAY_MASK = (1 << REPLAY_WINDOW) - 1


class ReceiveSide(LinkState):
    """Mixin of ``Link``: its state is ``LinkState``'s."""

    __slots__ = ()

    @property
    def highest_pn(self) -> int:
        """The highest packet number received so far (-1 before any)."""
        return self._replay_highest

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

    def _on_data(self, data: wire.Data, now: float) -> list[bytes]:
        seq = data.seq
        if (
            seq == self._expected
            and not self._buffer._bits  # nothing held out of order (ReorderBuffer.__len__)
            and not self._partial
            and not self._discarding
            and not self._held
            and not data.flags & wire.MORE
        ):
            return self._in_order(data, now)
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
        self._owe_ack(data, now, filled_gap)
        self.stats.messages_delivered += len(delivered)
        return delivered

    def _in_order(self, data: wire.Data, now: float) -> list[bytes]:
        """``_on_data`` for the common case: the packet expected, with nothing held out of
        order, nothing being reassembled, and whole messages only: they are delivered as
        they are, and nothing held changes."""
        self._expected += 1
        self._buffer.base += 1  # ReorderBuffer.advance with nothing held
        delivered = list(data.chunks)
        self._owe_ack(data, now, False)
        self.stats.messages_delivered += len(delivered)
        return delivered

    def _owe_ack(self, data: wire.Data, now: float, filled_gap: bool) -> None:
        """protocol.md 5.3: one more packet to acknowledge: now (a gap filled, or every
        ``ack_every`` packets) or by its deadline (a LAZY packet's may wait for whatever
        goes out next)."""
        self._unacked += 1
        if filled_gap or self._unacked >= self.config.ack_every:
            self._ack_now = True
        else:
            deadline = now + (LAZY_ACK_DELAY if data.flags & wire.LAZY else self.config.ack_delay)
            if self._ack_deadline is None or deadline < self._ack_deadline:
                self._ack_deadline = deadline

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
                self._partial = NO_PARTIAL
            elif continues:
                if not partial:  # the first chunk of a message split across packets
                    self._partial = partial = bytearray()
                partial += chunk
            else:
                partial += chunk  # not the empty one: a whole message took the branch above
                out.append(bytes(partial))
                self._partial = NO_PARTIAL

    @property
    def buffered_bytes(self) -> int:
        """Accounted bytes this link holds for out-of-order packets and reassembly."""
        return self._held

    def release_buffers(self) -> None:
        """Forget everything received but not yet delivered and give its bytes back to the
        shared budget; the owner calls it when it drops the link."""
        self._buffer.clear()
        self._partial = NO_PARTIAL
        self._discarding = False
        self._recount()

    def _ack_fields(self) -> tuple[int, int]:
        return self._expected, self._buffer.ack_bits
