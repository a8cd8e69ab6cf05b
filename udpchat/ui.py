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
* **plain**: once the relay has let us in, each input line is a message or a command, run in
  order; each event is one plain line on stdout, each error one line on stderr naming the
  input line it answers; at the end of input we wait (bounded) until the relay has
  acknowledged everything, then quit. This is what ``printf 'hi\\n' | udpchat join bot``
  needs, and the exit status says how it went (:mod:`udpchat.exitcodes`).
* **json**: like plain, but each event is one JSON object per line, for programs.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session, get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from udpchat.commands import (
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
from udpchat.completion import NickCompleter
from udpchat.events import (
    ClientEvent,
    Closed,
    ErrorReported,
    JoinRejected,
    MemberJoined,
    MemberLeft,
    MessagePending,
    MessageReceived,
    MessageRefused,
    NickChanged,
    Welcomed,
)
from udpchat.exitcodes import ExitCode
from udpchat.render import (
    ansi_line,
    colour_enabled,
    error_text,
    json_line,
    json_record,
    mentions,
    notice_line,
    plain_line,
    stats_lines,
    wrap,
)
from udpchat.sanitize import safe_nick, safe_text
from udpchat.statusbar import LinkStatus, fit, shorten

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

    def private(self, to: str, text: str) -> int: ...

    def change_nick(self, nick: str) -> int: ...

    def who(self) -> int: ...

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


class _Frontend:
    """What every mode shares: session state fed by events, and running commands.

    One reentrant lock guards it. A command holds it while it calls the client, so that the
    answer to a request, which the receiver thread may deliver before the call returns, is
    shown only once we know which input line asked for it; events the call itself emits
    (our own "pending") come back on the same thread, hence reentrant.
    """

    def __init__(self, stderr: TextIO, server: str | None = None) -> None:
        self._stderr = stderr
        self._server = server  # the relay's address as the user wrote it, for messages
        self._lock = threading.RLock()  # events arrive on the client's thread
        self._finished = threading.Event()  # the session is over (closed or rejected)
        self._settled = threading.Event()  # welcomed, or the join ended
        self._welcomed = False
        self._quitting = False
        self._interrupted = False
        self._refused: str | None = None  # the relay's reason for not letting us in
        self._failed: str | None = None  # any other reason the exit code is not 0
        self._failure_shown = False  # the user has seen that reason already
        self._muted = False  # run() returned: late events have nowhere to go
        self._answered = 0  # own messages posted or refused so far
        self._handle: ChatHandle | None = None
        self._line_of: dict[int, int] = {}  # request or message id -> input line number
        self._current_line: int | None = None  # the line whose command is being run
        self._bad_lines: set[int] = set()  # input lines refused or answered with an error
        self._in_backlog = False  # showing room events from before we (re)joined

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def on_event(self, event: ClientEvent) -> None:
        """The callback handed to the client; safe to call from any thread."""
        with self._lock:
            if self._muted:
                return
            if isinstance(event, Welcomed):
                self._welcomed = True
            elif isinstance(event, JoinRejected):
                self._refused = f"the relay refused to let us in: {safe_text(event.reason)}"
            elif isinstance(event, Closed) and not self._quitting and self._failure is None:
                reason = safe_text(event.reason) if event.reason else "no reason given"
                self._failed = (
                    f"the session was closed: {reason}"
                    if self._welcomed
                    else f"could not join: {reason}"
                )
            if isinstance(event, (MessageReceived, MessageRefused)) and event.local_id is not None:
                self._answered += 1  # one of ours was posted or refused: progress
            line = self._line_for(event)
            if line is not None and isinstance(event, (MessageRefused, ErrorReported)):
                self._bad_lines.add(line)
            self._mark_backlog(event)
            self._show(event, line)
        if isinstance(event, (Welcomed, JoinRejected, Closed)):
            self._settled.set()
        if isinstance(event, (JoinRejected, Closed)):
            self._finished.set()
            self._session_over()

    def _mark_backlog(self, event: ClientEvent) -> None:
        """Set the room's history apart from what happens now: a notice before the first
        event from the relay's history, and one before the first live event after it."""
        if not isinstance(event, _ROOM_EVENTS):
            return
        if event.history and not self._in_backlog:
            self._in_backlog = True
            self._notice("earlier in the room (from the relay's history):")
        elif not event.history and self._in_backlog:
            self._in_backlog = False
            self._notice("end of history; live from here")

    def _notice(self, text: str) -> None:
        """Show one notice of our own (not an event of the session)."""

    @property
    def _failure(self) -> str | None:
        return self._refused or self._failed

    def _line_for(self, event: ClientEvent) -> int | None:
        """The input line that ``event`` answers, when it answers one."""
        if isinstance(event, MessagePending):
            if self._current_line is None:
                return None
            self._line_of[event.local_id] = self._current_line
            return self._current_line
        if isinstance(event, (MessageReceived, MessageRefused)) and event.local_id is not None:
            return self._line_of.get(event.local_id)
        if isinstance(event, ErrorReported) and event.request is not None:
            return self._line_of.get(event.request)
        return None

    def _show(self, event: ClientEvent, line: int | None) -> None:
        raise NotImplementedError

    def _session_over(self) -> None:
        """Hook: wake the main thread if it waits for input."""

    def _print(self, line: str) -> None:
        raise NotImplementedError

    def _local_error(self, text: str, line: int | None) -> None:
        with self._lock:
            if line is not None:
                self._bad_lines.add(line)
            self._show(ErrorReported(text), line)

    def _start(self, factory: HandleFactory) -> ChatHandle | None:
        try:
            handle = factory(self.on_event)
        except KeyboardInterrupt:  # Ctrl-C while the relay is slow to answer
            self._interrupted = True
            self._failed = "interrupted while joining"
            self._report_failure()
            return None
        except Exception as error:  # the boundary: whatever went wrong becomes one line
            text = (error.strerror if isinstance(error, OSError) else None) or str(error)
            self._failed = f"cannot join: {safe_text(text or type(error).__name__)}"
            self._report_failure()
            return None
        self._handle = handle
        return handle

    def _execute(self, handle: ChatHandle, line: str, number: int | None = None) -> str | None:
        """Run one input line (``number`` counts from 1, for messages); return the quit
        message when the line asks to leave."""
        with self._lock:
            self._current_line = number
            try:
                return self._run_line(handle, line, number)
            finally:
                self._current_line = None

    def _run_line(self, handle: ChatHandle, line: str, number: int | None) -> str | None:
        try:
            command = parse_command(line)
        except CommandError as error:
            self._local_error(str(error), number)
            return None
        if isinstance(command, Quit):
            return command.reason
        try:
            ident = self._dispatch(handle, command)
        except HANDLE_ERRORS as error:
            self._local_error(str(error) or type(error).__name__, number)
            return None
        if ident is not None and number is not None:
            self._line_of[ident] = number
        return None

    def _dispatch(self, handle: ChatHandle, command: Command) -> int | None:
        """Run ``command``; return the id that the client's answer to it will carry."""
        if isinstance(command, Say):
            return handle.say(command.text)
        if isinstance(command, Action):
            return handle.action(command.text)
        if isinstance(command, Private):
            return handle.private(command.to, command.text)
        if isinstance(command, Nick):
            return handle.change_nick(command.nick)
        if isinstance(command, Who):
            return handle.who()
        if isinstance(command, Stats):
            self._show_stats(handle.stats())
        elif isinstance(command, Help):
            self._show_help()
        return None

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
        """Say on stderr why the exit code is not 0, unless the user has seen it already."""
        failure = self._failure
        if failure is not None and not self._failure_shown:
            self._failure_shown = True
            with contextlib.suppress(OSError, ValueError):
                self._stderr.write(f"udpchat: {failure}\n")
                self._stderr.flush()

    def _exit_code(self) -> ExitCode:
        if self._interrupted:
            return ExitCode.INTERRUPTED
        if self._refused is not None:
            return ExitCode.REFUSED
        if self._failed is not None:
            return ExitCode.FAILURE
        return ExitCode.OK


# --- plain and json -------------------------------------------------------------------------


_COLUMNS = re.compile(r"^(\s*\S.*?\s{2,})(\S.*)$")  # "  label   value": wrap under the value
_END_OF_INPUT = object()
_SESSION_OVER = object()
_ROOM_EVENTS = (MessageReceived, MemberJoined, MemberLeft, NickChanged)


class LineUI(_Frontend):
    """Plain or JSON lines in, one line per event out: for pipes, scripts and bots.

    Input lines are run in order, and only once the relay has let us in: a refused join
    ends the run at once, and ``/stats`` or a bad command answers in its place among the
    others. In plain mode what went wrong (a refused line, a refused join) goes to stderr,
    where a script looks for errors, with the number of the input line it answers; JSON
    keeps everything on stdout, as records.
    """

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        json_output: bool = False,
        idle_timeout: float = IDLE_TIMEOUT,
        server: str | None = None,
    ) -> None:
        super().__init__(stderr, server)
        self._stdout = stdout
        self._json = json_output
        self._idle_timeout = idle_timeout
        self._inbox: queue.Queue[object] = queue.Queue()
        self._undelivered: str | None = None

    def run(self, factory: HandleFactory, stdin: TextIO) -> int:
        """Join, then send every input line, wait until it is all delivered, and quit."""
        handle = self._start(factory)
        if handle is None:
            return self._exit_code()
        try:
            # A reader thread, so that a session that ends (rejected, closed) is noticed at
            # once even while stdin is an open pipe with nothing to say.
            reader = threading.Thread(
                target=self._read, args=(stdin,), name="ui-stdin", daemon=True
            )
            reader.start()
            while not self._settled.wait(0.5):  # a timed wait, so that Ctrl-C gets through
                pass
            if not self.finished:
                self._converse(handle)
        except KeyboardInterrupt:
            self._interrupted = True
            self._leave(handle, "")
        with self._lock:
            self._muted = True
        self._report_failure()
        return self._exit_code()

    def _exit_code(self) -> ExitCode:
        code = super()._exit_code()
        if code is ExitCode.OK and (self._bad_lines or self._undelivered):
            return ExitCode.UNDELIVERED
        return code

    def _converse(self, handle: ChatHandle) -> None:
        reason = ""
        number = 0
        while True:
            item = self._inbox.get()
            if not isinstance(item, str):
                break
            number += 1
            if not item.strip():
                continue  # a blank line is not worth an "empty message" error
            quit_reason = self._execute(handle, item, number)
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
            if self.finished:
                return
            if not progress:
                self._undelivered = (
                    f"the relay answered nothing for {self._idle_timeout:g} s; "
                    "some messages may not have been delivered"
                )
                self._write_error(self._undelivered)
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

    def _show(self, event: ClientEvent, line: int | None) -> None:
        if self._json:
            self._write(json_line(event, line=line))
            return
        if isinstance(event, (ErrorReported, MessageRefused, JoinRejected)):
            where = f"line {line}: " if line is not None else ""
            self._write_error(where + error_text(event))
            if isinstance(event, JoinRejected):
                self._failure_shown = True
        elif isinstance(event, Closed) and not self._welcomed:
            return  # never in the room: the one line on stderr says why
        else:
            text = plain_line(event)
            if text is not None:
                self._write(text)

    def _print(self, line: str) -> None:
        with self._lock:
            self._write(json_record("info", {"text": line}) if self._json else line)

    def _notice(self, text: str) -> None:
        if not self._json:  # records say it already: "history": true
            self._write(notice_line(text, colour=False))

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

    def _write_error(self, text: str) -> None:
        """One line on stderr, as every failure of a command is reported."""
        _write_line(self._stderr, f"udpchat: {text}")

    def _write(self, line: str) -> None:
        """Write one line and flush it, so a reader at the other end of a pipe sees it now."""
        _write_line(self._stdout, line)


def _write_line(stream: TextIO, line: str) -> None:
    try:
        stream.write(line + "\n")
    except UnicodeEncodeError:  # a terminal or file that cannot show some character
        encoding = getattr(stream, "encoding", None) or "ascii"
        safe = line.encode(encoding, "backslashreplace").decode(encoding)
        stream.write(safe + "\n")
    with contextlib.suppress(OSError, ValueError):
        stream.flush()


# --- interactive -----------------------------------------------------------------------------


class _SessionOver(Exception):
    """Ends the prompt from outside when the session closes under the user."""


class InteractiveUI(_Frontend):
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
            state = [f" {nick}: relay lost {now - link.since:.0f} s ago", link.rejoin(now)]
        elif handle is None:
            state = [" joining..."]
        else:
            state = [f" {nick} in a room of {len(handle.members)}"]
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
        if isinstance(event, MessagePending):
            self._pending[event.local_id] = (event, time.time())
        elif isinstance(event, (MessageReceived, MessageRefused)):
            local_id = event.local_id
            if local_id is not None and (not isinstance(event, MessageReceived) or event.own):
                self._pending.pop(local_id, None)
        elif isinstance(event, (Closed, JoinRejected)):
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
