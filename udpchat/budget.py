"""A byte budget shared by the links of one relay, for what peers make them hold.

Kept apart from the links that draw on it: the relay creates one and hands it to each link it
makes; each link charges what it holds and gives it back when it lets go.
"""

from __future__ import annotations

__all__ = ["ReceiveBudget"]


class ReceiveBudget:
    """Bytes that a group of links (all the members of one relay) may hold between them for
    packets received out of order and messages being reassembled.

    Each link is also capped on its own (``LinkConfig.receive_buffer``); this shared cap is
    what keeps a thousand peers, each within its own cap, from adding up to more memory than
    the process can spare. The owner creates one and passes it to every link it makes, and
    calls ``Link.release_buffers`` when it drops a link, so the bytes come back.
    """

    __slots__ = ("limit", "released", "used")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("a receive budget cannot be negative")
        self.limit = limit
        self.used = 0
        # Bytes given back since the owner last reset it: once that is a lot, the relay asks
        # the C allocator to return free memory to the system (udpchat.memory).
        self.released = 0

    def fits(self, size: int) -> bool:
        return self.used + size <= self.limit

    def charge(self, size: int) -> None:
        """Account ``size`` more bytes held, or fewer when it is negative."""
        self.used += size
        if size < 0:
            self.released -= size

    def take_released(self, at_least: int, at_least_when_empty: int) -> bool:
        """Whether ``at_least`` bytes were given back since the last time this said yes (or
        ``at_least_when_empty``, once nothing is held any more); counting starts anew then."""
        if self.released < (at_least_when_empty if self.used == 0 else at_least):
            return False
        self.released = 0
        return True
