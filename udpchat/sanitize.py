"""Make untrusted text safe to print on a terminal.

Chat text and nicknames come from strangers. Printed raw, an ESC starts a CSI/OSC/DCS
sequence that can recolour or clear the screen, write the clipboard (OSC 52) or plant a
disguised link (OSC 8); a bare CR overwrites what the user already read; bidi overrides and
zero-width characters make text read differently from what it is. Every such character is
swapped for a visible stand-in instead of being dropped, so nothing can hide:

* C0 controls and DEL become their Control Pictures (ESC shows as ``␛``, CR as ``␍``);
* everything else that is not printable (C1 controls, format characters such as bidi
  controls and zero-width spaces, line/paragraph separators, lone surrogates, private-use
  and unassigned code points) becomes an escape such as ``\\u{202e}``.

Private-use characters are escaped because their look is whatever a font decides; unassigned
ones because we cannot know what they will mean. The price is that emoji newer than the
interpreter's Unicode database show as escapes.

A ZERO WIDTH JOINER survives only between two emoji (a symbol, optionally followed by VS16 or a
skin-tone modifier, then another symbol), so family and profession emoji still render; any
other U+200D is escaped. Tag characters (flag subdivisions) are escaped because they can carry
invisible text.

Both functions are pure, never raise on any ``str`` or ``bytes``, and are idempotent; text that
is already printable takes a single C-level check.
"""

from __future__ import annotations

import unicodedata

__all__ = ["TAB_SPACES", "safe_nick", "safe_text"]

TAB_SPACES = "    "
"""A tab becomes four spaces: real tab stops depend on a column we cannot know."""

_ZWJ = "\u200d"
_VS16 = "\ufe0f"
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_SPACE_PICTURE = "\u2420"


def safe_text(value: str | bytes, *, multiline: bool = False) -> str:
    """Return ``value`` with every terminal-affecting or invisible character made visible.

    Bytes are decoded as UTF-8, invalid sequences becoming U+FFFD. With ``multiline`` a
    newline (or CRLF) is kept as a line break; otherwise it shows as ``␊``.
    """
    text = _decode(value)
    if text.isprintable():
        return text
    if multiline:
        lines = text.replace("\r\n", "\n").split("\n")
        return "\n".join(_clean(line, nick=False) for line in lines)
    return _clean(text, nick=False)


def safe_nick(nick: str | bytes) -> str:
    """Return ``nick`` on one line with no whitespace, so a forged nickname stands out.

    Stricter than :func:`safe_text`: every space shows as ``␠`` and no joiner survives, which
    mirrors what :mod:`udpchat.names` refuses at registration.
    """
    text = _decode(nick)
    if text.isprintable() and " " not in text:
        return text
    return _clean(text, nick=True)


def _decode(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _clean(line: str, *, nick: bool) -> str:
    out: list[str] = []
    last = len(line) - 1
    for i, ch in enumerate(line):
        if ch.isprintable():
            out.append(_SPACE_PICTURE if nick and ch == " " else ch)
        elif nick:
            out.append(_stand_in(ch))
        elif ch == "\t":
            out.append(TAB_SPACES)
        elif unicodedata.category(ch) == "Zs":
            out.append(ch)  # no-break, ideographic and other visible-width spaces
        elif ch == _ZWJ and 0 < i < last and _joins_emoji(line[i - 1], line[i + 1]):
            out.append(ch)
        else:
            out.append(_stand_in(ch))
    return "".join(out)


def _joins_emoji(before: str, after: str) -> bool:
    emoji_end = (
        unicodedata.category(before) == "So" or before == _VS16 or ord(before) in _SKIN_TONES
    )
    return emoji_end and unicodedata.category(after) == "So"


def _stand_in(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\u{{{code:x}}}"
