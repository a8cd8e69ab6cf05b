"""Events styled for a terminal: prompt_toolkit formatted text, and ANSI lines wrapped between
words to the terminal's width (counted in cells, so that wide characters take two).

This is the only rendering module that needs prompt_toolkit; the plain and JSON front ends
use :mod:`udpchat.render` alone.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.utils import get_cwidth

from udpchat.events import ClientEvent
from udpchat.render import fragments
from udpchat.style import Fragment, ansi

__all__ = [
    "ansi_line", "fold", "folded", "styled_line", "tell", "terminal_columns", "wrap",
]

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
    return "\n".join(ansi(line, colour) for line in lines)


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
    # The word the current line ends with so far: a word may span fragments (a nickname and
    # the comma after it), and moves to the next line whole.
    word: list[Fragment] = []
    word_size = 0

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
                word, word_size = [], 0
                if used + size > width:
                    new_line()
                elif not fresh:
                    lines[-1].append((role, token))
                    used += size
                continue
            if used + size > width and not fresh:
                if word and indent + word_size + size <= width:
                    del lines[-1][-len(word) :]  # the word's start goes along
                    new_line()
                    lines[-1].extend(word)
                    used += word_size
                    fresh = False
                else:
                    new_line()
                    word, word_size = [], 0
            while used + size > width:  # a word longer than a line: break it
                head, token = _split_width(token, max(width - used, 1))
                lines[-1].append((role, head))
                new_line()
                word, word_size = [], 0
                size = get_cwidth(token)
            lines[-1].append((role, token))
            used += size
            word.append((role, token))
            word_size += size
            fresh = False
    return lines


def fold(text: str, width: int, prefix: str = "udpchat: ") -> str:
    """``prefix`` and ``text`` in lines of at most ``width`` columns, broken between words and
    indented under the text: a line the terminal cut itself would split a word, a key
    fingerprint or a path at its last column.

    A word too long for the room under the indent (a long path) starts its own line at the
    first column instead, and one longer than the whole width is left whole: a path or a
    command to copy never gets spaces inside."""
    indent = " " * get_cwidth(prefix)
    lines = [prefix]
    used = get_cwidth(prefix)
    for i, word in enumerate(text.split()):
        size = get_cwidth(word)
        space = 1 if i else 0
        if used + space + size <= width:
            lines[-1] += " " * space + word
            used += space + size
        elif len(indent) + size <= width:
            lines.append(indent + word)
            used = len(indent) + size
        else:
            lines.append(word)
            used = size
    return "\n".join(line.rstrip() for line in lines if line.strip())


def terminal_columns(stream: TextIO) -> int | None:
    """The width of the terminal ``stream`` writes to; None when it is not a terminal."""
    try:
        if not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):  # closed, detached, or no descriptor
        return None


def folded(stream: TextIO, text: str, prefix: str = "udpchat: ") -> str:
    """A line of ours for ``stream`` (stderr, before or after the chat screen): folded to
    the terminal's width when it is one (its last column left free, as the chat lines
    leave it), as it is for a pipe, where a program reads it."""
    columns = terminal_columns(stream)
    return prefix + text if columns is None else fold(text, max(columns - 1, 20), prefix)


def tell(stream: TextIO, text: str, prefix: str = "udpchat: ") -> None:
    """``folded`` written to ``stream``."""
    stream.write(folded(stream, text, prefix) + "\n")
    stream.flush()


def _split_width(text: str, room: int) -> tuple[str, str]:
    """The longest head of ``text`` that fits ``room`` columns (at least one character)."""
    used = 0
    for i, char in enumerate(text):
        used += get_cwidth(char)
        if used > room:
            return text[: max(i, 1)], text[max(i, 1) :]
    return text, ""


def _ptk_style(role: str) -> str:
    if role.startswith("nick"):
        return f"fg:{_hex(int(role[4:]))}"
    return _ROLE_PTK.get(role, "")


def _hex(xterm: int) -> str:
    """The RGB of an xterm-256 colour-cube entry, so prompt_toolkit can map it to any depth."""
    r, rest = divmod(xterm - 16, 36)
    g, b = divmod(rest, 6)
    return f"#{_LEVELS[r]:02x}{_LEVELS[g]:02x}{_LEVELS[b]:02x}"
