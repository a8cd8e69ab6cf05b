"""How client events look: one plain line or one JSON object, from one table of views.

Every event type has one view (``_VIEWS``): the type of its JSON record and the fields that
record carries, and the pieces of the line that shows it. A bot reading ``--json``, a script
reading plain lines and a person at the terminal (:mod:`udpchat.styled`) therefore see the
same facts. Every text, nickname and reason comes from strangers (through the relay), so:

* lines pass every such string through :func:`sanitize.safe_text` or
  :func:`sanitize.safe_nick`, and always fit on one line (a newline shows as ``␊``);
* JSON carries the **raw** strings, because a program needs the exact text (to answer a
  command, compare a nickname). It is still safe to dump on a terminal: it is written with
  ``ensure_ascii``, so every control, bidi or otherwise non-ASCII character becomes a
  ``\\uXXXX`` escape and the output is pure printable ASCII. Whoever decodes it and prints
  the strings must sanitise them.

Nothing here imports prompt_toolkit: the plain and JSON front ends run without it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

from udpchat.events import (
    ClientEvent,
    Closed,
    ConnectionLost,
    ErrorReported,
    HistoryGap,
    JoinRejected,
    MemberJoined,
    MemberLeft,
    MemberRenamed,
    MembersChanged,
    MembersJoined,
    MembersLeft,
    MembersListed,
    MessagePending,
    MessageReceived,
    MessageRefused,
    PrivateReceived,
    Reconnecting,
    RelayMoved,
    Welcomed,
)
from udpchat.names import nick_key
from udpchat.roll import cells, roll
from udpchat.sanitize import safe_nick, safe_text
from udpchat.style import Fragment, ansi, format_clock, nick_colour

__all__ = [
    "PENDING_MARKER",
    "error_text",
    "fragments",
    "json_line",
    "json_record",
    "mentions",
    "notice_line",
    "plain_line",
    "stats_lines",
]

PENDING_MARKER = "(sending)"
# A batch of joins or leaves is one line of at most this many columns, clock included.
BATCH_LINE_WIDTH = 80
# What precedes a notice's body: the clock (HH:MM:SS), a space and the marker "-- ".
NOTICE_PREFIX_WIDTH = 12

E = TypeVar("E")
Body = Callable[[Any], list[Fragment]]


class _View(NamedTuple):
    kind: str  # the JSON record's "type"
    fields: tuple[tuple[str, str], ...]  # (JSON name, attribute), in the record's order
    body: Body  # the pieces of the line after the clock, sanitised
    pending: bool = False  # not confirmed yet: dim, and no plain line (its answer follows)


_VIEWS: dict[type, _View] = {}


def _view(
    event_type: type[E], kind: str, *fields: str | tuple[str, str], pending: bool = False
) -> Callable[[Callable[[E], list[Fragment]]], Callable[[E], list[Fragment]]]:
    """Register the body function below as the view of ``event_type``; ``fields`` name the
    attributes its JSON record carries (a pair renames one)."""
    pairs = tuple((f, f) if isinstance(f, str) else f for f in fields)

    def register(body: Callable[[E], list[Fragment]]) -> Callable[[E], list[Fragment]]:
        _VIEWS[event_type] = _View(kind, pairs, body, pending)
        return body

    return register


def fragments(
    event: ClientEvent, now: float | None = None, *, mention: str | None = None
) -> list[Fragment] | None:
    """The sanitised pieces of the line that shows ``event``, or None for an unknown event.

    ``now`` stamps events that carry no relay time (default: the current time). With
    ``mention`` (our nickname), every whole-word occurrence of it in a message's text gets
    the role "mention", so that the user sees at once where the room talks to them.
    """
    view = _VIEWS.get(type(event))
    if view is None:
        return None
    stamp = getattr(event, "time", None)
    if not isinstance(stamp, (int, float)):
        stamp = time.time() if now is None else now
    line = [("time", format_clock(stamp)), ("", " "), *view.body(event)]
    if view.pending:
        line = [("pending", text) for _, text in line]
    elif mention:
        line = _mark_mentions(line, mention)
    return line


def mentions(event: ClientEvent, nick: str) -> bool:
    """Whether ``event`` calls for the attention of ``nick``: a live message from somebody
    else naming it as a word, or a private message to it."""
    match event:
        case PrivateReceived():
            return nick_key(event.sender) != nick_key(nick)
        case MessageReceived(own=False, history=False):
            if nick_key(event.nick) == nick_key(nick):
                return False
            return _mention_pattern(nick).search(safe_text(event.text)) is not None
    return False


def _mention_pattern(nick: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(safe_nick(nick))}(?!\w)", re.IGNORECASE)


def _mark_mentions(pieces: list[Fragment], nick: str) -> list[Fragment]:
    pattern = _mention_pattern(nick)
    out: list[Fragment] = []
    for role, text in pieces:
        if role != "text":
            out.append((role, text))
            continue
        at = 0
        for found in pattern.finditer(text):
            if found.start() > at:
                out.append(("text", text[at : found.start()]))
            out.append(("mention", found.group()))
            at = found.end()
        if at < len(text):
            out.append(("text", text[at:]))
    return out


def plain_line(event: ClientEvent, now: float | None = None) -> str | None:
    """One plain, sanitised line for ``event``, or None when it has nothing to show.

    A pending message of ours shows nothing: its confirmed line follows in room order (or a
    "not delivered" line if the relay refuses it), so a reader of the output sees each message
    once, where everybody else saw it.
    """
    view = _VIEWS.get(type(event))
    if view is None or view.pending:
        return None
    pieces = fragments(event, now)
    return None if pieces is None else "".join(text for _, text in pieces)


def notice_line(text: str, *, colour: bool = True, now: float | None = None) -> str:
    """A notice of our own (``HH:MM:SS -- text``), styled as the room's notices are."""
    stamp = time.time() if now is None else now
    pieces = [("time", format_clock(stamp)), ("", " "), *_notice(("notice", text))]
    return ansi(pieces, colour)


def json_line(event: ClientEvent, *, line: int | None = None) -> str:
    """``event`` as one line of JSON with a ``type`` field; strings are raw (see above).

    ``line`` is the input line the event answers (pending, own messages, refusals and
    errors carry a ``line`` field, null when they answer none). Times are whole Unix
    seconds, the relay's unit, so that a message has the same kind of time for everyone.
    """
    view = _VIEWS.get(type(event))
    if view is None:
        return json_record("unknown", {"event": type(event).__name__})
    fields = {name: getattr(event, attribute) for name, attribute in view.fields}
    if view.kind in _LINE_RECORDS:
        fields["line"] = line
    if "time" in fields:
        fields["time"] = int(fields["time"])
    return json_record(view.kind, fields)


_LINE_RECORDS = frozenset({"pending", "message", "refused", "error"})


def error_text(event: ErrorReported | MessageRefused | JoinRejected) -> str:
    """The sanitised one-line text of an error event, without time or marker: for stderr."""
    body = _VIEWS[type(event)].body(event)
    return "".join(text for role, text in body if role != "errmark")


def json_record(kind: str, fields: Mapping[str, object]) -> str:
    """One JSON line ``{"type": kind, **fields}``, pure ASCII (tuples become arrays)."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=True, separators=(",", ":"))


def stats_lines(stats: Mapping[str, float | int]) -> list[str]:
    """The link statistics in words a person reads, one string per row.

    The keys are those of ``ChatClient.stats`` (a program gets them raw, in JSON); a key
    this function does not know is shown as it is.
    """
    if not stats:
        return ["no link statistics yet"]
    left = dict(stats)
    rows: list[tuple[str, str]] = []

    def take(key: str) -> float | int | None:
        return left.pop(key, None)

    srtt, rto = take("srtt_ms"), take("rto_ms")
    if srtt is not None:
        timeout = f" (resend after {_ms(rto)} without an answer)" if rto is not None else ""
        rows.append(("round trip", f"{_ms(srtt)}{timeout}"))
    sent, received = take("datagrams_sent"), take("datagrams_received")
    if sent is not None or received is not None:
        rows.append(("datagrams", f"{sent or 0} sent, {received or 0} received"))
    resent = take("retransmissions")
    if resent is not None:
        rows.append(("resent by us", str(resent)))
    loss = take("loss_estimate")
    if loss is not None:
        rows.append(("loss", f"{loss:.0%} (estimated from what had to be resent)"))
    duplicates = take("duplicates_dropped")
    if duplicates is not None:
        why = " (the relay resent them before our ACK reached it; harmless)" if duplicates else ""
        rows.append(("duplicates", f"{duplicates} dropped{why}"))
    for key, label in (
        ("messages_delivered", "messages in"),
        ("reconnects", "rejoins"),
        ("relay_moves", "relay moves"),
        ("bad_datagrams_dropped", "bad datagrams"),
    ):
        value = take(key)
        if value is not None:
            rows.append((label, str(value)))
    rows.extend((safe_text(name), _number(value)) for name, value in left.items())
    width = max(len(label) for label, _ in rows)
    return ["link statistics", *(f"  {label:<{width}}  {value}" for label, value in rows)]


def _ms(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g} ms" if value < 10 else f"{value:.0f} ms"


def _number(value: float | int) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- the views, one per event type ------------------------------------------------------------


def _nick(nick: str) -> Fragment:
    return (f"nick{nick_colour(nick)}", safe_nick(nick))


def _notice(*pieces: Fragment) -> list[Fragment]:
    return [("marker", "-- "), *pieces]


def _error(text: str) -> list[Fragment]:
    return [("errmark", "!! "), ("error", text)]


def _nicks(members: tuple[str, ...]) -> list[Fragment]:
    out: list[Fragment] = [("notice", f"in the room ({len(members)}): ")]
    for i, member in enumerate(members):
        if i:
            out.append(("notice", ", "))
        out.append(_nick(member))
    return out


@_view(
    MessageReceived,
    "message",
    ("from", "nick"),
    *("text", "seq", "time", "action", "own", "history", "local_id"),
)
def _message(event: MessageReceived) -> list[Fragment]:
    text = ("text", safe_text(event.text))
    if event.action:
        return [("", "* "), _nick(event.nick), ("", " "), text]
    return [("", "<"), _nick(event.nick), ("", "> "), text]


@_view(MessagePending, "pending", "local_id", "text", "action", pending=True)
def _pending(event: MessagePending) -> list[Fragment]:
    star = "* " if event.action else ""
    return [("", f"{PENDING_MARKER} {star}{safe_text(event.text)}")]


@_view(MessageRefused, "refused", "local_id", "text", "reason")
def _refused(event: MessageRefused) -> list[Fragment]:
    return _error(f"not delivered ({safe_text(event.reason)}): {safe_text(event.text)}")


@_view(PrivateReceived, "private", ("from", "sender"), "to", "text", "time")
def _private(event: PrivateReceived) -> list[Fragment]:
    return [
        ("private", "["),
        _nick(event.sender),
        ("private", " -> "),
        _nick(event.to),
        ("private", "] "),
        ("text", safe_text(event.text)),
    ]


@_view(MemberJoined, "join", "nick", "seq", "time", "history")
def _joined(event: MemberJoined) -> list[Fragment]:
    return _notice(_nick(event.nick), ("notice", " joined"))


@_view(MemberLeft, "leave", "nick", "reason", "text", "seq", "time", "history")
def _left(event: MemberLeft) -> list[Fragment]:
    why = safe_text(event.reason)
    if event.text and event.text != event.reason:  # a timeout's text repeats its reason
        why += ": " + safe_text(event.text)
    return _notice(_nick(event.nick), ("notice", f" left ({why})"))


@_view(MembersJoined, "joins", "nicks", "returned", "seq", "time", "history")
def _joined_batch(event: MembersJoined) -> list[Fragment]:
    room = BATCH_LINE_WIDTH - NOTICE_PREFIX_WIDTH
    if not event.returned:
        return _notice(*roll(event.nicks, "joined", room))
    if not event.nicks:
        return _notice(*roll(event.returned, "back", room))
    first = roll(event.nicks, "joined", room // 2 - 1)
    used = sum(cells(text) for _, text in first) + 2
    return _notice(*first, ("notice", "; "), *roll(event.returned, "back", room - used))


@_view(MembersLeft, "leaves", "nicks", "reasons", "texts", "seq", "time", "history")
def _left_batch(event: MembersLeft) -> list[Fragment]:
    if len(event.nicks) == 1:  # one alone reads as a LEFT did, with its reason
        single = MemberLeft(event.seq, event.time, event.nicks[0], event.reasons[0], event.texts[0])
        return _left(single)
    return _notice(*roll(event.nicks, "left", BATCH_LINE_WIDTH - NOTICE_PREFIX_WIDTH))


@_view(MemberRenamed, "nick", "old", "new", "own", "seq", "time", "history")
def _renamed(event: MemberRenamed) -> list[Fragment]:
    if event.own:
        return _notice(("notice", "you are now "), _nick(event.new))
    return _notice(_nick(event.old), ("notice", " is now "), _nick(event.new))


@_view(Welcomed, "welcome", "nick", "members", "size", "resumed", "history_lost")
def _welcomed(event: Welcomed) -> list[Fragment]:
    """``you are alice; in the room (1,000): ann, bob, … and 998 more``: one line of
    BATCH_LINE_WIDTH columns, however large the room (its WELCOME may name a first page)."""
    verb = "rejoined as " if event.resumed else "you are "
    head: list[Fragment] = [("notice", verb), _nick(event.nick), ("notice", "; ")]
    used = NOTICE_PREFIX_WIDTH + sum(cells(text) for _, text in head)
    room = _room_roll(event.members, event.size, BATCH_LINE_WIDTH - used)
    if event.history_lost:  # rare, and worth its longer line
        head.insert(0, ("notice", "the room started afresh, its history lost; "))
    return _notice(*head, *room)


def _room_roll(members: tuple[str, ...], size: int, width: int) -> list[Fragment]:
    """``in the room (1,000): ann, bob, … and 998 more`` in ``width`` columns (at least
    the count): the names that fit, in order, and how many more the room holds."""
    out: list[Fragment] = [("notice", f"in the room ({size:,})")]
    used = cells(out[0][1]) + 2
    for i, member in enumerate(members):
        shown = safe_nick(member)
        sep = ", " if i else ""
        rest = size - i - 1
        tail = f", … and {rest:,} more" if rest else ""
        if used + len(sep) + cells(shown) + len(tail) > width:
            if i:
                out.append(("notice", f", … and {size - i:,} more"))
            return out
        out.append(("notice", sep or ": "))
        out.append(_nick(member))
        used += len(sep) + cells(shown)
    return out


@_view(MembersChanged, "away", "left", "joined")
def _away(event: MembersChanged) -> list[Fragment]:
    """``while you were away: bob left; 2 joined: carol, dave``: what no history told."""
    head = "while you were away: "
    room = BATCH_LINE_WIDTH - NOTICE_PREFIX_WIDTH - len(head)
    lists = [(nicks, verb) for nicks, verb in ((event.left, "left"), (event.joined, "joined"))]
    lists = [(nicks, verb) for nicks, verb in lists if nicks]
    body: list[Fragment] = [("notice", head)]
    for i, (nicks, verb) in enumerate(lists):
        # the first list leaves the second room for at least its count ("2 joined")
        later = sum(len(f"; {len(n)} {v}") for n, v in lists[i + 1 :])
        if i:
            body.append(("notice", "; "))
            room -= 2
        part = roll(nicks, verb, room - later)
        body.extend(part)
        room -= sum(cells(text) for _, text in part)
    return _notice(*body)


@_view(MembersListed, "who", "members")
def _listed(event: MembersListed) -> list[Fragment]:
    return _notice(*_nicks(event.members))


@_view(HistoryGap, "history_gap", "first_missing", "last_missing")
def _gap(event: HistoryGap) -> list[Fragment]:
    first, last = event.first_missing, event.last_missing
    span = f"event {first}" if first == last else f"events {first} to {last}"
    return _notice(("notice", f"missed room {span}: the relay no longer has them"))


@_view(ErrorReported, "error", "text")
def _reported(event: ErrorReported) -> list[Fragment]:
    return _error(safe_text(event.text))


@_view(ConnectionLost, "connection_lost", "reason", "silent_for")
def _lost(event: ConnectionLost) -> list[Fragment]:
    heard = f", last heard {event.silent_for:.0f} s ago" if event.silent_for >= 1 else ""
    return _error(f"lost the relay ({safe_text(event.reason)}{heard}); trying to rejoin")


@_view(Reconnecting, "reconnecting", "attempt", "delay")
def _reconnecting(event: Reconnecting) -> list[Fragment]:
    """``trying to rejoin (attempt 1)…``, or ``rejoin attempt 3 starts in 4 s…``.

    Not ``rejoining in 0.5 s``: that read as the rhythm of the retries, while each attempt
    keeps asking for seconds (until the join timeout) before the next one is scheduled."""
    if event.delay < 1:
        return _notice(("notice", f"trying to rejoin (attempt {event.attempt})\u2026"))
    wait = f"{event.delay:.0f} s"
    return _notice(("notice", f"rejoin attempt {event.attempt} starts in {wait}\u2026"))


@_view(RelayMoved, "relay_moved", "relay", "to", "reason", "attempt", "delay", "silent_for")
def _moved(event: RelayMoved) -> list[Fragment]:
    """``relay 127.0.0.1:9000 went silent; moved to 127.0.0.1:9001``: one line."""
    reason = safe_text(event.reason)
    lost = reason.removeprefix("the relay ")
    said = f"relay {safe_text(event.relay)} {lost}" if lost != reason else (
        f"relay {safe_text(event.relay)}: {reason}"
    )
    return _notice(("notice", f"{said}; moved to {safe_text(event.to)}"))


@_view(JoinRejected, "rejected", "code", "reason")
def _rejected(event: JoinRejected) -> list[Fragment]:
    return _error(f"the relay refused to let us in: {safe_text(event.reason)}")


@_view(Closed, "closed", "reason")
def _closed(event: Closed) -> list[Fragment]:
    reason = f": {safe_text(event.reason)}" if event.reason else ""
    return _notice(("notice", f"session closed{reason}"))
