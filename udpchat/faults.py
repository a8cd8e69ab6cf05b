"""Unexpected exceptions in a serving loop: survived in service, fatal under test.

A relay or client loop that dies from one datagram lets a single packet end the room, so a
loop catches what a core call raises, drops the datagram and goes on. Swallowed, the same
exception would also hide a bug from the test suite. So every catch goes through
:func:`report`, which logs it with its traceback (once per call site and exception type, so
that a datagram repeated a million times does not flood the log), and keeps a process-wide
record that the test suite checks after every test. In strict mode (``UDPCHAT_STRICT=1`` in
the environment, which the test suite sets for itself and its subprocesses) it re-raises
instead, so the bug surfaces where it happened.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

__all__ = ["MAX_RECORDED", "STRICT_ENV", "Fault", "recorded", "report", "strict", "take"]

STRICT_ENV = "UDPCHAT_STRICT"
# Faults kept with their description; past that they are still logged (once) and re-raised
# in strict mode, but not kept, so a long-running process cannot grow the record unbounded.
MAX_RECORDED = 100


@dataclass(frozen=True)
class Fault:
    """One caught exception: where it was caught and what it said."""

    where: str
    kind: str
    message: str


_lock = threading.Lock()
_recorded: list[Fault] = []
_logged: set[tuple[str, type[BaseException]]] = set()


def strict() -> bool:
    """Whether caught exceptions are to be re-raised (the test suite's setting)."""
    return os.environ.get(STRICT_ENV) == "1"


def report(where: str, error: Exception, logger: logging.Logger) -> None:
    """Record and log ``error``, caught at ``where``; re-raise it in strict mode.

    Call it from an ``except`` block, so that the log shows the traceback.
    """
    key = (where, type(error))
    with _lock:
        if len(_recorded) < MAX_RECORDED:
            _recorded.append(Fault(where, type(error).__name__, str(error)))
        first = key not in _logged
        _logged.add(key)
    if first:
        logger.error(
            "internal error in %s (logged once, then only counted): %s: %s",
            where,
            type(error).__name__,
            error,
            exc_info=error,
        )
    if strict():
        raise error


def recorded() -> list[Fault]:
    """Every fault recorded since the last :func:`take` (up to ``MAX_RECORDED`` of them)."""
    with _lock:
        return list(_recorded)


def take() -> list[Fault]:
    """The recorded faults, leaving the record empty; the log-once memory is kept."""
    with _lock:
        faults = list(_recorded)
        _recorded.clear()
        return faults
