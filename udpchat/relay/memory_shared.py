"""Several relays as one room, in one process: the shared log for tests and demos.

``SharedRoom`` is what a shared store keeps for one room (protocol.md 6.8): the room
sequence, the history (capped), the message ids of posts, the epoch, who holds each
nickname, each member's session (token, nickname, resume secret) and the relay it is on, and
what each relay has still to take. ``MemorySharedLog`` is one relay's view of it and
implements ``udpchat.relay.shared_log.SharedLog``; every relay of the room is given its own
with ``SharedRoom.connect``.

Everything happens in the caller's step, so the room is deterministic and sans I/O: an
append numbers the event and puts it, at once, in every other live relay's arrival queue, in
seq order. ``lose`` plays a relay's death as the store notices it (exactly one surviving
relay gets ``RelayLost`` with the nicknames of its members that did not move), ``flush`` the
loss of the whole store (every relay gets ``EpochChanged``), and ``available`` False a store
that cannot be reached (every call of every view raises ``LogUnavailable``, changing nothing).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from udpchat import messages as m
from udpchat import wire
from udpchat.errors import UsageError
from udpchat.names import nick_key
from udpchat.relay.room_log import (
    CHAT_EVENTS,
    MIN_KEPT_IDS,
    EventBuilder,
    KeptMember,
    LoggedEvent,
    events_after,
    newest_chats,
)
from udpchat.relay.shared_log import (
    RELAY_ID_SIZE,
    Arrival,
    EpochChanged,
    ForeignEvent,
    LogUnavailable,
    MemberLeftForRelay,
    PrivateArrived,
    RelayLost,
)

__all__ = ["MemorySharedLog", "SharedRoom"]


@dataclass
class _Relay:
    """What the room knows of one relay: whether it lives, and what it has to take."""

    queue: deque[Arrival] = field(default_factory=deque)
    alive: bool = True


class SharedRoom:
    """One room's shared state, as the store of several relays keeps it."""

    def __init__(self, history: int, rng: Callable[[int], bytes]) -> None:
        if history < 0:
            raise ValueError("history cannot be negative")
        self.available = True  # False: the store cannot be reached (LogUnavailable)
        self._rng = rng
        self._history = history
        self._relays: dict[bytes, _Relay] = {}
        self._start(rng(wire.EPOCH_SIZE))

    def _start(self, epoch: bytes) -> None:
        """A room with nothing in it yet: what a new (or flushed) store holds."""
        self.epoch = epoch
        self.last_seq = 0
        # in seq order: replay reads it from the newest end
        self.events: deque[LoggedEvent] = deque(maxlen=max(self._history, 1))
        # msgid -> the event it was posted as, oldest first (bounded like a log's ids)
        self.ids: OrderedDict[bytes, LoggedEvent] = OrderedDict()
        self._max_ids = max(self._history, MIN_KEPT_IDS)
        self.claims: dict[str, tuple[bytes, bytes]] = {}  # nick key -> (token, relay id)
        self.members: dict[bytes, tuple[KeptMember, bytes]] = {}  # token -> (member, relay)

    # --- relays -------------------------------------------------------------------------------

    def connect(self) -> MemorySharedLog:
        """A new relay's view of the room (its id drawn from the room's random source)."""
        relay_id = self._rng(RELAY_ID_SIZE)
        while relay_id in self._relays:
            relay_id = self._rng(RELAY_ID_SIZE)
        self._relays[relay_id] = _Relay()
        return MemorySharedLog(self, relay_id)

    @property
    def live_relays(self) -> list[bytes]:
        return [rid for rid, relay in self._relays.items() if relay.alive]

    def lose(self, relay_id: bytes) -> None:
        """``relay_id`` died and the room noticed: its members that did not move are gone
        (their nicknames free), and the first surviving relay is told to announce them."""
        relay = self._relays[relay_id]
        if not relay.alive:
            return
        relay.alive = False
        # Deaths it had still to announce pass on with its own to the next survivor.
        owed = [item for item in relay.queue if isinstance(item, RelayLost)]
        relay.queue.clear()
        gone = [token for token, (_, rid) in self.members.items() if rid == relay_id]
        nicks = tuple(self.members.pop(token)[0].nick for token in gone)
        self.claims = {k: held for k, held in self.claims.items() if held[1] != relay_id}
        survivors = self.live_relays
        if survivors:  # exactly one relay announces them (none left: nobody to tell)
            self._relays[survivors[0]].queue.extend((*owed, RelayLost(relay_id, nicks)))

    def flush(self) -> None:
        """The store lost everything (flushed, or a new instance): a new epoch, no history,
        no members; every live relay is told, and what it had still to take is gone."""
        self._start(self._rng(wire.EPOCH_SIZE))
        for relay in self._relays.values():
            relay.queue.clear()
            if relay.alive:
                relay.queue.append(EpochChanged(self.epoch))

    # --- what the views call ------------------------------------------------------------------

    def check(self, relay_id: bytes) -> _Relay:
        if not self.available:
            raise LogUnavailable("the room's store cannot be reached")
        relay = self._relays[relay_id]
        if not relay.alive:
            raise UsageError("a relay the room lost went on using it")
        return relay

    def append(self, relay_id: bytes, event: EventBuilder, msgid: bytes) -> LoggedEvent:
        self.check(relay_id)
        if msgid:
            earlier = self.ids.get(msgid)
            if earlier is not None:  # a post resent (to this or another relay)
                return LoggedEvent(earlier.seq, earlier.chat, earlier.data, new=False)
        seq = self.last_seq + 1
        built = event(seq)
        if built.seq != seq:
            raise UsageError(f"an event built as number {built.seq}, not {seq}")
        self.last_seq = seq
        logged = LoggedEvent(seq, type(built) in CHAT_EVENTS, m.encode_message(built))
        if self._history:
            self.events.append(logged)
        if msgid:
            self.ids[msgid] = logged
            while len(self.ids) > self._max_ids:
                self.ids.popitem(last=False)
        arrival = ForeignEvent(seq, built, logged.data, relay_id)
        for rid, relay in self._relays.items():
            if rid != relay_id and relay.alive:
                relay.queue.append(arrival)
        return logged

    def claim(self, relay_id: bytes, nick: str, token: bytes) -> bool:
        self.check(relay_id)
        key = nick_key(nick)
        held = self.claims.get(key)
        if held is not None and held[0] != token:
            return False
        self.claims[key] = (token, relay_id)
        return True

    def release(self, relay_id: bytes, nick: str, token: bytes) -> None:
        self.check(relay_id)
        key = nick_key(nick)
        held = self.claims.get(key)
        if held is not None and held[0] == token:
            del self.claims[key]

    def move(self, relay_id: bytes, old_token: bytes, member: KeptMember) -> bool:
        self.check(relay_id)
        old = self.members.pop(old_token, None)
        self.claims = {k: held for k, held in self.claims.items() if held[0] != old_token}
        self.claims[nick_key(member.nick)] = (member.token, relay_id)
        self.members[member.token] = (member, relay_id)
        if old is not None and old[1] != relay_id and self._relays[old[1]].alive:
            self._relays[old[1]].queue.append(MemberLeftForRelay(old_token))
        return old is not None

    def route(self, relay_id: bytes, to: str, data: bytes) -> bool:
        self.check(relay_id)
        held = self.claims.get(nick_key(to))
        if held is None:
            return False
        target = self._relays[held[1]]
        if held[1] == relay_id or not target.alive:
            return False  # this relay's own members are found without the store
        target.queue.append(PrivateArrived(to, data))
        return True


class MemorySharedLog:
    """One relay's view of a ``SharedRoom`` (a ``SharedLog``)."""

    __slots__ = ("_id", "_room")

    def __init__(self, room: SharedRoom, relay_id: bytes) -> None:
        self._room = room
        self._id = relay_id

    @property
    def relay_id(self) -> bytes:
        return self._id

    @property
    def epoch(self) -> bytes:
        return self._room.epoch

    @property
    def last_seq(self) -> int:
        return self._room.last_seq

    @property
    def first_seq(self) -> int:
        events = self._room.events
        return events[0].seq if events and self._room._history else self._room.last_seq + 1

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        return self._room.append(self._id, event, msgid)

    def append_many(
        self, events: list[tuple[EventBuilder, bytes]]
    ) -> list[LoggedEvent | LogUnavailable]:
        results: list[LoggedEvent | LogUnavailable] = []
        for event, msgid in events:
            try:
                results.append(self._room.append(self._id, event, msgid))
            except LogUnavailable as error:
                results.append(error)
        return results

    def replay(self, after: int) -> list[bytes]:
        self._room.check(self._id)
        if not self._room._history:
            return []
        return events_after(self._room.events, after)

    def recent_chats(self, count: int) -> list[bytes]:
        self._room.check(self._id)
        if not count or not self._room._history:
            return []
        return newest_chats(self._room.events, count)

    def posted_ids(self, count: int) -> list[tuple[bytes, int]]:
        """The room's posts are recognised by ``append`` itself: the core need not keep
        them (and they are looked up across relays there)."""
        return []

    def keep_member(self, member: KeptMember) -> None:
        room = self._room
        room.check(self._id)
        room.members[member.token] = (member, self._id)

    def forget_member(self, token: bytes) -> None:
        room = self._room
        room.check(self._id)
        kept = room.members.get(token)
        if kept is not None and kept[1] == self._id:
            del room.members[token]

    def kept_members(self) -> list[KeptMember]:
        """This relay's own members (a relay that just connected has none)."""
        return [kept for kept, rid in self._room.members.values() if rid == self._id]

    def commit(self) -> None:
        """Nothing to do: every change is in the room as it is made."""

    def close(self) -> None:
        """Nothing to let go of; a relay that stops is noticed by ``SharedRoom.lose``."""

    # --- SharedLog ----------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self._room._relays[self._id].queue)

    def arrived(self) -> list[Arrival]:
        queue = self._room._relays[self._id].queue
        taken = list(queue)
        queue.clear()
        return taken

    def roster(self) -> list[str]:
        room = self._room
        room.check(self._id)
        return sorted(kept.nick for kept, _ in room.members.values())

    def claim_nick(self, nick: str, token: bytes) -> bool:
        return self._room.claim(self._id, nick, token)

    def release_nick(self, nick: str, token: bytes) -> None:
        self._room.release(self._id, nick, token)

    def find_member(self, token: bytes) -> KeptMember | None:
        room = self._room
        room.check(self._id)
        kept = room.members.get(token)
        return kept[0] if kept is not None else None

    def move_member(self, old_token: bytes, member: KeptMember) -> bool:
        return self._room.move(self._id, old_token, member)

    def send_private(self, to: str, data: bytes) -> bool:
        return self._room.route(self._id, to, data)
