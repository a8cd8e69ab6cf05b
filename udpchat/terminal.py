"""The prompt_toolkit front end, for a person at a terminal.

A prompt with history and nickname completion, and a status bar below it.
``patch_stdout(raw=True)`` turns ``sys.stdout`` into a proxy that prints above the input
line, so an incoming message never tears up what the user is typing. Our own messages are
counted in the status bar until the relay posts them, then appear in room order like
everybody else's. The prompt is only ever touched from its own event loop (``invalidate``
and ``call_soon_threadsafe`` are the thread-safe doors prompt_toolkit offers), while events
arrive on the client's receiver thread.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
import time
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session, get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from udpchat.completion import NickCompleter
from udpchat.events import (
    ClientEvent,
    Closed,
    ErrorReported,
    JoinRejected,
    MessagePending,
    MessageReceived,
    MessageRefused,
)
from udpchat.frontend import Frontend, HandleFactory
from udpchat.render import mentions, notice_line
from udpchat.sanitize import safe_nick, safe_text
from udpchat.statusbar import LinkStatus, fit, shorten
from udpchat.styled import ansi_line, tell, wrap

__all__ = ["InteractiveUI"]

_COLUMNS = re.compile(r"^(\s*\S.*?\s{2,})(\S.*)$")  # "  label   value": wrap under the value


class _SessionOver(Exception):
    """Ends the prompt from outside when the session closes under the user."""


class InteractiveUI(Frontend):
    """The prompt_toolkit front end for a person at a terminal."""

    def __init__(
        self,
        *,
        colour: bool = True,
        stderr: TextIO | None = None,
        pt_input: Input | None = None,
        pt_output: Output | None = None,
        server: str | None = None,
        bell: bool = True,
    ) -> None:
        super().__init__(sys.stderr if stderr is None else stderr, server)
        self._colour = colour
        self._bell = bell  # ring the terminal's bell when somebody mentions us
        self._input = pt_input  # prompt_toolkit's terminal; None: the real one
        self._output = pt_output
        # our unconfirmed messages, with when they were typed (the clock shown beside them)
        self._pending: dict[int, tuple[MessagePending, float]] = {}
        self._session: PromptSession[str] | None = None
        self._quit_reason = ""
        self._link = LinkStatus(time.monotonic())

    def build_session(self) -> PromptSession[str]:
        """The prompt: one line with history and Tab completion, a status bar below it.

        The prompt stays one line high: printing above a prompt whose height changes while
        another thread writes leaves stale lines behind on real terminals. Our unconfirmed
        messages are counted in the status bar instead, and printed once the relay posts
        them, in room order. The status bar is redrawn every second, so that "connecting"
        and "rejoining" count their seconds.
        """
        completer = NickCompleter(
            lambda: self._handle.members if self._handle else (),
            lambda: self._handle.nick if self._handle else "",
        )
        self._session = PromptSession(
            message=self.prompt_message,
            bottom_toolbar=self.status_bar,
            history=InMemoryHistory(),
            completer=completer,
            complete_while_typing=False,
            erase_when_done=True,
            key_bindings=self._key_bindings(),
            refresh_interval=1.0,
            input=self._input,
            output=self._output,
        )
        # One prompt for the whole chat: Enter runs the line and clears the buffer instead of
        # ending the prompt. Between two prompts there would be moments with no running
        # application, and text printed from the receiver thread then lands on the prompt line.
        self._session.default_buffer.accept_handler = self._accept
        return self._session

    def _key_bindings(self) -> KeyBindings:
        """Ctrl-C clears a half-typed line, as in a shell (Up brings it back); on an empty
        line it leaves, as Ctrl-D does."""
        bindings = KeyBindings()

        @bindings.add("c-c")
        def _(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.text:
                buffer.append_to_history()
                buffer.reset()
            else:
                self._interrupted = True
                event.app.exit(result="")

        return bindings

    def _accept(self, buffer: Buffer) -> bool:
        """Enter: run the line (our message comes back from the relay, in room order).

        A paste of several lines arrives as one buffer: each line is its own message or
        command, in order, as if typed one by one (never one line full of ``␊``)."""
        handle = self._handle
        if handle is None:
            return False
        for line in buffer.text.splitlines():
            if not line.strip():
                continue
            quit_reason = self._execute(handle, line)
            if quit_reason is not None:
                self._quit_reason = quit_reason
                get_app().exit(result="")
                break
        return False  # not "keep text": the buffer is cleared, the prompt goes on

    def prompt_message(self) -> FormattedText:
        """``nick> ``: always exactly one line."""
        nick = safe_nick(self._handle.nick) if self._handle else ""
        return FormattedText([("bold" if self._colour else "", nick), ("", "> ")])

    def status_bar(self, width: int | None = None) -> FormattedText:
        """Where the session stands, how many are in the room, what of ours is on its way.

        Parts are dropped or shortened, least important first, to fit ``width`` columns
        (default: the terminal's): the state of the session always shows.
        """
        if width is None:
            width = self._columns()
        with self._lock:
            pending = list(self._pending.values())
            link = self._link
        handle = self._handle
        now = time.monotonic()
        nick = safe_nick(handle.nick) if handle is not None else ""
        where = f" to {self._server}" if self._server else ""
        if link.state == "connecting":
            state = [f" connecting{where} as {nick} ({now - link.since:.0f} s)"]
        elif link.state == "lost":
            lost, rejoin = f"relay lost {now - link.since:.0f} s ago", link.rejoin(now)
            state = [f" {nick}: {lost}", rejoin]
            if len(state[0]) + len(rejoin) + 5 > width:  # the prompt shows our nickname
                state = [f" {lost}", rejoin]
        elif handle is None:
            state = [" joining..."]
        else:
            # protocol.md 6.7: in a paged room the list we hold may be partial
            size = getattr(handle, "room_size", None)
            state = [f" {nick} in a room of {size if size is not None else len(handle.members)}"]
        sending: list[str] = []
        if pending:
            first = safe_text(pending[0][0].text)
            count = f" {len(pending)}" if len(pending) > 1 else ""
            sending = [f"sending{count}: {shorten(first, 30)}", f"sending {len(pending)}"]
        extras = ["/help for commands"] if link.state == "joined" else []
        return FormattedText([("", fit(state, sending, extras, width))])

    def _columns(self) -> int:
        """The terminal's width, from the running prompt or the system."""
        session = self._session
        if session is not None:
            with contextlib.suppress(Exception):  # no terminal behind the output (tests)
                return int(session.app.output.get_size().columns)
        return shutil.get_terminal_size().columns

    def _app_session(self) -> contextlib.AbstractContextManager[object]:
        """A prompt_toolkit session for the given terminal; none for the real one.

        patch_stdout prints from its own thread, which sees only the default app session:
        inside a session of our own it finds no running prompt and writes over it instead
        of above it (and the prompt is not redrawn). So the real terminal, where that shows,
        keeps the default session; a given input or output (tests) needs its own.
        """
        if self._input is None and self._output is None:
            return contextlib.nullcontext()
        return create_app_session(input=self._input, output=self._output)

    def run(self, factory: HandleFactory) -> int:
        with self._app_session(), patch_stdout(raw=True):
            session = self.build_session()
            handle = self._start(factory)
            if handle is None:
                return self._exit_code()
            try:
                if not self.finished:
                    with contextlib.suppress(EOFError, _SessionOver):
                        try:
                            session.prompt(pre_run=self._end_if_finished)
                        except KeyboardInterrupt:  # SIGINT or SIGTERM from outside
                            self._interrupted = True
                self._leave(handle, self._quit_reason)
            finally:
                with self._lock:
                    self._muted = True
        self._report_failure()
        return self._exit_code()

    def _show(self, event: ClientEvent, line: int | None) -> None:
        self._link = self._link.after(event, time.monotonic())
        match event:  # what of ours is still on its way
            case MessagePending(local_id=local_id):
                self._pending[local_id] = (event, time.time())
            case (
                MessageReceived(local_id=int(local_id), own=True)
                | MessageRefused(local_id=local_id)
            ):
                self._pending.pop(local_id, None)
            case Closed() | JoinRejected():
                self._pending.clear()
        if isinstance(event, Closed) and not self._welcomed and self._refused is not None:
            self._redraw()
            return  # the refusal was the one line that says why
        if isinstance(event, (JoinRejected, Closed)) and self._failure is not None:
            self._failure_shown = True
            if isinstance(event, Closed) and not self._welcomed:
                event = ErrorReported(self._failure)  # never in the room: say why, as an error
        elif isinstance(event, Closed) and not self._welcomed:
            self._redraw()
            return  # left before the relay answered: no session was ever open to close
        if not isinstance(event, MessagePending):
            nick = self._handle.nick if self._handle is not None else None
            width = max(self._columns() - 1, 20)  # the last column would wrap on its own
            text = ansi_line(event, colour=self._colour, width=width, mention=nick)
            if text is not None:
                self._write(text)
            if self._bell and nick is not None and mentions(event, nick):
                self._write_raw("\a")
        self._redraw()  # the status bar, the pending count or our nickname may have changed

    def _notice(self, text: str) -> None:
        self._write(notice_line(text, colour=self._colour))

    def _tell(self, text: str) -> None:
        """A line on stderr, before the chat screen or after it: folded between words to the
        terminal's width."""
        tell(self._stderr, text)

    def _write_raw(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def _print(self, line: str) -> None:
        """A line of help or statistics, wrapped between words under its second column."""
        columns = _COLUMNS.match(line)
        pieces = [("text", line)]
        if columns is not None:
            pieces = [("", columns.group(1)), ("text", columns.group(2))]
        width = max(self._columns() - 1, 20)
        with self._lock:
            self._write("\n".join("".join(t for _, t in row) for row in wrap(pieces, width)))

    def _write(self, line: str) -> None:
        # sys.stdout is patch_stdout's proxy while the prompt runs: it prints above the input
        # line from any thread. One write per line, so lines from two threads never mix.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _redraw(self) -> None:
        if self._session is not None:
            self._session.app.invalidate()  # thread-safe, and a no-op when not running

    def _session_over(self) -> None:
        session = self._session
        loop = session.app.loop if session is not None else None
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._end_if_finished)

    def _end_if_finished(self) -> None:
        """Runs in the prompt's event loop: end the prompt if the session is over."""
        if self._session is None or not self.finished:
            return
        app = self._session.app
        if app.future is not None and not app.future.done():
            app.exit(exception=_SessionOver())
