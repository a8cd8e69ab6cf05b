"""Names on one line: as many as fit a width, and how many more (a batch of joins or leaves).

Widths are terminal columns of the sanitised names (wide characters take two, combining
marks none), so that the line fits whatever the names are.
"""

from __future__ import annotations

import unicodedata

from udpchat.sanitize import safe_nick
from udpchat.style import Fragment, nick_colour

__all__ = ["cells", "roll"]


def _nick(nick: str) -> Fragment:
    return (f"nick{nick_colour(nick)}", safe_nick(nick))


def roll(nicks: tuple[str, ...], verb: str, width: int) -> list[Fragment]:
    """``alice joined``, or ``12 joined: a, b, c, … and 9 more`` in ``width`` columns:
    as many names as fit, in the relay's order, and how many more."""
    if len(nicks) == 1:
        head = [_nick(nicks[0]), ("notice", f" {verb}")]
        if cells(safe_nick(nicks[0])) + len(verb) + 1 <= width:
            return head
        return [("notice", f"1 {verb}")]
    out: list[Fragment] = [("notice", f"{len(nicks)} {verb}: ")]
    used = len(out[0][1])
    for i, nick in enumerate(nicks):
        shown = safe_nick(nick)
        sep = ", " if i else ""
        rest = len(nicks) - i - 1
        tail = f", … and {rest} more" if rest else ""
        need = len(sep) + cells(shown) + len(tail)
        if used + need > width:
            if not i:  # not even one name fits
                return [("notice", f"{len(nicks)} {verb}")]
            out.append(("notice", f", … and {len(nicks) - i} more"))
            return out
        if sep:
            out.append(("notice", sep))
        out.append(_nick(nick))
        used += len(sep) + cells(shown)
    return out


def cells(text: str) -> int:
    """Terminal columns of sanitised ``text``: wide characters take two, marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )
