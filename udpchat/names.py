"""Nickname rules shared by the client and the relay.

The client checks a nickname before asking for it; the relay checks again, because it is the
one that stamps nicknames on messages and must not be talked into an impersonation. A valid
nickname:

* has 1 to ``MAX_NICK_LENGTH`` code points;
* contains no whitespace of any kind, so it is one word for ``nick: `` completion and mentions;
* contains no control, format (bidi, zero-width), surrogate, private-use or unassigned code
  point, so what is shown is what is stored;
* does not start with ``/``, which begins a command: completing ``/quit: `` at the start of a
  line would run ``/quit``;
* does not start with a combining mark, which would fuse with the character printed before it.

``#`` is allowed: there are no channels for it to be confused with.

Uniqueness is decided on :func:`nick_key`, so ``Bob``, ``BOB`` and its full-width form
(U+FF22 U+FF4F U+FF42) are one name. Look-alikes across scripts (Latin ``o`` and Cyrillic
U+043E) are not folded together.
"""

from __future__ import annotations

import unicodedata

__all__ = ["COMMAND_PREFIX", "MAX_NICK_LENGTH", "nick_error", "nick_key", "validate_nick"]

MAX_NICK_LENGTH = 32
COMMAND_PREFIX = "/"

_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
}


def nick_error(nick: str) -> str | None:
    """Explain in one line why ``nick`` is not a valid nickname, or return None if it is."""
    if not isinstance(nick, str):
        return "a nickname must be text"
    if not nick:
        return "a nickname needs at least one character"
    if len(nick) > MAX_NICK_LENGTH:
        return f"a nickname has at most {MAX_NICK_LENGTH} characters, this one has {len(nick)}"
    for ch in nick:
        reason = _char_problem(ch)
        if reason is not None:
            return f"a nickname cannot contain {reason} ({_describe(ch)})"
    if nick.startswith(COMMAND_PREFIX):
        return f"a nickname cannot start with {COMMAND_PREFIX!r}, which begins a command"
    if unicodedata.category(nick[0]).startswith("M"):
        return f"a nickname cannot start with a combining mark ({_describe(nick[0])})"
    return None


def validate_nick(nick: str) -> str:
    """Return ``nick`` unchanged if valid; raise ``ValueError`` with the reason otherwise."""
    error = nick_error(nick)
    if error is not None:
        raise ValueError(error)
    return nick


def nick_key(nick: str) -> str:
    """Return the key under which nicknames must be unique.

    This is Unicode's compatibility caseless matching (The Unicode Standard, D146:
    ``NFKD(casefold(NFKD(casefold(NFD(X)))))``), recomposed with NFC to keep keys short.
    The double fold makes the key stable: ``nick_key(nick_key(x)) == nick_key(x)``.
    An ASCII nickname's key is its lower case (every normalisation leaves ASCII as it is,
    and ASCII folds to lower case): most nicknames, and a join into a large room keys every
    name of its WELCOME. A nickname that is its own key is returned as it is, not as an
    equal copy: a relay keeps each member's nickname and key, often the same string.
    """
    if nick.isascii():
        key = nick.lower()
    else:
        folded = unicodedata.normalize("NFD", nick).casefold()
        folded = unicodedata.normalize("NFKD", folded).casefold()
        key = unicodedata.normalize("NFKC", folded)
    return nick if key == nick else key


def _char_problem(ch: str) -> str | None:
    category = unicodedata.category(ch)
    if ch.isspace() or category.startswith("Z"):
        return "whitespace"
    return _FORBIDDEN_CATEGORIES.get(category)


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}" if name else f"U+{ord(ch):04X}"
