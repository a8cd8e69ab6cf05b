import io
import json
import re
import time
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    MembersListed,
    MessagePending,
    MessageReceived,
    MessageRefused,
    PrivateReceived,
    Reconnecting,
    Welcomed,
)
from udpchat.render import (
    PENDING_MARKER,
    fragments,
    json_line,
    mentions,
    notice_line,
    plain_line,
    stats_lines,
)
from udpchat.style import NICK_COLOURS, colour_enabled, format_clock, nick_colour
from udpchat.styled import ansi_line, styled_line, wrap

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

T = 1790000000  # 2026-09-21 14:13:20 UTC
NOW = T + 61
OUR_SGR = re.compile(r"\x1b\[[0-9;]*m")
FULLWIDTH_BOB = "\uff22\uff4f\uff42"


def pairs(event: ClientEvent, *, colour: bool = True) -> list[tuple[str, str]]:
    styled = styled_line(event, colour=colour, now=NOW)
    assert styled is not None
    return [(item[0], item[1]) for item in styled]


def one_safe_line(line: str | None) -> bool:
    """Printable, except the visible spaces and emoji joiners that sanitize keeps on purpose."""
    return line is not None and all(
        ch.isprintable() or unicodedata.category(ch) == "Zs" or ch == "\u200d" for ch in line
    )


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


EXPECTED: list[tuple[ClientEvent, str]] = [
    (
        Welcomed("alice", ("alice", "bob"), False),
        "14:14:21 -- you are alice; in the room (2): alice, bob",
    ),
    (Welcomed("alice", ("alice",), True), "14:14:21 -- rejoined as alice; in the room (1): alice"),
    (
        Welcomed("alice", ("alice",), False, history_lost=True),
        "14:14:21 -- the room started afresh, its history lost; you are alice; in the room (1): "
        "alice",
    ),
    (MessageReceived(7, T, "bob", "hi all"), "14:13:20 <bob> hi all"),
    (MessageReceived(8, T, "bob", "waves", action=True), "14:13:20 * bob waves"),
    (MessageReceived(9, T, "alice", "mine", own=True, local_id=1), "14:13:20 <alice> mine"),
    (MessageReceived(1, T, "bob", "old", history=True), "14:13:20 <bob> old"),
    (MessageRefused(3, "spam", "slow down"), "14:14:21 !! not delivered (slow down): spam"),
    (PrivateReceived(T, "bob", "alice", "psst"), "14:13:20 [bob -> alice] psst"),
    (MemberJoined(10, T, "carol"), "14:13:20 -- carol joined"),
    (MemberLeft(11, T, "carol", "quit", "bye all"), "14:13:20 -- carol left (quit: bye all)"),
    (MemberLeft(12, T, "dave", "timed out"), "14:13:20 -- dave left (timed out)"),
    # the relay's LEFT for a timeout carries the text "timed out" too: shown once
    (MemberLeft(12, T, "dave", "timed out", "timed out"), "14:13:20 -- dave left (timed out)"),
    (
        MemberLeft(12, T, "eve", "dropped", "connection lost"),
        "14:13:20 -- eve left (dropped: connection lost)",
    ),
    (MemberRenamed(13, T, "bob", "robert"), "14:13:20 -- bob is now robert"),
    (MemberRenamed(14, T, "alice", "al", own=True), "14:13:20 -- you are now al"),
    (MembersListed(("al", "robert")), "14:14:21 -- in the room (2): al, robert"),
    (HistoryGap(3, 9), "14:14:21 -- missed room events 3 to 9: the relay no longer has them"),
    (HistoryGap(4, 4), "14:14:21 -- missed room event 4: the relay no longer has them"),
    (ErrorReported("no such nickname"), "14:14:21 !! no such nickname"),
    (
        ConnectionLost("the relay went silent"),
        "14:14:21 !! lost the relay (the relay went silent); trying to rejoin",
    ),
    (
        ConnectionLost("the relay went silent", silent_for=5.2),
        "14:14:21 !! lost the relay (the relay went silent, last heard 5 s ago); trying to rejoin",
    ),
    (Reconnecting(1, 0.5), "14:14:21 -- trying to rejoin (attempt 1)\u2026"),
    (Reconnecting(2, 1.0), "14:14:21 -- rejoin attempt 2 starts in 1 s\u2026"),
    (
        JoinRejected(1, "nickname taken"),
        "14:14:21 !! the relay refused to let us in: nickname taken",
    ),
    (Closed("quit"), "14:14:21 -- session closed: quit"),
    (Closed(""), "14:14:21 -- session closed"),
]


@pytest.mark.parametrize(("event", "line"), EXPECTED)
def test_plain_lines(event: ClientEvent, line: str) -> None:
    assert plain_line(event, now=NOW) == line


@pytest.mark.parametrize(("event", "line"), EXPECTED)
def test_ansi_without_colour_is_the_plain_line(event: ClientEvent, line: str) -> None:
    assert ansi_line(event, colour=False, now=NOW) == line
    styled = pairs(event, colour=False)
    assert all(style == "" for style, _ in styled)
    assert "".join(text for _, text in styled) == line


@pytest.mark.parametrize(("event", "line"), EXPECTED)
def test_ansi_with_colour_only_adds_styling(event: ClientEvent, line: str) -> None:
    coloured = ansi_line(event, colour=True, now=NOW)
    assert coloured is not None
    assert coloured != line
    assert OUR_SGR.sub("", coloured) == line


def test_clock_is_local_time() -> None:
    assert format_clock(T) == "14:13:20"


def test_pending_is_not_a_plain_line_but_is_styled_dim_with_a_marker() -> None:
    event = MessagePending(4, "on its way")
    assert plain_line(event) is None
    styled = pairs(event)
    assert all("dim" in style for style, text in styled if text.strip())
    assert "".join(text for _, text in styled) == f"14:14:21 {PENDING_MARKER} on its way"
    action = ansi_line(MessagePending(5, "waits", action=True), colour=False, now=NOW)
    assert action == f"14:14:21 {PENDING_MARKER} * waits"


def test_styles_set_notices_and_errors_apart_from_messages() -> None:
    def styles(event: ClientEvent) -> set[str]:
        return {style for style, _ in pairs(event)}

    message = styles(MessageReceived(1, T, "bob", "hi"))
    assert "dim" in message  # the timestamp
    assert "italic" not in message
    assert "italic" in styles(MemberJoined(2, T, "bob"))
    assert "fg:ansired" in styles(ErrorReported("no"))


def test_terminal_attacks_are_defused() -> None:
    attack = "\x1b]52;c;cm0gLXJm\x07\x1b[2J\rline\nbreak\u202e"
    events: list[ClientEvent] = [
        MessageReceived(1, T, "b\x1b[31mob", attack),
        PrivateReceived(T, attack, "al ice", attack),
        MemberLeft(2, T, "bob", attack, attack),
        ErrorReported(attack),
        JoinRejected(1, attack),
        MessageRefused(1, attack, attack),
    ]
    for event in events:
        for line in (plain_line(event, now=NOW), ansi_line(event, colour=False, now=NOW)):
            assert line is not None
            assert line.isprintable(), line
        coloured = ansi_line(event, now=NOW)
        assert coloured is not None
        assert OUR_SGR.sub("", coloured).isprintable()
    line = plain_line(MessageReceived(1, T, "b\x1b[31mob", attack), now=NOW)
    assert line == "14:13:20 <b␛[31mob> ␛]52;c;cm0gLXJm␇␛[2J␍line␊break\\u{202e}"
    assert plain_line(MemberJoined(1, T, "two words"), now=NOW) == "14:13:20 -- two␠words joined"


JSON_CASES: list[tuple[ClientEvent, dict[str, object]]] = [
    (
        Welcomed("alice", ("alice", "bob"), False),
        {
            "type": "welcome",
            "nick": "alice",
            "members": ["alice", "bob"],
            "size": 2,
            "resumed": False,
            "history_lost": False,
        },
    ),
    (
        MessageReceived(7, T, "bob", "hi", action=True, own=False, history=True),
        {
            "type": "message",
            "from": "bob",
            "text": "hi",
            "seq": 7,
            "time": T,
            "action": True,
            "own": False,
            "history": True,
            "local_id": None,
            "line": None,
        },
    ),
    (
        MessagePending(3, "hey"),
        {"type": "pending", "local_id": 3, "text": "hey", "action": False, "line": None},
    ),
    (
        MessageRefused(3, "hey", "flood"),
        {"type": "refused", "local_id": 3, "text": "hey", "reason": "flood", "line": None},
    ),
    (
        PrivateReceived(T, "bob", "alice", "psst"),
        {"type": "private", "from": "bob", "to": "alice", "text": "psst", "time": T},
    ),
    (
        MemberJoined(8, T, "carol"),
        {"type": "join", "nick": "carol", "seq": 8, "time": T, "history": False},
    ),
    (
        MemberLeft(9, T, "carol", "quit", "bye"),
        {
            "type": "leave",
            "nick": "carol",
            "reason": "quit",
            "text": "bye",
            "seq": 9,
            "time": T,
            "history": False,
        },
    ),
    (
        MemberRenamed(10, T, "bob", "rob", own=False),
        {
            "type": "nick",
            "old": "bob",
            "new": "rob",
            "own": False,
            "seq": 10,
            "time": T,
            "history": False,
        },
    ),
    (MembersListed(("a", "b")), {"type": "who", "members": ["a", "b"]}),
    (HistoryGap(2, 5), {"type": "history_gap", "first_missing": 2, "last_missing": 5}),
    (ErrorReported("oops"), {"type": "error", "text": "oops", "line": None}),
    (
        ConnectionLost("silent", 5.5),
        {"type": "connection_lost", "reason": "silent", "silent_for": 5.5},
    ),
    (Reconnecting(3, 2.0), {"type": "reconnecting", "attempt": 3, "delay": 2.0}),
    (JoinRejected(1, "taken"), {"type": "rejected", "code": 1, "reason": "taken"}),
    (Closed("quit"), {"type": "closed", "reason": "quit"}),
]


@pytest.mark.parametrize(("event", "record"), JSON_CASES)
def test_json_records(event: ClientEvent, record: dict[str, object]) -> None:
    line = json_line(event)
    assert "\n" not in line
    assert json.loads(line) == record


def test_json_carries_raw_text_as_pure_ascii() -> None:
    raw = "\x1b[2J\u202eé\n\x9b😀"
    line = json_line(MessageReceived(1, T, "Zoë", raw))
    assert line.isascii() and line.isprintable()
    decoded = json.loads(line)
    assert decoded["text"] == raw
    assert decoded["from"] == "Zoë"


@given(st.text(), st.text(), st.text())
def test_any_strings_give_one_safe_line(nick: str, text: str, reason: str) -> None:
    events: list[ClientEvent] = [
        MessageReceived(1, T, nick, text),
        PrivateReceived(T, nick, nick, text),
        MemberLeft(1, T, nick, reason, text),
        MemberRenamed(1, T, nick, text),
        Welcomed(nick, (nick, text), False),
        ErrorReported(text),
    ]
    for event in events:
        line = plain_line(event, now=NOW)
        assert line is not None and one_safe_line(line)
        coloured = ansi_line(event, now=NOW)
        assert coloured is not None and OUR_SGR.sub("", coloured) == line
        encoded = json_line(event)
        assert encoded.isascii() and encoded.isprintable()
        assert json.loads(encoded)["type"]


def test_nick_colours_are_stable_and_case_blind() -> None:
    # Pinned: a colour must not change between runs, machines or releases.
    assert nick_colour("alice") == 162
    assert nick_colour("bob") == 37
    assert nick_colour("bob") == nick_colour("BOB") == nick_colour(FULLWIDTH_BOB)
    used = {nick_colour(f"user{i}") for i in range(200)}
    assert used == set(NICK_COLOURS)


def test_styled_nicks_use_their_colour() -> None:
    assert ("fg:#00afaf", "bob") in pairs(MessageReceived(1, T, "bob", "hi"))  # xterm 37
    coloured = ansi_line(MessageReceived(1, T, "bob", "hi"), now=NOW)
    assert coloured is not None and "\x1b[38;5;37mbob\x1b[0m" in coloured


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_needs_a_tty_and_no_NO_COLOR() -> None:
    assert colour_enabled(FakeTTY(), environ={})
    assert not colour_enabled(FakeTTY(), environ={"NO_COLOR": ""})
    assert not colour_enabled(FakeTTY(), environ={"NO_COLOR": "1"})
    assert not colour_enabled(io.StringIO(), environ={})
    assert not colour_enabled(None, environ={})
    closed = io.StringIO()
    closed.close()
    assert not colour_enabled(closed, environ={})  # and does not raise


def test_colour_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")
    assert not colour_enabled(FakeTTY())
    monkeypatch.delenv("NO_COLOR")
    assert colour_enabled(FakeTTY())


def test_stats_in_words() -> None:
    lines = stats_lines(
        {
            "srtt_ms": 0.41,
            "rto_ms": 4.0,
            "datagrams_sent": 12,
            "datagrams_received": 15,
            "retransmissions": 0,
            "loss_estimate": 0.3391,
            "duplicates_dropped": 6,
            "messages_delivered": 9,
            "reconnects": 1,
            "bad_datagrams_dropped": 0,
            "something_new": 2.5,
        }
    )
    assert lines == [
        "link statistics",
        "  round trip     0.41 ms (resend after 4 ms without an answer)",
        "  datagrams      12 sent, 15 received",
        "  resent by us   0",
        "  loss           34% (estimated from what had to be resent)",
        "  duplicates     6 dropped (the relay resent them before our ACK reached it; harmless)",
        "  messages in    9",
        "  rejoins        1",
        "  bad datagrams  0",
        "  something_new  2.5",
    ]
    assert not any("_ms" in line or "_estimate" in line for line in lines)
    assert stats_lines({"duplicates_dropped": 0})[1] == "  duplicates  0 dropped"
    assert stats_lines({"srtt_ms": 12.345})[1] == "  round trip  12 ms"
    assert stats_lines({}) == ["no link statistics yet"]


# --- wrapping, mentions, notices: what a terminal of any width shows -------------------------

LONG = (
    "the quick brown fox jumps over the lazy dog while alice watches from the riverbank "
    "and wonders whether extraordinarily long words like incomprehensibilities will wrap"
)


def visible(line: str) -> str:
    return OUR_SGR.sub("", line)


@pytest.mark.parametrize("width", [40, 80, 120])
def test_long_messages_wrap_between_words_indented_under_the_text(width: int) -> None:
    event = MessageReceived(1, T, "bob", LONG)
    text = ansi_line(event, colour=False, now=NOW, width=width)
    assert text is not None
    lines = text.split("\n")
    assert all(len(line) <= width for line in lines), lines
    prefix = lines[0].index("the quick")  # "14:13:20 <bob> "
    for line in lines[1:]:
        assert line[:prefix] == " " * prefix and line[prefix] != " ", lines
    words = " ".join(line.strip() for line in lines).split()
    assert " ".join(words).endswith(LONG)  # every word whole, none broken, in order
    if width < len(LONG):
        assert len(lines) > 1


@pytest.mark.parametrize("width", [40, 80, 120])
def test_wrapped_lines_keep_their_colours(width: int) -> None:
    text = ansi_line(MessageReceived(1, T, "bob", LONG), now=NOW, width=width, mention="alice")
    assert text is not None
    assert all(len(visible(line)) <= width for line in text.split("\n"))
    assert "\x1b[1;4malice\x1b[0m" in text


def test_a_word_longer_than_the_line_is_the_only_thing_broken() -> None:
    event = MessageReceived(1, T, "bob", "see https://example.org/" + "x" * 60 + " ok")
    text = ansi_line(event, colour=False, now=NOW, width=40)
    assert text is not None
    lines = text.split("\n")
    assert all(len(line) <= 40 for line in lines)
    assert lines[-1].strip().endswith("ok")


def test_notices_wrap_under_the_text_after_the_clock() -> None:
    members = tuple(f"member{i}" for i in range(12))
    text = ansi_line(Welcomed("alice", members, False), colour=False, now=NOW, width=40)
    assert text is not None
    lines = text.split("\n")
    assert lines[0].startswith("14:14:21 -- you are alice;")
    assert all(line.startswith(" " * 9) and len(line) <= 40 for line in lines[1:])


@pytest.mark.parametrize("width", range(36, 60))
def test_a_word_made_of_several_fragments_wraps_whole(width: int) -> None:
    """A nickname and the comma after it are one word: a line never starts with the comma."""
    text = ansi_line(
        Welcomed("bob", ("alicia", "bob"), False), colour=False, now=NOW, width=width
    )
    assert text is not None
    lines = text.split("\n")
    assert all(not line.strip().startswith(",") and len(line) <= width for line in lines)
    assert " ".join(line.strip() for line in lines).replace("  ", " ").endswith("alicia, bob")


def test_wrap_of_wide_characters_counts_columns() -> None:
    pieces = [("time", "14:13:20"), ("", " "), ("text", "日本語のテキスト " * 6)]
    for line in wrap(pieces, 30):
        assert sum(2 if ord(c) > 0x2E80 else 1 for _, t in line for c in t) <= 30


def test_mentions_of_our_nick_are_marked() -> None:
    event = MessageReceived(1, T, "bob", "hey Alice, and alice2 is not you; ALICE!")
    pieces = fragments(event, NOW, mention="alice")
    assert pieces is not None
    assert [t for role, t in pieces if role == "mention"] == ["Alice", "ALICE"]
    assert plain_line(event, now=NOW) == "14:13:20 <bob> hey Alice, and alice2 is not you; ALICE!"
    assert mentions(event, "alice")
    assert not mentions(MessageReceived(1, T, "bob", "hi alice2"), "alice")
    assert not mentions(MessageReceived(1, T, "alice", "I am alice", own=True), "alice")
    assert not mentions(MessageReceived(1, T, "bob", "alice", history=True), "alice")
    assert mentions(PrivateReceived(T, "bob", "alice", "psst"), "alice")
    assert not mentions(PrivateReceived(T, "alice", "bob", "psst"), "alice")
    assert not mentions(MemberJoined(1, T, "alice"), "alice")


def test_notice_line() -> None:
    assert notice_line("end of history", colour=False, now=NOW) == "14:14:21 -- end of history"
    assert "\x1b[3mend of history" in notice_line("end of history", now=NOW)
