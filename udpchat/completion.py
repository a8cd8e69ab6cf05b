"""Tab completion at the chat prompt: nicknames anywhere in the line, and command names.

Completion works on what the user typed against the member list the client keeps; it never
talks to the network, so it is instant and works during an outage too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from udpchat.commands import COMMAND_NAMES
from udpchat.names import nick_key
from udpchat.sanitize import safe_nick

__all__ = ["NickCompleter"]

_MSG_TARGET = re.compile(r"^/msg\s+(\S*)$", re.IGNORECASE)


class NickCompleter(Completer):
    """Tab completion of nicknames and of command names.

    A nickname completes anywhere in the line: at its start it gets ``": "`` (addressing
    somebody, as in IRC), elsewhere a space; after ``/msg`` it gets a space. Matching is by
    :func:`names.nick_key`, so ``bo`` completes ``Bob``; the menu shows sanitised names but
    inserts the real one, which is what the relay will match.
    """

    def __init__(self, members: Callable[[], Iterable[str]], own: Callable[[], str]) -> None:
        self._members = members
        self._own = own

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        target = _MSG_TARGET.match(before)
        if target is not None:
            yield from self._nicks(target.group(1), suffix=" ")
            return
        word = re.split(r"\s", before)[-1]
        if word == before and before.startswith("/") and not before.startswith("//"):
            for name in COMMAND_NAMES:
                if name.startswith(before.lower()):
                    yield Completion(name + " ", start_position=-len(before), display=name)
        elif word == before:
            yield from self._nicks(word, suffix=": ")
        elif word and (not before.startswith("/") or before.lower().startswith("/me ")):
            yield from self._nicks(word, suffix=" ")

    def _nicks(self, prefix: str, suffix: str) -> Iterator[Completion]:
        key = nick_key(prefix)
        own = nick_key(self._own())
        candidates = sorted(set(self._members()), key=nick_key)
        for nick in candidates:
            folded = nick_key(nick)
            if folded.startswith(key) and folded != own:
                yield Completion(
                    nick + suffix, start_position=-len(prefix), display=safe_nick(nick)
                )
