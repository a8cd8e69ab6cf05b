import string
import unicodedata

import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from udpchat.sanitize import TAB_SPACES, safe_nick, safe_text

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

NASTY = [
    # (what, input, shown on one line)
    ("CSI colour", "\x1b[31mred\x1b[0m", "␛[31mred␛[0m"),
    ("CSI clear screen", "\x1b[2J\x1b[H", "␛[2J␛[H"),
    ("OSC 52 clipboard write", "\x1b]52;c;cm0gLXJmIH4=\x07", "␛]52;c;cm0gLXJmIH4=␇"),
    (
        "OSC 8 link",
        "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
        "␛]8;;https://evil.example␛\\click␛]8;;␛\\",
    ),
    ("DCS", "\x1bP+q544e\x1b\\", "␛P+q544e␛\\"),
    ("bare CR overwrite", "I agree\rI refuse", "I agree␍I refuse"),
    ("backspace", "yes\x08\x08\x08no", "yes␈␈␈no"),
    ("bell", "ding\x07", "ding␇"),
    ("NUL", "a\x00b", "a␀b"),
    ("DEL", "a\x7fb", "a␡b"),
    ("C1 CSI", "\x9b31mred", "\\u{9b}31mred"),
    ("C1 OSC", "\x9d52;c;x\x9c", "\\u{9d}52;c;x\\u{9c}"),
    ("C1 NEL", "a\x85b", "a\\u{85}b"),
    ("RLO", "evil\u202etxt.exe", "evil\\u{202e}txt.exe"),
    ("RLI isolate", "a\u2067b\u2069", "a\\u{2067}b\\u{2069}"),
    ("LRM and RLM", "\u200ea\u200f", "\\u{200e}a\\u{200f}"),
    ("Arabic letter mark", "a\u061cb", "a\\u{61c}b"),
    ("zero-width space", "pay\u200bpal", "pay\\u{200b}pal"),
    ("zero-width non-joiner", "a\u200cb", "a\\u{200c}b"),
    ("ZWJ between letters", "a\u200db", "a\\u{200d}b"),
    ("word joiner", "a\u2060b", "a\\u{2060}b"),
    ("BOM", "\ufeffhello", "\\u{feff}hello"),
    ("soft hyphen", "a\u00adb", "a\\u{ad}b"),
    ("tag characters", "hi\U000e0041\U000e0042", "hi\\u{e0041}\\u{e0042}"),
    ("line separator", "a\u2028b", "a\\u{2028}b"),
    ("paragraph separator", "a\u2029b", "a\\u{2029}b"),
    ("lone surrogate", "a\ud800b", "a\\u{d800}b"),
    ("private use", "a\ue000b", "a\\u{e000}b"),
    ("noncharacter", "a\ufdd0b\U0010ffff", "a\\u{fdd0}b\\u{10ffff}"),
    ("newline", "line1\nline2", "line1␊line2"),
    ("tab", "a\tb", f"a{TAB_SPACES}b"),
    ("invalid UTF-8", b"ok\xff\xfe\xc3(", "ok\ufffd\ufffd\ufffd("),
    ("UTF-8 ESC in bytes", b"\x1b[31m", "␛[31m"),
    ("overlong UTF-8 ESC", b"\xc0\x9b", "\ufffd\ufffd"),
    ("UTF-8 encoded C1", "\x9b".encode(), "\\u{9b}"),
]


@pytest.mark.parametrize(("what", "value", "shown"), NASTY, ids=[row[0] for row in NASTY])
def test_nasty_inputs_are_made_visible(what: str, value: str | bytes, shown: str) -> None:
    assert safe_text(value) == shown


@pytest.mark.parametrize(
    "text",
    [
        "hello, world",
        "Grüße aus Köln",
        "Привет, мир",
        "שלום עולם",
        "مرحبا بالعالم",
        "こんにちは世界",
        "नमस्ते दुनिया",
        "e\u0301 combining accent",
        "emoji 😀👍🏽 🇫🇷 ❤️",
        "family 👨\u200d👩\u200d👧 and coder 👩🏽\u200d💻 and flag 🏳️\u200d🌈",
        "no-break\u00a0space and ideographic\u3000space",
        "",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert safe_text(text) == text
    assert safe_text(text, multiline=True) == text
    assert safe_text(text.encode()) == text


def test_multiline_keeps_line_breaks_and_folds_crlf() -> None:
    assert safe_text("one\ntwo\r\nthree", multiline=True) == "one\ntwo\nthree"
    assert safe_text("one\ntwo\r\nthree") == "one␊two␍␊three"


def test_multiline_still_shows_bare_cr_and_escapes() -> None:
    assert safe_text("a\rb\n\x1b[2J", multiline=True) == "a␍b\n␛[2J"


def test_zwj_only_survives_between_emoji() -> None:
    assert safe_text("\u200d😀") == "\\u{200d}😀"
    assert safe_text("😀\u200d") == "😀\\u{200d}"
    assert safe_text("😀\u200d\u200d😀") == "😀\\u{200d}\\u{200d}😀"
    assert safe_text("😀\u200da") == "😀\\u{200d}a"
    assert safe_text("😀\n\u200d😀", multiline=True) == "😀\n\\u{200d}😀"


def test_safe_nick_is_single_line_without_spaces_or_joiners() -> None:
    assert safe_nick("alice") == "alice"
    assert safe_nick("Zoë") == "Zoë"
    assert safe_nick("bob\nmallory") == "bob␊mallory"
    assert safe_nick("bob mallory") == "bob␠mallory"
    assert safe_nick("bob\tx") == "bob␉x"
    assert safe_nick("bob\u00a0") == "bob\\u{a0}"
    assert safe_nick("👨\u200d👩") == "👨\\u{200d}👩"
    assert safe_nick("\u202eevil") == "\\u{202e}evil"
    assert safe_nick(b"b\xffob") == "b\ufffdob"


# Text biased towards the characters that matter, surrogates included.
NASTY_CHARS = st.sampled_from(
    "\x00\x07\x08\t\n\r\x1b\x7f\x85\x9b\x9c\x9d \u00a0\u00ad\u061c\u200b\u200c\u200d\u200e"
    "\u200f\u2028\u2029\u202a\u202e\u2060\u2066\u2069\u3000\ufe0f\ufeff\ue000\ud800\udfff"
    "\U0001f468\U0001f3fd\u2764\U000e0041\U0010ffff"
)
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(st.one_of(ANY_CHAR, NASTY_CHARS))
PRINTABLE_ASCII = st.text(st.sampled_from(string.printable[:95]))
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def assert_terminal_safe(shown: str, *, newline_allowed: bool) -> None:
    last = len(shown) - 1
    for i, ch in enumerate(shown):
        category = unicodedata.category(ch)
        if ch == "\n":
            assert newline_allowed
        elif ch == "\u200d":
            assert 0 < i < last, "a kept joiner sits between two emoji"
            before, after = shown[i - 1], shown[i + 1]
            assert unicodedata.category(before) in {"So", "Sk", "Mn"}
            assert unicodedata.category(after) == "So"
        else:
            assert category not in FORBIDDEN_CATEGORIES, (ch, category)
    assert "\x1b" not in shown


def test_character_strategy_reaches_surrogates() -> None:
    assert unicodedata.category(find(ANY_CHAR, lambda ch: unicodedata.category(ch) == "Cs")) == "Cs"


@given(TEXT, st.booleans())
def test_output_has_no_controls_or_format_characters(text: str, multiline: bool) -> None:
    assert_terminal_safe(safe_text(text, multiline=multiline), newline_allowed=multiline)


@given(st.binary())
def test_any_bytes_are_shown_safely(data: bytes) -> None:
    shown = safe_text(data)
    assert_terminal_safe(shown, newline_allowed=False)
    assert shown == safe_text(data.decode("utf-8", errors="replace"))


@given(TEXT)
def test_nick_output_has_no_whitespace_or_invisible_characters(text: str) -> None:
    shown = safe_nick(text)
    assert shown.isprintable()
    assert not any(ch.isspace() for ch in shown)


@given(TEXT, st.booleans())
def test_idempotent(text: str, multiline: bool) -> None:
    once = safe_text(text, multiline=multiline)
    assert safe_text(once, multiline=multiline) == once
    assert safe_nick(safe_nick(text)) == safe_nick(text)


@given(TEXT)
def test_nothing_is_silently_deleted(text: str) -> None:
    assert len(safe_text(text)) >= len(text)
    assert len(safe_nick(text)) >= len(text)


@given(PRINTABLE_ASCII, st.booleans())
def test_printable_ascii_is_unchanged(text: str, multiline: bool) -> None:
    assert safe_text(text, multiline=multiline) == text
    assert safe_text(text.encode("ascii"), multiline=multiline) == text


@given(TEXT)
def test_printable_text_is_unchanged(text: str) -> None:
    if text.isprintable():
        assert safe_text(text) == text
