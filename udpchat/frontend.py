"""What every front end shares: the client handle it drives, session state fed by events,
running one input line, and the exit code.

It knows nothing about sockets, and nothing about how a line is shown: :mod:`udpchat.lines`
(plain and JSON lines, for pipes and programs) and :mod:`udpchat.terminal` (prompt_toolkit,
for a person) subclass :class:`Frontend`. Events arrive through a callback that the client
calls from its own receiver thread, so everything that callback touches is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TextIO

from udpchat.commands import (
    HELP,
    ActionCommand,
    Command,
    CommandError,
    HelpCommand,
    NickCommand,
    PrivateCommand,
    QuitCommand,
    SayCommand,
    StatsCommand,
    WhoCommand,
    parse_command,
)
from udpchat.errors import UdpchatError
from udpchat.events import (
    ClientEvent,
    Closed,
    ErrorReported,
    JoinRejected,
    MemberJoined,
    MemberLeft,
    MemberRenamed,
    MembersJoined,
    MembersLeft,
    MembersListed,
    MessagePending,
    MessageReceived,
    MessageRefused,
    PrivateReceived,
    Welcomed,
)
from udpchat.exitcodes import ExitCode
from udpchat.render import stats_lines
from udpchat.sanitize import safe_text

__all__ = ["HANDLE_ERRORS", "ROOM_EVENTS", "ChatHandle", "EventSink", "Frontend", "HandleFactory"]

HANDLE_ERRORS = (UdpchatError, OSError)
"""What a handle may raise for one request (a full send queue, a closed session, a send the
network refused): shown to the user as an error line, and the session goes on."""

ROOM_EVENTS = (
    MessageReceived,
    MemberJoined,
    MemberLeft,
    MembersJoined,
    MembersLeft,
    MemberRenamed,
)
"""Events with a place in the room's history (``history`` says they are from before us)."""


def _after_history(event: ClientEvent) -> bool:
    """Whether the relay sent ``event`` after all catch-up history (the stream is in order):
    a live room event, a private message, or an answer to one of our requests."""
    if isinstance(event, ErrorReported):
        return event.request is not None  # the relay's answer, not a notice of the client
    return isinstance(event, (*ROOM_EVENTS, PrivateReceived, MembersListed, MessageRefused))


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


class Frontend:
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
        self._head = 0  # the room's newest event when we were last welcomed

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def on_event(self, event: ClientEvent) -> None:
        """The callback handed to the client; safe to call from any thread."""
        with self._lock:
            if self._muted:
                return
            self._track(event)
            line = self._line_for(event)
            if line is not None and isinstance(event, (MessageRefused, ErrorReported)):
                self._bad_lines.add(line)
            self._mark_backlog(event)
            self._show(event, line)
            self._end_backlog_at_head(event)
        if isinstance(event, (Welcomed, JoinRejected, Closed)):
            self._settled.set()
        if isinstance(event, (JoinRejected, Closed)):
            self._finished.set()
            self._session_over()

    def _track(self, event: ClientEvent) -> None:
        """What ``event`` changes in where the session stands and in the exit code."""
        match event:
            case Welcomed():
                self._welcomed = True
            case JoinRejected(reason=reason):
                self._refused = f"the relay refused to let us in: {safe_text(reason)}"
            case Closed(reason=reason) if not self._quitting and self._failure is None:
                why = safe_text(reason) if reason else "no reason given"
                self._failed = (
                    f"the session was closed: {why}" if self._welcomed else f"could not join: {why}"
                )
            case MessageReceived(local_id=int()) | MessageRefused():
                self._answered += 1  # one of ours was posted or refused: progress

    def _mark_backlog(self, event: ClientEvent) -> None:
        """Set the room's history apart from what happens now: a notice before the first
        event from the relay's history, and one where it ends (``_end_backlog_at_head``),
        once per (re)join. When the history stops short of the room's head (a newcomer's
        history holds chat only, and the relay marks no end: protocol.md 6.3) the end is
        told before the first thing the relay sends after it: a live event, or an answer."""
        if isinstance(event, Welcomed):
            self._head = event.head
            return
        if isinstance(event, ROOM_EVENTS) and event.history:
            if not self._in_backlog:
                self._in_backlog = True
                self._notice("earlier in the room (from the relay's history):")
        elif self._in_backlog and _after_history(event):
            self._in_backlog = False
            self._notice("end of history; live from here")

    def _end_backlog_at_head(self, event: ClientEvent) -> None:
        """Catch-up is over once history reaches the room's newest event at the welcome:
        said at once, not only when the next live event comes (in a quiet room, never)."""
        at_head = isinstance(event, ROOM_EVENTS) and event.history and event.seq == self._head
        if self._in_backlog and at_head:
            self._in_backlog = False
            self._notice("end of history; live from here")

    def _notice(self, text: str) -> None:
        """Show one notice of our own (not an event of the session)."""

    @property
    def _failure(self) -> str | None:
        return self._refused or self._failed

    def _line_for(self, event: ClientEvent) -> int | None:
        """The input line that ``event`` answers, when it answers one.

        An answer may come before the call that asked for it has returned its id: the
        client hands out, on the calling thread, events that arrived while it was sending.
        An id not seen yet while a line runs can only be that line's. And an event may come
        after its line has finished: while another thread hands out earlier events (the
        room's history, say), the ones a call emits wait their turn behind them; the id the
        call returned says which line it was.
        """
        match event:
            case MessagePending(local_id=ident):
                line = self._line_of.get(ident, self._current_line)
                if line is not None:
                    self._line_of[ident] = line
                return line
            case (
                MessageReceived(local_id=int(ident))
                | MessageRefused(local_id=ident)
                | ErrorReported(request=int(ident))
            ):
                return self._line_of.get(ident, self._current_line)
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
        if isinstance(command, QuitCommand):
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
        match command:
            case SayCommand(text):
                return handle.say(text)
            case ActionCommand(text):
                return handle.action(text)
            case PrivateCommand(to, text):
                return handle.private(to, text)
            case NickCommand(nick):
                return handle.change_nick(nick)
            case WhoCommand():
                return handle.who()
            case StatsCommand():
                self._show_stats(handle.stats())
            case HelpCommand():
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
                self._tell(failure)

    def _tell(self, text: str) -> None:
        """One line of ours on stderr, ``udpchat: text``."""
        self._stderr.write(f"udpchat: {text}\n")
        self._stderr.flush()

    def _exit_code(self) -> ExitCode:
        if self._interrupted:
            return ExitCode.INTERRUPTED
        if self._refused is not None:
            return ExitCode.REFUSED
        if self._failed is not None:
            return ExitCode.FAILURE
        return ExitCode.OK
