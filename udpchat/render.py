"""How client events look: one plain line, one JSON object, or a styled terminal line.

All three are built from the same event, so a bot reading ``--json``, a script reading
plain lines and a person at the terminal see the same facts. Every text, nickname and reason
comes from strangers (through the relay), so:

* plain and styled lines pass every such string through :func:`sanitize.safe_text` or
  :func:`sanitize.safe_nick`, and always fit on one line (a newline shows as ``␊``);
* JSON carries the **raw** strings, because a program needs the exact text (to answer a
  command, compare a nickname). It is still safe to dump on a terminal: it is written with
  ``ensure_ascii``, so every control, bidi or otherwise non-ASCII character becomes a
  ``\\uXXXX`` escape and the output is pure printable ASCII. Whoever decodes it and prints
  the strings must sanitise them.

Styled lines give each nickname a stable colour: a hash of :func:`names.nick_key` (not
Python's ``hash``, which changes per process), so ``Bob`` is the same colour as ``BOB``, in
every run and on every machine. Colour is off when ``NO_COLOR`` is set (to anything,
even empty) or the output is not a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from typing import TextIO

from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.utils import get_cwidth

from udpchat.events import (
    ClientEvent,
    Closed,
    ConnectionLost,
    ErrorReported,
    HistoryGap,
    JoinRejected,
    MemberJoined,
    MemberLeft,
    MembersListed,
    MessagePending,
    MessageReceived,
    MessageRefused,
    NickChanged,
    PrivateReceived,
    Reconnecting,
    Welcomed,
)
from udpchat.names import nick_key
from udpchat.sanitize import safe_nick, safe_text

__all__ = [
    "NICK_COLOURS",
    "PENDING_MARKER",
    "Fragment",
    "ansi_line",
    "colour_enabled",
    "error_text",
    "format_clock",
    "fragments",
    "json_line",
    "json_record",
    "mentions",
    "nick_colour",
    "notice_line",
    "plain_line",
    "stats_lines",
    "styled_line",
    "wrap",
]

NICK_COLOURS = (33, 37, 70, 128, 130, 166, 169, 31, 36, 98, 136, 162)
"""xterm-256 colours for nicknames: mid-tones readable on dark and on light backgrounds.

Reds are left out so that nobody's name looks like an error."""

PENDING_MARKER = "(sending)"

Fragment = tuple[str, str]
"""``(role, text)``: a role names what the text is ("time", "nick3", "error", ...), and
:func:`styled_line` and :func:`ansi_line` decide how that role looks."""

_ROLE_SGR = {
    "": "",
    "text": "",
    "mention": "1;4",
    "time": "2",
    "pending": "2",
    "marker": "1",
    "notice": "3",
    "error": "31",
    "errmark": "1;31",
    "private": "35",
}
_ROLE_PTK = {
    "": "",
    "text": "",
    "mention": "bold underline",
    "time": "dim",
    "pending": "dim",
    "marker": "bold",
    "notice": "italic",
    "error": "fg:ansired",
    "errmark": "bold fg:ansired",
    "private": "fg:ansimagenta",
}
_LEVELS = (0, 95, 135, 175, 215, 255)  # the xterm-256 colour cube


def colour_enabled(stream: TextIO | None, environ: Mapping[str, str] | None = None) -> bool:
    """True when styled output should use colour: ``NO_COLOR`` unset and ``stream`` a TTY."""
    if "NO_COLOR" in (os.environ if environ is None else environ):
        return False
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def nick_colour(nick: str) -> int:
    """The xterm-256 colour of ``nick``: equal nicknames (by ``nick_key``) get equal colours."""
    key = nick_key(nick).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2s(key, digest_size=4).digest()
    return NICK_COLOURS[int.from_bytes(digest, "big") % len(NICK_COLOURS)]


def format_clock(t: float) -> str:
    """``HH:MM:SS`` in local time: the day is implied in a live chat."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def fragments(
    event: ClientEvent, now: float | None = None, *, mention: str | None = None
) -> list[Fragment] | None:
    """The sanitised pieces of the line that shows ``event``, or None for an unknown event.

    ``now`` stamps events that carry no relay time (default: the current time). With
    ``mention`` (our nickname), every whole-word occurrence of it in a message's text gets
    the role "mention", so that the user sees at once where the room talks to them.
    """
    body = _body(event)
    if body is None:
        return None
    stamp = getattr(event, "time", None)
    if not isinstance(stamp, (int, float)):
        stamp = time.time() if now is None else now
    line = [("time", format_clock(stamp)), ("", " "), *body]
    if isinstance(event, MessagePending):
        line = [("pending", text) for _, text in line]
    elif mention:
        line = _mark_mentions(line, mention)
    return line


def mentions(event: ClientEvent, nick: str) -> bool:
    """Whether ``event`` calls for the attention of ``nick``: a live message from somebody
    else naming it as a word, or a private message to it."""
    if isinstance(event, PrivateReceived):
        return nick_key(event.sender) != nick_key(nick)
    if not isinstance(event, MessageReceived) or event.own or event.history:
        return False
    if nick_key(event.nick) == nick_key(nick):
        return False
    return _mention_pattern(nick).search(safe_text(event.text)) is not None


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


def wrap(pieces: list[Fragment], width: int) -> list[list[Fragment]]:
    """``pieces`` as lines at most ``width`` columns wide, broken between words.

    Continuation lines are indented under the start of the message text (as irssi and
    WeeChat do), or under the text after the clock for other lines; only a word longer than
    a whole line is broken inside.
    """
    if width < 1:
        return [pieces]
    indent = 0
    for role, text in pieces:
        if role in ("text", "mention"):
            break
        indent += get_cwidth(text)
    else:
        indent = get_cwidth(pieces[0][1]) + 1 if pieces else 0
    if width - indent < 20:  # a narrow terminal: keep room for the words
        indent = min(indent, max(width // 4, 0))
    lines: list[list[Fragment]] = [[]]
    used = 0
    fresh = False  # at the start of a continuation line: spaces there are dropped

    def new_line() -> None:
        nonlocal used, fresh
        lines.append([("", " " * indent)])
        used, fresh = indent, True

    for role, text in pieces:
        for token in re.split(r"( +)", text):
            if not token:
                continue
            size = get_cwidth(token)
            if token.startswith(" "):
                if used + size > width:
                    new_line()
                elif not fresh:
                    lines[-1].append((role, token))
                    used += size
                continue
            if used + size > width and not fresh:
                new_line()
            while used + size > width:  # a word longer than a line: break it
                head, token = _split_width(token, max(width - used, 1))
                lines[-1].append((role, head))
                new_line()
                size = get_cwidth(token)
            lines[-1].append((role, token))
            used += size
            fresh = False
    return lines


def _split_width(text: str, room: int) -> tuple[str, str]:
    """The longest head of ``text`` that fits ``room`` columns (at least one character)."""
    used = 0
    for i, char in enumerate(text):
        used += get_cwidth(char)
        if used > room:
            return text[: max(i, 1)], text[max(i, 1) :]
    return text, ""


def plain_line(event: ClientEvent, now: float | None = None) -> str | None:
    """One plain, sanitised line for ``event``, or None when it has nothing to show.

    A pending message of ours shows nothing: its confirmed line follows in room order (or a
    "not delivered" line if the relay refuses it), so a reader of the output sees each message
    once, where everybody else saw it.
    """
    if isinstance(event, MessagePending):
        return None
    pieces = fragments(event, now)
    return None if pieces is None else "".join(text for _, text in pieces)


def styled_line(
    event: ClientEvent, *, colour: bool = True, now: float | None = None
) -> FormattedText | None:
    """``event`` as prompt_toolkit formatted text (unstyled when ``colour`` is False)."""
    pieces = fragments(event, now)
    if pieces is None:
        return None
    return FormattedText([(_ptk_style(role) if colour else "", text) for role, text in pieces])


def ansi_line(
    event: ClientEvent,
    *,
    colour: bool = True,
    now: float | None = None,
    width: int = 0,
    mention: str | None = None,
) -> str | None:
    """``event`` as a string with ANSI SGR styling, ready to write to a terminal; with a
    ``width``, wrapped between words into lines of at most that many columns.

    The only escape sequences in the result are our own: every untrusted string in it has been
    sanitised, so no ESC from the network survives.
    """
    pieces = fragments(event, now, mention=mention)
    if pieces is None:
        return None
    lines = wrap(pieces, width) if width > 0 else [pieces]
    return "\n".join(_ansi(line, colour) for line in lines)


def notice_line(text: str, *, colour: bool = True, now: float | None = None) -> str:
    """A notice of our own (``HH:MM:SS -- text``), styled as the room's notices are."""
    stamp = time.time() if now is None else now
    pieces = [("time", format_clock(stamp)), ("", " "), *_notice(("notice", text))]
    return _ansi(pieces, colour)


def _ansi(pieces: list[Fragment], colour: bool) -> str:
    if not colour:
        return "".join(text for _, text in pieces)
    out = []
    for role, text in pieces:
        sgr = _sgr(role)
        out.append(f"\x1b[{sgr}m{text}\x1b[0m" if sgr and text else text)
    return "".join(out)


def json_line(event: ClientEvent, *, line: int | None = None) -> str:
    """``event`` as one line of JSON with a ``type`` field; strings are raw (see above).

    ``line`` is the input line the event answers (pending, own messages, refusals and
    errors carry a ``line`` field, null when they answer none). Times are whole Unix
    seconds, the relay's unit, so that a message has the same kind of time for everyone.
    """
    kind, fields = _record(event)
    if kind in _LINE_RECORDS:
        fields["line"] = line
    if "time" in fields:
        fields["time"] = int(event.time)  # type: ignore[union-attr]
    return json_record(kind, fields)


_LINE_RECORDS = frozenset({"pending", "message", "refused", "error"})


def error_text(event: ErrorReported | MessageRefused | JoinRejected) -> str:
    """The sanitised one-line text of an error event, without time or marker: for stderr."""
    body = _body(event)
    assert body is not None
    return "".join(text for role, text in body if role != "errmark")


def json_record(kind: str, fields: Mapping[str, object]) -> str:
    """One JSON line ``{"type": kind, **fields}``, pure ASCII."""
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


# --- one event, piece by piece ---------------------------------------------------------------


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


def _body(event: ClientEvent) -> list[Fragment] | None:
    if isinstance(event, MessageReceived):
        if event.action:
            return [("", "* "), _nick(event.nick), ("", " "), ("text", safe_text(event.text))]
        return [("", "<"), _nick(event.nick), ("", "> "), ("text", safe_text(event.text))]
    if isinstance(event, MessagePending):
        star = "* " if event.action else ""
        return [("", f"{PENDING_MARKER} {star}{safe_text(event.text)}")]
    if isinstance(event, MessageRefused):
        return _error(f"not delivered ({safe_text(event.reason)}): {safe_text(event.text)}")
    if isinstance(event, PrivateReceived):
        return [
            ("private", "["),
            _nick(event.sender),
            ("private", " -> "),
            _nick(event.to),
            ("private", "] "),
            ("text", safe_text(event.text)),
        ]
    if isinstance(event, MemberJoined):
        return _notice(_nick(event.nick), ("notice", " joined"))
    if isinstance(event, MemberLeft):
        why = safe_text(event.reason)
        if event.text and event.text != event.reason:  # a timeout's text repeats its reason
            why += ": " + safe_text(event.text)
        return _notice(_nick(event.nick), ("notice", f" left ({why})"))
    if isinstance(event, NickChanged):
        if event.own:
            return _notice(("notice", "you are now "), _nick(event.new))
        return _notice(_nick(event.old), ("notice", " is now "), _nick(event.new))
    if isinstance(event, Welcomed):
        verb = "rejoined as " if event.resumed else "you are "
        return _notice(
            ("notice", verb), _nick(event.nick), ("notice", "; "), *_nicks(event.members)
        )
    if isinstance(event, MembersListed):
        return _notice(*_nicks(event.members))
    if isinstance(event, HistoryGap):
        first, last = event.first_missing, event.last_missing
        span = f"event {first}" if first == last else f"events {first} to {last}"
        return _notice(("notice", f"missed room {span}: the relay no longer has them"))
    if isinstance(event, ErrorReported):
        return _error(safe_text(event.text))
    if isinstance(event, ConnectionLost):
        return _error(f"lost the relay ({safe_text(event.reason)}); trying to rejoin")
    if isinstance(event, Reconnecting):
        return _notice(("notice", f"rejoining in {event.delay:.1f} s (attempt {event.attempt})"))
    if isinstance(event, JoinRejected):
        return _error(f"the relay refused to let us in: {safe_text(event.reason)}")
    if isinstance(event, Closed):
        reason = f": {safe_text(event.reason)}" if event.reason else ""
        return _notice(("notice", f"session closed{reason}"))
    return None


def _record(event: ClientEvent) -> tuple[str, dict[str, object]]:
    if isinstance(event, MessageReceived):
        return "message", {
            "from": event.nick,
            "text": event.text,
            "seq": event.seq,
            "time": event.time,
            "action": event.action,
            "own": event.own,
            "history": event.history,
            "local_id": event.local_id,
        }
    if isinstance(event, MessagePending):
        return "pending", {"local_id": event.local_id, "text": event.text, "action": event.action}
    if isinstance(event, MessageRefused):
        return "refused", {"local_id": event.local_id, "text": event.text, "reason": event.reason}
    if isinstance(event, PrivateReceived):
        return "private", {
            "from": event.sender,
            "to": event.to,
            "text": event.text,
            "time": event.time,
        }
    if isinstance(event, MemberJoined):
        return "join", {
            "nick": event.nick,
            "seq": event.seq,
            "time": event.time,
            "history": event.history,
        }
    if isinstance(event, MemberLeft):
        return "leave", {
            "nick": event.nick,
            "reason": event.reason,
            "text": event.text,
            "seq": event.seq,
            "time": event.time,
            "history": event.history,
        }
    if isinstance(event, NickChanged):
        return "nick", {
            "old": event.old,
            "new": event.new,
            "own": event.own,
            "seq": event.seq,
            "time": event.time,
            "history": event.history,
        }
    if isinstance(event, Welcomed):
        return "welcome", {
            "nick": event.nick,
            "members": list(event.members),
            "resumed": event.resumed,
        }
    if isinstance(event, MembersListed):
        return "who", {"members": list(event.members)}
    if isinstance(event, HistoryGap):
        return "history_gap", {
            "first_missing": event.first_missing,
            "last_missing": event.last_missing,
        }
    if isinstance(event, ErrorReported):
        return "error", {"text": event.text}
    if isinstance(event, ConnectionLost):
        return "connection_lost", {"reason": event.reason}
    if isinstance(event, Reconnecting):
        return "reconnecting", {"attempt": event.attempt, "delay": event.delay}
    if isinstance(event, JoinRejected):
        return "rejected", {"code": event.code, "reason": event.reason}
    if isinstance(event, Closed):
        return "closed", {"reason": event.reason}
    return "unknown", {"event": type(event).__name__}


def _ptk_style(role: str) -> str:
    if role.startswith("nick"):
        return f"fg:{_hex(int(role[4:]))}"
    return _ROLE_PTK.get(role, "")


def _sgr(role: str) -> str:
    if role.startswith("nick"):
        return f"38;5;{role[4:]}"
    return _ROLE_SGR.get(role, "")


def _hex(xterm: int) -> str:
    """The RGB of an xterm-256 colour-cube entry, so prompt_toolkit can map it to any depth."""
    r, rest = divmod(xterm - 16, 36)
    g, b = divmod(rest, 6)
    return f"#{_LEVELS[r]:02x}{_LEVELS[g]:02x}{_LEVELS[b]:02x}"
