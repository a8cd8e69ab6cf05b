"""What one relay has seen of a room on Redis: its epoch, where it is in the stream, what it
has queued for the core, and the recent history it replays (udpchat.stores.redis).

Three threads feed a ``RoomView``: the driver's (what an append returns), the reader (what
XREAD returns) and the housekeeper (dead relays, a new epoch). All of it happens under
``lock``, and every stream entry goes through one filter, ``seen``: an entry is queued only
if it is numbered above every entry queued before, so each event reaches the core once, in
seq order, whichever thread read it first. The history kept for ``replay`` is what the core
has been given (its own appends, and the foreign events it took), in seq order.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import get_args

import msgpack

from udpchat import messages as m
from udpchat import wire
from udpchat.relay.room_log import CHAT_EVENTS, LoggedEvent
from udpchat.relay.shared_log import (
    Arrival,
    EpochChanged,
    ForeignEvent,
    MemberLeftForRelay,
    PrivateArrived,
)

__all__ = ["Entries", "RoomView", "is_chat", "seq_of"]

log = logging.getLogger("udpchat.relay.redis")

Entries = list[tuple[bytes, dict[bytes, bytes]]]
_FIXARRAY = range(0x91, 0xA0)
MAX_ABANDONED = 1024
_ROOM_EVENTS: tuple[type[m.RoomEvent], ...] = get_args(m.RoomEvent)


def seq_of(entry_id: bytes | str) -> int:
    """The seq of a stream entry, from its id ``seq-0``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def is_chat(event: m.RoomEvent) -> bool:
    return type(event) in CHAT_EVENTS


class RoomView:
    """One relay's view of room ``room``; ``relay`` is its id in hex."""

    def __init__(
        self, room: str, relay: str, history: int, rng: Callable[[int], bytes]
    ) -> None:
        self.room = room
        self._relay = relay.encode()
        self._history = history
        self._rng = rng
        self.lock = threading.Lock()
        self.epoch = b""
        self.fresh = rng(wire.EPOCH_SIZE)  # the epoch this relay starts if the room has none
        self.generation = 0  # counts epoch changes: a read begun before one is dropped
        self.seen = 0  # the newest seq filtered into the queue (or appended by this relay)
        self.read_id = "0-0"  # where the reader goes on in the stream
        self.inbox_id = "0-0"
        self.queue: list[Arrival] = []
        # in seq order (``record`` inserts in place): replay reads it from the newest end
        self.kept: deque[LoggedEvent] = deque(maxlen=max(history, 1))
        self.last_seq = 0  # the newest seq the core has been given
        self._gap_reported = False
        self.malformed = 0  # inbox entries that did not decode, skipped
        # This relay's appends that Redis did not answer in time, by their number: if Redis
        # ran one after all, it is in the room, and this relay's members get it as well.
        self.abandoned: dict[bytes, None] = {}
        # This relay's appends under way, by their number, with their entry (seq, fields) if
        # the reader read it before the append returned: should the append fail after all,
        # the entry is queued (it is in the room, and the core never had it from ``append``).
        # Kept as read, decoded only then: the append's answer makes it needless otherwise.
        self.in_flight: dict[bytes, tuple[int, dict[bytes, bytes]] | None] = {}
        # Called (under ``lock``) when the room starts a new epoch: the core resets every
        # session of this relay, so the store forgets their members and claims.
        self.renewed: Callable[[], None] = lambda: None

    # --- called with ``lock`` held ----------------------------------------------------------------

    def start_at(self, epoch: bytes, seq: int, newest: Entries) -> None:
        """The room as read when the relay connected: its epoch, newest seq and history."""
        self.set_epoch(epoch)
        self.seen = self.last_seq = seq
        self.read_id = f"{seq}-0"
        if self._history:
            for entry_id, fields in reversed(newest):
                event = self.foreign(seq_of(entry_id), fields)
                if event is not None:
                    self.kept.append(LoggedEvent(event.seq, is_chat(event.event), event.data))

    def set_epoch(self, epoch: bytes) -> None:
        self.epoch = epoch
        if epoch == self.fresh:  # this relay started it: the next one must differ
            self.fresh = self._rng(wire.EPOCH_SIZE)

    def adopt(self, epoch: bytes) -> None:
        """The room is in a new epoch: what this relay had of the old one is gone, and
        ``EpochChanged`` is all the core has to take of it."""
        log.warning(
            "room %r: Redis lost the room's history (a new epoch); members are told", self.room
        )
        self.set_epoch(epoch)
        self.generation += 1
        self.seen = self.last_seq = 0
        self.read_id = "0-0"
        self.kept.clear()
        self.abandoned.clear()
        self.in_flight.clear()
        self.queue = [EpochChanged(epoch)]
        self.renewed()

    def take_entries(self, entries: Entries) -> bool:
        """Queue the entries numbered above ``seen`` that another relay appended; True if
        any was queued."""
        queued = False
        for entry_id, fields in entries:
            seq = seq_of(entry_id)
            if seq <= self.seen:
                continue
            if seq > self.seen + 1 and not self._gap_reported:
                self._gap_reported = True  # the stream was trimmed past what it had not read
                log.warning(
                    "room %r: this relay fell behind the room's stream and missed events "
                    "%d to %d", self.room, self.seen + 1, seq - 1,
                )
            self.seen = seq
            if fields.get(b"o") == self._relay:
                number = fields.get(b"n", b"")
                if number in self.in_flight:
                    self.in_flight[number] = (seq, fields)
                    continue  # ``append`` gives it to the core, or ``failed`` queues it
                if number not in self.abandoned:
                    continue  # appended here, and given to the core by ``append``
                del self.abandoned[number]  # appended after all: the core has not had it
            event = self.foreign(seq, fields)
            if event is not None:
                self.queue.append(event)
                queued = True
        return queued

    def failed(self, number: bytes) -> bool:
        """Append ``number`` got no answer: if the reader already read its entry, queue it
        in seq order (True); otherwise the reader queues it if Redis ran it after all. The
        core takes nothing while its append is under way, so nothing after it was taken."""
        read = self.in_flight.pop(number, None)
        if read is None:
            self.abandon(number)
            return False
        entry = self.foreign(*read)
        if entry is None:
            return False  # read, and does not decode (logged): nothing to queue
        at = next(
            (i for i, item in enumerate(self.queue)
             if isinstance(item, ForeignEvent) and item.seq > entry.seq),
            len(self.queue),
        )
        self.queue.insert(at, entry)
        return True

    def abandon(self, number: bytes) -> None:
        self.abandoned[number] = None
        if len(self.abandoned) > MAX_ABANDONED:
            del self.abandoned[next(iter(self.abandoned))]

    def take_inbox(self, entries: Entries, moved: Callable[[bytes], None]) -> bool:
        """Queue what other relays sent this one: private messages, and sessions that moved
        away (``moved(token)`` is called for each)."""
        for _, fields in entries:
            kind, about, data = fields.get(b"k"), fields.get(b"a", b""), fields.get(b"d", b"")
            if kind == b"p":
                self.queue.append(PrivateArrived(about.decode(errors="replace"), data))
            elif kind == b"m":
                try:
                    token = bytes.fromhex(about.decode())
                except ValueError:  # skipped (and counted): the reader goes on past it
                    self.malformed += 1
                    log.warning("room %r: an inbox entry does not decode: %r", self.room, about)
                    continue
                self.queue.append(MemberLeftForRelay(token))
                moved(token)
        return bool(entries)

    def take(self) -> list[Arrival]:
        """What is queued, for the core; its foreign events join the history."""
        taken, self.queue = self.queue, []
        for item in taken:
            if isinstance(item, ForeignEvent):
                self.record(LoggedEvent(item.seq, is_chat(item.event), item.data))
        return taken

    def record(self, logged: LoggedEvent) -> None:
        """Keep an event the core has been given, in seq order (an append can come before
        the foreign events numbered below it are taken)."""
        kept = self.kept
        self.last_seq = max(self.last_seq, logged.seq)
        if not self._history:
            return
        if not kept or kept[-1].seq < logged.seq:
            kept.append(logged)
            return
        # Out of order by a few at most (a turn's posts and the events around them): its
        # place is found from the newest end, not by sorting the whole history again.
        at = len(kept)
        while at and kept[at - 1].seq > logged.seq:
            at -= 1
        if len(kept) == kept.maxlen:
            if not at:
                return  # older than all the history kept
            kept.popleft()
            at -= 1
        kept.insert(at, logged)

    @property
    def first_seq(self) -> int:
        kept = self.kept
        return kept[0].seq if kept and self._history else self.last_seq + 1

    # --- no lock needed ---------------------------------------------------------------------------

    def foreign(self, seq: int, fields: dict[bytes, bytes]) -> ForeignEvent | None:
        """The entry's event numbered ``seq``; None (logged) if it does not decode.

        The stream holds it encoded with seq 0, the number a fixint: the number is written
        in its place without decoding and encoding it again."""
        payload = fields.get(b"e", b"")
        if len(payload) > 2 and payload[0] in _FIXARRAY and payload[1] < 0x80 and not payload[2]:
            data = payload[:2] + msgpack.packb(seq) + payload[3:]
        else:
            data = payload
        try:
            event = m.decode_message(data)
            if not isinstance(event, _ROOM_EVENTS):
                raise ValueError(f"a {type(event).__name__} is not a room event")
            if event.seq != seq:
                event = dataclasses.replace(event, seq=seq)
                data = m.encode_message(event)
            origin = bytes.fromhex(fields.get(b"o", b"").decode())
        except (ValueError, TypeError) as error:
            log.warning("room %r: event %d in Redis does not decode: %s", self.room, seq, error)
            return None
        return ForeignEvent(seq, event, data, origin)
