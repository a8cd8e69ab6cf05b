"""The chat front end: read what the user types, show what the room does.

It knows nothing about sockets. It drives a :class:`~udpchat.frontend.ChatHandle` (the
client shell) and receives :mod:`udpchat.events` through a callback that the client calls
from its own receiver thread.

Three modes, because a person, a shell pipeline and a program want different things:

* **interactive** (stdin and stdout are terminals): a prompt_toolkit prompt with history,
  nickname completion and a status bar (:mod:`udpchat.terminal`);
* **plain**: one plain line per event on stdout, errors on stderr, input lines run in order
  once the relay has let us in (:mod:`udpchat.lines`);
* **json**: like plain, but each event is one JSON object per line, for programs.

prompt_toolkit is imported only for the interactive mode, so a pipe starts without it.
"""

from __future__ import annotations

import os
import sys
from typing import Literal, TextIO

from udpchat.frontend import ChatHandle, EventSink, HandleFactory
from udpchat.lines import IDLE_TIMEOUT, LineUI
from udpchat.style import colour_enabled

__all__ = [
    "IDLE_TIMEOUT", "ChatHandle", "EventSink", "HandleFactory", "LineUI", "Mode", "choose_mode",
    "run_ui",
]

Mode = Literal["interactive", "plain", "json"]


def choose_mode(*, json_output: bool, stdin: TextIO | None, stdout: TextIO | None) -> Mode:
    """``json`` when asked, ``interactive`` when both ends are terminals, otherwise ``plain``."""
    if json_output:
        return "json"
    if _isatty(stdin) and _isatty(stdout):
        return "interactive"
    return "plain"


def run_ui(
    handle_factory: HandleFactory,
    mode: Mode | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    server: str | None = None,
) -> int:
    """Run a whole chat session in ``mode`` (default: :func:`choose_mode`); return the exit
    code, an :class:`~udpchat.exitcodes.ExitCode`. ``server`` names the relay in messages.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if mode is None:
        mode = choose_mode(json_output=False, stdin=stdin, stdout=stdout)
    if mode == "interactive":
        from udpchat.terminal import InteractiveUI  # prompt_toolkit: only for a person

        bell = os.environ.get("UDPCHAT_BELL", "1").strip().lower() not in ("0", "off", "no")
        ui = InteractiveUI(
            colour=colour_enabled(stdout), stderr=stderr, server=server, bell=bell
        )
        return ui.run(handle_factory)
    json_output = mode == "json"
    lines = LineUI(
        stdout, stderr, json_output=json_output, idle_timeout=idle_timeout, server=server
    )
    return lines.run(handle_factory, stdin)


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False
