"""The terminal front end: read what the user types, show what the room does.

It knows nothing about sockets. It drives a :class:`ChatHandle` (the client shell) and
receives :mod:`udpchat.events` through a callback that the client calls from its own
receiver thread, so everything that callback touches is guarded by a lock, and the
interactive prompt is only ever touched from its own event loop (``invalidate`` and
``call_soon_threadsafe`` are the thread-safe doors prompt_toolkit offers).

Three modes, because a person, a shell pipeline and a program want different things:

* **interactive** (stdin and stdout are terminals): a prompt_toolkit prompt with history and
  nickname completion. ``patch_stdout(raw=True)`` turns ``sys.stdout`` into a proxy that
  prints above the input line, so an incoming message never tears up what the user is
  typing; our own messages wait in a dim "(sending)" area just above the prompt until the
  relay posts them, then appear in room order like everybody else's.
* **plain**: each input line is a message or a command, each event one plain line; at the end
  of input we wait (bounded) until the relay has acknowledged everything, then quit. This is
  what ``printf 'hi\\n' | udpchat join bot`` needs.
* **json**: like plain, but each event is one JSON object per line, for programs.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal, Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session, get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from udpchat.commands import (
    COMMAND_NAMES,
    HELP,
    Action,
    Command,
    CommandError,
    Help,
    Nick,
    Private,
    Quit,
    Say,
    Stats,
    Who,
    parse_command,
)
from udpchat.events import (
    ClientEvent,
    Closed,
    ErrorReported,
    JoinRejected,
    MessagePending,
    MessageReceived,
    MessageRefused,
    NickChanged,
    Welcomed,
)
from udpchat.names import nick_key
from udpchat.render import (
    ansi_line,
    colour_enabled,
    json_line,
    json_record,
    plain_line,
    stats_lines,
)
from udpchat.sanitize import safe_nick, safe_text

__all__ = [
    "IDLE_TIMEOUT",
    "ChatHandle",
    "EventSink",
    "HandleFactory",
    "InteractiveUI",
    "LineUI",
    "Mode",
    "NickCompleter",
    "choose_mode",
    "run_ui",
]

IDLE_TIMEOUT = 10.0
"""At the end of piped input, how long we wait for the relay to acknowledge everything."""

HANDLE_ERRORS = (ValueError, RuntimeError, OSError)
"""What a handle may raise for one request (a full send queue, a closed session): shown to
the user as an error line, and the session goes on."""

Mode = Literal["interactive", "plain", "json"]


class ChatHandle(Protocol):
    """What the front end needs from a joined client session.

    ``nick`` and ``members`` are read-only here, so a client may expose them as properties.
    Every method may be called from the main thread while events flow from another.
    """

    @property
    def nick(self) -> str: ...

    @property
    def members(self) -> tuple[str, ...]: ...

    def say(self, text: str) -> int: ...

    def action(self, text: str) -> int: ...

    def private(self, to: str, text: str) -> None: ...

    def change_nick(self, nick: str) -> None: ...

    def who(self) -> None: ...

    def stats(self) -> Mapping[str, float | int]: ...

    def quit(self, reason: str) -> None:
        """Return once the quit is delivered or timed out."""
        ...

    def wait_idle(self, timeout: float) -> bool:
        """True once everything sent has been acknowledged; False after ``timeout`` seconds."""
        ...


EventSink = Callable[[ClientEvent], None]
HandleFactory = Callable[[EventSink], ChatHandle]
"""Builds and joins a client that reports to the given callback.

It may return at once (events tell how the join went) or block until the relay answers; it
raises (``OSError``, ``TimeoutError``, ...) when the join cannot even be attempted or fails,
and the message becomes the one line the user sees.
"""


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
) -> int:
    """Run a whole chat session in ``mode`` (default: :func:`choose_mode`); return the exit code.

    The code is 0 after a normal end, 1 when the join failed or was rejected, the session was
    closed under us, or (plain and json) the relay did not acknowledge everything in time,
    and 130 when plain or json input is interrupted with Ctrl-C.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if mode is None:
        mode = choose_mode(json_output=False, stdin=stdin, stdout=stdout)
    if mode == "interactive":
        return InteractiveUI(colour=colour_enabled(stdout), stderr=stderr).run(handle_factory)
    return LineUI(stdout, stderr, json_output=mode == "json", idle_timeout=idle_timeout).run(
        handle_factory, stdin
    )


class _Frontend:
    """What every mode shares: session state fed by events, and running commands."""

    def __init__(self, stderr: TextIO) -> None:
        self._stderr = stderr
        self._lock = threading.Lock()  # events arrive on the client's thread
        self._finished = threading.Event()  # the session is over (closed or rejected)
        self._quitting = False
        self._failed: str | None = None  # why the exit code is not 0
        self._muted = False  # run() returned: late events have nowhere to go
        self._answered = 0  # own messages posted or refused so far
        self._handle: ChatHandle | None = None

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def on_event(self, event: ClientEvent) -> None:
        """The callback handed to the client; safe to call from any thread."""
        with self._lock:
            if self._muted:
                return
            if isinstance(event, JoinRejected):
                self._failed = f"the relay refused to let us in: {safe_text(event.reason)}"
            elif isinstance(event, Closed) and not self._quitting and self._failed is None:
                reason = f": {safe_text(event.reason)}" if event.reason else ""
                self._failed = f"the session was closed{reason}"
            if isinstance(event, (MessageReceived, MessageRefused)) and event.local_id is not None:
                self._answered += 1  # one of ours was posted or refused: progress
            self._show(event)
        if isinstance(event, (JoinRejected, Closed)):
            self._finished.set()
            self._session_over()

    def _show(self, event: ClientEvent) -> None:
        raise NotImplementedError

    def _session_over(self) -> None:
        """Hook: wake the main thread if it waits for input."""

    def _print(self, line: str) -> None:
        raise NotImplementedError

    def _error(self, text: str) -> None:
        with self._lock:
            self._show(ErrorReported(text))

    def _start(self, factory: HandleFactory) -> ChatHandle | None:
        try:
            handle = factory(self.on_event)
        except KeyboardInterrupt:  # Ctrl-C while the relay is slow to answer
            self._failed = "interrupted while joining"
            self._report_failure()
            return None
        except Exception as error:  # the boundary: whatever went wrong becomes one line
            self._failed = f"cannot join: {safe_text(str(error) or type(error).__name__)}"
            self._report_failure()
            return None
        self._handle = handle
        return handle

    def _execute(self, handle: ChatHandle, line: str) -> str | None:
        """Run one input line; return the quit message when the line asks to leave."""
        try:
            command = parse_command(line)
        except CommandError as error:
            self._error(str(error))
            return None
        if isinstance(command, Quit):
            return command.reason
        try:
            self._dispatch(handle, command)
        except HANDLE_ERRORS as error:
            self._error(str(error) or type(error).__name__)
        return None

    def _dispatch(self, handle: ChatHandle, command: Command) -> None:
        if isinstance(command, Say):
            handle.say(command.text)
        elif isinstance(command, Action):
            handle.action(command.text)
        elif isinstance(command, Private):
            handle.private(command.to, command.text)
        elif isinstance(command, Nick):
            handle.change_nick(command.nick)
        elif isinstance(command, Who):
            handle.who()
        elif isinstance(command, Stats):
            self._show_stats(handle.stats())
        elif isinstance(command, Help):
            self._show_help()

    def _show_stats(self, stats: Mapping[str, float | int]) -> None:
        for line in stats_lines(stats):
            self._print(line)

    def _show_help(self) -> None:
        for line in HELP.splitlines():
            self._print(line)

    def _leave(self, handle: ChatHandle, reason: str) -> None:
        with self._lock:
            self._quitting = True
        if self.finished:
            return
        try:
            handle.quit(reason)
        except HANDLE_ERRORS as error:
            self._stderr.write(f"udpchat: quitting failed: {error}\n")

    def _report_failure(self) -> None:
        if self._failed is not None:
            self._stderr.write(f"udpchat: {self._failed}\n")
            self._stderr.flush()

    def _exit_code(self) -> int:
        return 0 if self._failed is None else 1


# --- plain and json -------------------------------------------------------------------------


_END_OF_INPUT = object()
_SESSION_OVER = object()


class LineUI(_Frontend):
    """Plain or JSON lines in, one line per event out: for pipes, scripts and bots."""

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        json_output: bool = False,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        super().__init__(stderr)
        self._stdout = stdout
        self._json = json_output
        self._idle_timeout = idle_timeout
        self._inbox: queue.Queue[object] = queue.Queue()

    def run(self, factory: HandleFactory, stdin: TextIO) -> int:
        """Join, send every input line, wait until it is all delivered, quit."""
        handle = self._start(factory)
        if handle is None:
            return 1
        try:
            self._converse(handle, stdin)
        except KeyboardInterrupt:
            self._leave(handle, "")
            with self._lock:
                self._muted = True
            return 130
        with self._lock:
            self._muted = True
        self._report_failure()
        return self._exit_code()

    def _converse(self, handle: ChatHandle, stdin: TextIO) -> None:
        # A reader thread, so that a session that ends (rejected, closed) is noticed at once
        # even while stdin is an open pipe with nothing to say.
        reader = threading.Thread(target=self._read, args=(stdin,), name="ui-stdin", daemon=True)
        reader.start()
        reason = ""
        while True:
            item = self._inbox.get()
            if not isinstance(item, str):
                break
            if not item.strip():
                continue  # a blank line is not worth an "empty message" error
            quit_reason = self._execute(handle, item)
            if quit_reason is not None:
                reason = quit_reason
                break
        if self.finished:
            return
        # A long paste leaves at the client's pace, well after input ends: wait for as long
        # as the relay keeps answering, and give up only after idle_timeout without progress.
        with self._lock:
            answered = self._answered
        while not handle.wait_idle(self._idle_timeout):
            with self._lock:
                progress, answered = self._answered != answered, self._answered
            if self.finished or not progress:
                self._failed = (
                    f"the relay answered nothing for {self._idle_timeout:g} s; "
                    "some messages may not have been delivered"
                )
                break
        self._leave(handle, reason)

    def _read(self, stdin: TextIO) -> None:
        try:
            for line in _input_lines(stdin):
                self._inbox.put(line)
        except (OSError, ValueError):  # stdin closed under us: the same as its end
            pass
        self._inbox.put(_END_OF_INPUT)

    def _session_over(self) -> None:
        self._inbox.put(_SESSION_OVER)

    def _show(self, event: ClientEvent) -> None:
        line = json_line(event) if self._json else plain_line(event)
        if line is not None:
            self._write(line)

    def _print(self, line: str) -> None:
        with self._lock:
            self._write(json_record("info", {"text": line}) if self._json else line)

    def _show_stats(self, stats: Mapping[str, float | int]) -> None:
        if not self._json:
            super()._show_stats(stats)
            return
        with self._lock:
            self._write(json_record("stats", {"stats": dict(stats)}))

    def _show_help(self) -> None:
        if not self._json:
            super()._show_help()
            return
        with self._lock:
            self._write(json_record("help", {"text": HELP}))

    def _write(self, line: str) -> None:
        """Write one line and flush it, so a reader at the other end of a pipe sees it now."""
        try:
            self._stdout.write(line + "\n")
        except UnicodeEncodeError:  # a terminal or file that cannot show some character
            encoding = getattr(self._stdout, "encoding", None) or "ascii"
            safe = line.encode(encoding, "backslashreplace").decode(encoding)
            self._stdout.write(safe + "\n")
        with contextlib.suppress(OSError, ValueError):
            self._stdout.flush()


# --- interactive -----------------------------------------------------------------------------


class _SessionOver(Exception):
    """Ends the prompt from outside when the session closes under the user."""


_MSG_TARGET = re.compile(r"^/msg\s+(\S*)$", re.IGNORECASE)


class NickCompleter(Completer):
    """Tab completion of nicknames (``nick: `` at the start of a line, ``/msg nick``) and of
    command names.

    Matching is by :func:`names.nick_key`, so ``bo`` completes ``Bob``; the menu shows
    sanitised names but inserts the real one, which is what the relay will match.
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
        elif any(ch.isspace() for ch in before):
            return
        elif before.startswith("/") and not before.startswith("//"):
            for name in COMMAND_NAMES:
                if name.startswith(before.lower()):
                    yield Completion(name + " ", start_position=-len(before), display=name)
        elif not before.startswith("/"):
            yield from self._nicks(before, suffix=": ")

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


class InteractiveUI(_Frontend):
    """The prompt_toolkit front end for a person at a terminal."""

    def __init__(
        self,
        *,
        colour: bool = True,
        stderr: TextIO | None = None,
        pt_input: Input | None = None,
        pt_output: Output | None = None,
    ) -> None:
        super().__init__(sys.stderr if stderr is None else stderr)
        self._colour = colour
        self._input = pt_input  # prompt_toolkit's terminal; None: the real one
        self._output = pt_output
        # our unconfirmed messages, with when they were typed (the clock shown beside them)
        self._pending: dict[int, tuple[MessagePending, float]] = {}
        self._session: PromptSession[str] | None = None
        self._quit_reason = ""

    def build_session(self) -> PromptSession[str]:
        """The prompt: one line with history and Tab completion, a status bar below it.

        The prompt stays one line high: printing above a prompt whose height changes while
        another thread writes leaves stale lines behind on real terminals. Our unconfirmed
        messages are counted in the status bar instead, and printed once the relay posts
        them, in room order.
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
            input=self._input,
            output=self._output,
        )
        # One prompt for the whole chat: Enter runs the line and clears the buffer instead of
        # ending the prompt. Between two prompts there would be moments with no running
        # application, and text printed from the receiver thread then lands on the prompt line.
        self._session.default_buffer.accept_handler = self._accept
        return self._session

    def _accept(self, buffer: Buffer) -> bool:
        """Enter: run the line (our message comes back from the relay, in room order)."""
        line = buffer.text
        handle = self._handle
        if handle is not None and line.strip():
            quit_reason = self._execute(handle, line)
            if quit_reason is not None:
                self._quit_reason = quit_reason
                get_app().exit(result="")
        return False  # not "keep text": the buffer is cleared, the prompt goes on

    def prompt_message(self) -> FormattedText:
        """``nick> ``: always exactly one line."""
        nick = safe_nick(self._handle.nick) if self._handle else ""
        return FormattedText([("bold" if self._colour else "", nick), ("", "> ")])

    def status_bar(self) -> FormattedText:
        """Who we are, how many are in the room, and what of ours is still on its way."""
        with self._lock:
            pending = list(self._pending.values())
        handle = self._handle
        if handle is None:
            return FormattedText([("", " joining...")])
        parts = [f" {safe_nick(handle.nick)} in a room of {len(handle.members)}"]
        if pending:
            first = safe_text(pending[0][0].text)
            if len(first) > 30:
                first = first[:29] + "\u2026"
            more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
            parts.append(f"sending: {first}{more}")
        parts.append("/help for commands")
        return FormattedText([("", "  \u00b7  ".join(parts))])

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
                return 1
            try:
                if not self.finished:
                    with contextlib.suppress(EOFError, KeyboardInterrupt, _SessionOver):
                        session.prompt(pre_run=self._end_if_finished)
                self._leave(handle, self._quit_reason)
            finally:
                with self._lock:
                    self._muted = True
        return self._exit_code()

    def _show(self, event: ClientEvent) -> None:
        if isinstance(event, MessagePending):
            self._pending[event.local_id] = (event, time.time())
        elif isinstance(event, (MessageReceived, MessageRefused)):
            local_id = event.local_id
            if local_id is not None and (not isinstance(event, MessageReceived) or event.own):
                self._pending.pop(local_id, None)
        elif isinstance(event, (Closed, JoinRejected)):
            self._pending.clear()
        if not isinstance(event, MessagePending):
            line = ansi_line(event, colour=self._colour)
            if line is not None:
                self._write(line)
        if isinstance(
            event, (MessagePending, MessageReceived, MessageRefused, Welcomed, NickChanged)
        ):
            self._redraw()  # the pending area or our nickname in the prompt changed

    def _print(self, line: str) -> None:
        with self._lock:
            self._write(line)

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


def _input_lines(stdin: TextIO) -> Iterator[str]:
    """The lines of ``stdin`` without their terminators (``\\n`` or ``\\r\\n``).

    A real file is read with ``os.read`` rather than through its buffered reader: the reader
    thread may still be blocked in it when we exit, and a daemon thread holding the buffer's
    lock can abort interpreter shutdown. Bytes that are not valid text come through as
    surrogate escapes, which :func:`commands.parse_command` refuses with an explanation.
    """
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        for line in stdin:
            yield line.rstrip("\n").removesuffix("\r")
        return
    encoding = getattr(stdin, "encoding", None) or "utf-8"
    decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
    partial = ""
    while chunk := os.read(fd, 65536):
        *lines, partial = (partial + decoder.decode(chunk)).split("\n")
        for line in lines:
            yield line.removesuffix("\r")
    partial += decoder.decode(b"", final=True)
    if partial:
        yield partial.removesuffix("\r")


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False
