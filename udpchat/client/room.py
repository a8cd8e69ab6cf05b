"""The member's view of the room: its nickname, who is here, and what the relay says in it.

``RoomView`` reads the relay's stream after WELCOME: room events (chat, joins, leaves, nick
changes), the answers to our requests (POSTED, REFUSED, PRIVATE, MEMBERS, ERROR) and turns
them into client events. Room events go through the cursor (history or live, gaps) and end
catch-up when live; answers are matched to what the ledger sent, in stream order
(protocol.md 6.2). History never changes the member list: the list in WELCOME is current.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from udpchat import events as ev
from udpchat import messages as msg
from udpchat.client.config import Counters
from udpchat.client.cursor import RoomCursor
from udpchat.client.ledger import Ledger, chat_kind
from udpchat.names import nick_key

__all__ = ["SILENT_REFUSAL", "RoomView"]

# protocol.md 6.5: after the first refusal of a burst, the relay's refusals say nothing.
SILENT_REFUSAL = "flood control: not delivered"
# Nicknames whose keys are remembered (a key takes three Unicode normalisations, and every
# chat line needs its sender's); past this many the memo starts again.
KEY_MEMO = 1024


class RoomView:
    """The nickname, the members, and the relay's stream of room events and answers."""

    def __init__(
        self,
        nick: str,
        cursor: RoomCursor,
        ledger: Ledger,
        counters: Counters,
        emit: Callable[[ev.ClientEvent], None],
        wall_offset: float,
    ) -> None:
        self._keys: dict[str, str] = {}  # nick -> nick_key(nick), see KEY_MEMO
        self.nick = nick
        self._members: dict[str, str] = {}
        # protocol.md 6.7: in a paged room, how many are in it (the relay said so after
        # WELCOME; joins and leaves keep it current) and the page to ask for next, if a
        # /who is under way: (after, the request id of the /who).
        self.room_size: int | None = None
        self.next_page: tuple[str, int | None] | None = None
        self._size_due = False
        self._cursor = cursor
        self._ledger = ledger
        self._counters = counters
        self._emit = emit
        self._wall_offset = wall_offset

    @property
    def nick(self) -> str:
        return self._nick

    @nick.setter
    def nick(self, nick: str) -> None:
        self._nick = nick
        self._own_key = self._key(nick)

    def _key(self, nick: str) -> str:
        """``nick_key(nick)``, remembered."""
        key = self._keys.get(nick)
        if key is None:
            if len(self._keys) >= KEY_MEMO:
                self._keys.clear()
            key = self._keys[nick] = nick_key(nick)
        return key

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self._members.values(), key=lambda n: (nick_key(n), n)))

    def welcome(self, welcome: msg.Welcome) -> None:
        self.nick = welcome.nick
        self._members = {nick_key(n): n for n in welcome.members}
        self.room_size, self._size_due = None, True

    @property
    def paged(self) -> bool:
        """Whether the relay lists this room's members in pages (/who asks page by page)."""
        return self.room_size is not None

    def on_message(self, message: msg.Message, now: float) -> None:
        """One message of the stream after WELCOME (SHUTDOWN is the session's)."""
        size_due, self._size_due = self._size_due, False
        match message:
            case msg.ChatMessage() | msg.ActionMessage():  # by far the most common: first
                self._on_chat(message)
            case msg.MembersPage() if size_due:  # protocol.md 6.7: the room's size
                self.room_size = message.total
            case msg.MembersPage():
                self._on_page(message)
            case msg.Joined():
                self._on_joined(message)
            case msg.Left():
                self._on_left(message)
            case msg.JoinedBatch():
                self._on_joined_batch(message)
            case msg.LeftBatch():
                self._on_left_batch(message)
            case msg.NickChanged():
                self._on_nick_changed(message)
            case msg.Posted() | msg.Refused():
                self._on_answer(message, now)
            case msg.Private():
                self._on_private(message)
            case msg.Members():
                self._on_members(message)
            case msg.Error():
                self._on_error(message)
            case _:  # a second WELCOME, or a client-to-relay kind
                self._counters.bad_messages += 1

    def _note_room_event(self, seq: int) -> bool:
        """Account a room event's sequence number; return whether it is history."""
        history = self._cursor.is_history(seq)
        if not history:
            self._ledger.end_catch_up()
        self._cursor.advance(seq)
        return history

    def _on_chat(self, event: msg.ChatMessage | msg.ActionMessage) -> None:
        history = self._note_room_event(event.seq)
        action = isinstance(event, msg.ActionMessage)
        own = self._key(event.nick) == self._own_key
        local_id = None
        if own and history and self._cursor.confirms_own(event.seq):
            confirmed = self._ledger.confirm_own(action, event.text)
            if confirmed is not None:
                local_id = confirmed.local_id
        if history and local_id is None:
            own = False  # the same nickname in an earlier session, maybe somebody else's
        self._emit(
            ev.MessageReceived(
                event.seq,
                float(event.time),
                event.nick,
                event.text,
                action=action,
                own=own,
                history=history,
                local_id=local_id,
            )
        )

    def _on_joined(self, event: msg.Joined) -> None:
        history = self._note_room_event(event.seq)
        if not history:
            self._members[nick_key(event.nick)] = event.nick
            self._resize(1)
        elif nick_key(event.nick) == nick_key(self.nick):
            # Our own JOINED, replayed by a resume that asked from just before it (it went
            # to the others only): a client shows no notice of itself (protocol.md 6.3).
            return
        self._emit(ev.MemberJoined(event.seq, float(event.time), event.nick, history=history))

    def _on_left(self, event: msg.Left) -> None:
        history = self._note_room_event(event.seq)
        if not history and nick_key(event.nick) == nick_key(self.nick):
            # We are here to read it: a relay that died announced us after we had moved on,
            # and the relay we are on announces us anew (protocol.md 6.8).
            return
        if not history:
            self._members.pop(nick_key(event.nick), None)
            self._resize(-1)
        reason = msg.leave_reason_words(event.reason)
        self._emit(
            ev.MemberLeft(
                event.seq, float(event.time), event.nick, reason, event.text, history=history
            )
        )

    def _on_joined_batch(self, event: msg.JoinedBatch) -> None:
        """protocol.md 6.3: a batch goes to everyone, the members it names included: a
        newcomer finds itself in it (WELCOME counted it already), and the others who joined
        in the same window, whom its WELCOME did not list."""
        history = self._note_room_event(event.seq)
        mine = nick_key(self.nick)
        joined = tuple(n for n in event.joined if nick_key(n) != mine)
        returned = tuple(n for n in event.returned if nick_key(n) != mine)
        if not history:
            for nick in (*event.joined, *event.returned):
                self._members[nick_key(nick)] = nick
            self._resize(len(joined) + len(returned))
        if joined or returned:
            time = float(event.time)
            self._emit(ev.MembersJoined(event.seq, time, joined, returned, history))

    def _resize(self, change: int) -> None:
        if self.room_size is not None:
            self.room_size = max(self.room_size + change, len(self._members))

    def _on_left_batch(self, event: msg.LeftBatch) -> None:
        history = self._note_room_event(event.seq)
        mine = nick_key(self.nick)
        if not history and any(nick_key(n) == mine for n in event.nicks):  # as in _on_left
            kept = [i for i, n in enumerate(event.nicks) if nick_key(n) != mine]
            if not kept:
                return
            event = replace(
                event,
                nicks=tuple(event.nicks[i] for i in kept),
                reasons=tuple(event.reasons[i] for i in kept),
                texts=tuple(event.texts[i] for i in kept),
            )
        if not history:
            for nick in event.nicks:
                self._members.pop(nick_key(nick), None)
            self._resize(-len(event.nicks))
        reasons = tuple(msg.leave_reason_words(r) for r in event.reasons)
        left = ev.MembersLeft(event.seq, float(event.time), event.nicks, reasons, event.texts)
        self._emit(left if not history else replace(left, history=True))

    def _on_nick_changed(self, event: msg.NickChanged) -> None:
        history = self._note_room_event(event.seq)
        mine = nick_key(self.nick)
        own = nick_key(event.old) == mine or (history and nick_key(event.new) == mine)
        if not history:
            self._members.pop(nick_key(event.old), None)
            self._members[nick_key(event.new)] = event.new
            if own:
                self._ledger.answered(msg.NickRequest)
                self.nick = event.new
        renamed = ev.MemberRenamed(event.seq, float(event.time), event.old, event.new, own, history)
        self._emit(renamed)

    def _on_answer(self, answer: msg.Posted | msg.Refused, now: float) -> None:
        self._ledger.end_catch_up()
        entry = self._ledger.take_awaiting()
        if entry is None:
            self._counters.bad_messages += 1  # an answer to nothing we sent
            return
        kind = chat_kind(entry.message)
        assert kind is not None and entry.local_id is not None
        action, text = kind
        match answer:
            case msg.Refused():
                reason = answer.text or SILENT_REFUSAL
                self._emit(ev.MessageRefused(entry.local_id, text, reason))
            case msg.Posted():
                self._cursor.advance(answer.seq)
                self._emit(
                    ev.MessageReceived(
                        answer.seq,
                        now + self._wall_offset,
                        self.nick,
                        text,
                        action=action,
                        own=True,
                        local_id=entry.local_id,
                    )
                )

    def _on_private(self, message: msg.Private) -> None:
        self._ledger.end_catch_up()
        if nick_key(message.sender) == nick_key(self.nick):
            self._ledger.answered(msg.PrivateSend)  # the relay's copy of ours
        self._emit(
            ev.PrivateReceived(float(message.time), message.sender, message.to, message.text)
        )

    def _on_members(self, message: msg.Members) -> None:
        self._ledger.end_catch_up()
        answered = self._ledger.answered(msg.Who)
        known = self._members
        self._members = {nick_key(n): n for n in message.members}
        if answered is not None and message.members and len(known) > len(message.members):
            # protocol.md 6.7: MEMBERS holds the list as far as it fits one message. We
            # knew more (our list is exact in a room our WELCOME did not page): the room
            # grew past that since we joined. The rest comes page by page, as in a paged
            # room; until then we keep what we knew of it.
            last = message.members[-1]
            self._members.update((key, nick) for key, nick in known.items() if nick > last)
            self.room_size = len(known)
            self.next_page = (last, answered.request)
            return
        if answered is None or not answered.internal:
            self._emit(ev.MembersListed(self.members))

    def _on_page(self, page: msg.MembersPage) -> None:
        """protocol.md 6.7: a page is the exact list, at its place in the stream, of the
        members sorted after ``page.after`` (up to its last name, or to the end): it replaces
        what we knew of that range, and the room events after it keep it current."""
        self._ledger.end_catch_up()
        answered = self._ledger.answered(msg.WhoPage)
        if answered is None:
            self._counters.bad_messages += 1  # an answer to nothing we sent
            return
        self.room_size = page.total
        last = page.members[-1] if page.members and page.more else None
        for key, nick in list(self._members.items()):
            if nick > page.after and (last is None or nick <= last):
                del self._members[key]
        self._members.update((nick_key(n), n) for n in page.members)
        if page.more and last is not None:
            self.next_page = (last, answered.request)
        elif not answered.internal:
            self._emit(ev.MembersListed(self.members))

    def _on_error(self, message: msg.Error) -> None:
        self._ledger.end_catch_up()
        answered = self._ledger.answered(None)
        request = answered.request if answered is not None else None
        self._emit(ev.ErrorReported(message.text or SILENT_REFUSAL, request))
