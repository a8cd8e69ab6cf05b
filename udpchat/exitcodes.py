"""The exit statuses of every ``udpchat`` command, defined once so that scripts can rely on them.

A script that runs ``udpchat join`` needs to tell "try again later" (the relay is not there,
the session was lost) from "change something" (a bad option, a refused nickname) and from
"it ran, but not every line got through". The values follow the shell's conventions: 2 for
usage errors, as the option parser already exits, and 128 + SIGINT for an interruption.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["SHORT_MEANING", "ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    """Done: everything asked for was done (all input delivered, or a normal quit)."""
    FAILURE = 1
    """A runtime failure: no relay answered, the session was lost for good, a port was busy,
    or the demo's reliable run lost a message."""
    USAGE = 2
    """A bad command line: an unknown option, a malformed value, a nickname the rules forbid."""
    UNDELIVERED = 3
    """``join`` from a pipe: the session ran, but some input lines were refused (a bad
    command, flood control, an unknown recipient) or not confirmed by the relay."""
    REFUSED = 4
    """``join``: the relay refused to let us in (nickname taken, room full, wrong room key)."""
    INTERRUPTED = 130
    """Ctrl-C (or SIGTERM): the command was stopped before it was done."""


SHORT_MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "done",
    ExitCode.FAILURE: "failed",
    ExitCode.USAGE: "bad command line",
    ExitCode.UNDELIVERED: "some input lines refused or not delivered",
    ExitCode.REFUSED: "the relay refused to let you in",
    ExitCode.INTERRUPTED: "interrupted",
}
"""A few words per status, for ``udpchat --help``."""
