"""How a line looks: roles, nickname colours, the clock, and ANSI styling.

A rendered line is a list of :data:`Fragment` ``(role, text)``: the role names what the text
is ("time", "nick33", "error", ...), and only here (for ANSI) or in :mod:`udpchat.styled`
(for prompt_toolkit) is it decided how that role looks.

Each nickname has a stable colour: a hash of :func:`names.nick_key` (not Python's ``hash``,
which changes per process), so ``Bob`` is the same colour as ``BOB``, in every run and on
every machine. Colour is off when ``NO_COLOR`` is set (to anything, even empty) or the
output is not a terminal.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from typing import TextIO

from udpchat.names import nick_key

__all__ = [
    "NICK_COLOURS", "ROLE_SGR", "Fragment", "ansi", "colour_enabled", "format_clock",
    "nick_colour", "sgr",
]

NICK_COLOURS = (33, 37, 70, 128, 130, 166, 169, 31, 36, 98, 136, 162)
"""xterm-256 colours for nicknames: mid-tones readable on dark and on light backgrounds.

Reds are left out so that nobody's name looks like an error."""

Fragment = tuple[str, str]
"""``(role, text)``: a role names what the text is ("time", "nick3", "error", ...), and
:func:`ansi` (or :mod:`udpchat.styled`) decides how that role looks."""

ROLE_SGR = {
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


def sgr(role: str) -> str:
    """The ANSI SGR parameters of ``role``."""
    if role.startswith("nick"):
        return f"38;5;{role[4:]}"
    return ROLE_SGR.get(role, "")


def ansi(pieces: list[Fragment], colour: bool) -> str:
    """``pieces`` as one string, with ANSI SGR styling when ``colour``."""
    if not colour:
        return "".join(text for _, text in pieces)
    out = []
    for role, text in pieces:
        code = sgr(role)
        out.append(f"\x1b[{code}m{text}\x1b[0m" if code and text else text)
    return "".join(out)
