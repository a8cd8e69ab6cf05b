"""The member's own messages, from the moment they are typed until the relay answers them.

Own messages live in one of five places, so none is lost or sent twice across a rejoin:

* the *outbox*: not yet handed to a link (typed while away, or the link's buffer is full);
* the *log*: handed to the current link, not yet known to have reached the relay;
* *awaiting*: SAY and ACTION handed to the current link whose POSTED or REFUSED is due;
* *limbo*: ones a previous session received but never answered;
* *resend*: ones a previous session may not have received.

After a rejoin, WELCOME's ``resumed`` says how much of the log the relay got: the rest goes to
*resend*, the unanswered part to *limbo*, and the ledger is *catching up*. Own messages in the
catch-up history confirm entries of both; once history is over, what is left in limbo is
reported unconfirmed and *resend* goes out again, ahead of the outbox. PRIVATE_SEND, NICK and
WHO wait in *answers*: the relay answers each exactly once, in stream order (protocol.md 6.2).
Requests leave no faster than the pacer allows (protocol.md 6.5), QUIT excepted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from udpchat import events as ev
from udpchat import messages as msg
from udpchat.client.config import ClientConfig, QueueFull
from udpchat.link import Link, LinkDead, SendBufferFull
from udpchat.ratelimit import TokenBucket

__all__ = ["CLOSED_UNCONFIRMED", "UNCONFIRMED", "Ledger", "Outgoing", "chat_kind"]

UNCONFIRMED = "the relay did not confirm this message before the connection was lost"
CLOSED_UNCONFIRMED = "the session closed before the relay confirmed this message"


@dataclass(eq=False, slots=True)
class Outgoing:
    """One message of ours on its way to the relay."""

    message: msg.ClientMessage
    data: bytes
    local_id: int | None = None  # SAY and ACTION: the id the user was given
    request: int | None = None  # PRIVATE_SEND, NICK and WHO: the id the user was given
    internal: bool = False  # a WHO sent only to learn where catch-up history ends
    index: int = -1  # its position in the current link's stream once handed over


def chat_kind(message: msg.ClientMessage) -> tuple[bool, str] | None:
    """(is an action, text) for SAY and ACTION, None for other messages."""
    match message:
        case msg.Say(text=text):
            return False, text
        case msg.Action(text=text):
            return True, text
        case _:
            return None


class Ledger:
    """Own messages in their five places (see the module docstring), and the pacer."""

    def __init__(
        self, config: ClientConfig, emit: Callable[[ev.ClientEvent], None], now: float
    ) -> None:
        self._emit = emit
        self._max_pending = config.max_pending
        self._next_local_id = 1
        self.outbox: deque[Outgoing] = deque()
        self._pacer = (
            TokenBucket(config.pace_rate, config.pace_burst, updated=now)
            if config.pace_rate > 0
            else None
        )
        self.pace_at: float | None = None  # when the pacer lets the next request go
        self._log: deque[Outgoing] = deque()
        self._log_token: bytes | None = None  # the link the log was sent on
        self._sent_count = 0
        self.awaiting: deque[Outgoing] = deque()
        self.limbo: deque[Outgoing] = deque()
        self._resend: deque[Outgoing] = deque()  # held until catch-up history is over
        self.catching_up = False
        self._answers: deque[Outgoing] = deque()

    @property
    def log_token(self) -> bytes | None:
        return self._log_token

    @property
    def pending(self) -> int:
        """Own SAY and ACTION messages the relay has neither posted nor refused yet."""
        queued = sum(1 for o in self.outbox if o.local_id is not None)
        held = sum(1 for o in self._resend if o.local_id is not None)
        return queued + held + len(self.awaiting) + len(self.limbo)

    @property
    def settled(self) -> bool:
        """Nothing queued, awaiting an answer, in limbo, or held for catch-up."""
        return not (self.outbox or self.awaiting or self.limbo or self.catching_up)

    def next_id(self) -> int:
        """The id the next message or request will be known by."""
        return self._next_local_id

    def enqueue(
        self, message: msg.ClientMessage, local_id: int | None = None, request: int | None = None
    ) -> None:
        """Queue a message under the id ``next_id`` gave, or raise ``QueueFull``."""
        if len(self.outbox) >= self._max_pending:
            raise QueueFull(
                f"{len(self.outbox)} messages are already waiting for the relay; try again later"
            )
        self.outbox.append(Outgoing(message, msg.encode_message(message), local_id, request))
        self._next_local_id += 1

    def queue_quit(self, message: msg.Quit, welcomed: bool) -> None:
        """QUIT goes last; without a WELCOME, what waits for one will never be sent."""
        if not welcomed:
            self.fail_unconfirmed(self.outbox, CLOSED_UNCONFIRMED)
            self.outbox.clear()
        self.outbox.append(Outgoing(message, msg.encode_message(message)))

    def feed(self, link: Link | None, now: float) -> None:
        """Hand queued messages to the link while it takes them (not during catch-up), no
        faster than the pace allows."""
        self.pace_at = None
        if self.catching_up:
            return
        pacer = self._pacer
        while self.outbox:
            entry = self.outbox[0]
            paced = pacer is not None and not isinstance(entry.message, msg.Quit)
            if paced and pacer is not None and not pacer.take(now):
                self.pace_at = now + max((1 - pacer.tokens) / pacer.rate, 1e-6)
                return
            if not self._hand(link, entry):
                if pacer is not None:
                    pacer.tokens += 1  # not sent after all
                return
            self.outbox.popleft()

    def _hand(self, link: Link | None, entry: Outgoing) -> bool:
        """Give one message to the link and remember it until the relay shows it arrived."""
        if link is None:
            return False
        try:
            link.send(entry.data)
        except (SendBufferFull, LinkDead):
            return False
        if isinstance(entry.message, msg.Quit):
            return True  # never resent: nothing is kept for it
        entry.index = self._sent_count
        self._sent_count += 1
        self._log.append(entry)
        if entry.local_id is not None:
            self.awaiting.append(entry)
        else:  # PRIVATE_SEND, NICK, WHO, WHO_PAGE: answered in stream order (6.2)
            self._answers.append(entry)
        return True

    def rebase(self, received: int, link: Link) -> None:
        """Take stock of the old link's unconfirmed messages after WELCOME on a new one.

        The first ``received`` messages of the old stream reached the relay: its SAY and
        ACTION whose answers were lost go to limbo. The rest are sent again, but only once
        catch-up history is over: if the relay had already forgotten the old session,
        ``received`` is 0 although it may have posted some of them, and history shows which.
        """
        resend = [o for o in self._log if o.index >= received]
        resend.extend(self._resend)  # held back by a catch-up that a new loss cut short
        resent = {id(o) for o in resend}
        self.limbo.extend(o for o in self.awaiting if id(o) not in resent)
        self._resend = deque(resend)
        self.awaiting.clear()
        self._log.clear()
        self._answers.clear()
        self._sent_count = 0
        self._log_token = link.token
        self.catching_up = bool(self.limbo or self._resend)
        if self.catching_up:
            # Its MEMBERS answer comes after all history: the end of catch-up at the latest.
            barrier = msg.Who()
            self._hand(link, Outgoing(barrier, msg.encode_message(barrier), internal=True))

    def link_idle(self, token: bytes) -> None:
        """Everything sent on the link with ``token`` is acknowledged: the relay holds it."""
        if self._log_token == token:
            self._log.clear()

    # --- answers ------------------------------------------------------------------------------

    def answered(self, kind: type[msg.ClientMessage] | None) -> Outgoing | None:
        """Take the oldest request still due an answer, if it is of ``kind`` (None: any)."""
        if self._answers and (kind is None or isinstance(self._answers[0].message, kind)):
            return self._answers.popleft()
        return None

    def take_awaiting(self) -> Outgoing | None:
        """The SAY or ACTION a POSTED or REFUSED answers (the oldest), None if none is due;
        the relay processed everything sent before it, in order."""
        if not self.awaiting:
            return None
        entry = self.awaiting.popleft()
        while self._log and self._log[0].index <= entry.index:
            self._log.popleft()
        return entry

    def confirm_own(self, action: bool, text: str) -> Outgoing | None:
        """The message of ours that a history event shows posted, in stream order.

        The relay handles a stream in order, so every message before the match reached it
        too: SAY and ACTION among them that history does not show were not posted, and none
        of them is sent again.
        """
        for queue in (self.limbo, self._resend):
            for position, entry in enumerate(queue):
                if chat_kind(entry.message) == (action, text):
                    if queue is self._resend:
                        self.fail_unconfirmed(self.limbo, UNCONFIRMED)
                        self.limbo.clear()
                    skipped = [queue.popleft() for _ in range(position)]
                    self.fail_unconfirmed(skipped, UNCONFIRMED)
                    return queue.popleft()
        return None

    def end_catch_up(self) -> None:
        """Catch-up history is over: limbo messages it did not show were not posted, and
        what the relay did not receive goes out again, ahead of anything typed since."""
        if not self.catching_up:
            return
        self.catching_up = False
        self.fail_unconfirmed(self.limbo, UNCONFIRMED)
        self.limbo.clear()
        self.outbox.extendleft(reversed(self._resend))
        self._resend.clear()  # fed to the link at the next datagrams_to_send

    def fail_unconfirmed(self, entries: Iterable[Outgoing], reason: str) -> None:
        for entry in entries:
            kind = chat_kind(entry.message)
            if entry.local_id is not None and kind is not None:
                self._emit(ev.MessageRefused(entry.local_id, kind[1], reason))

    def close(self) -> None:
        """The session ends: every message still unconfirmed is reported so."""
        for queue in (self.limbo, self._resend, self.awaiting, self.outbox):
            self.fail_unconfirmed(queue, CLOSED_UNCONFIRMED)
        for queue in (self.limbo, self._resend, self.awaiting, self.outbox, self._log):
            queue.clear()
