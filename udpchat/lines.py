"""Plain or JSON lines in, one line per event out: the front end for pipes, scripts and bots.

Once the relay has let us in, each input line is a message or a command, run in order; each
event is one plain line on stdout (or one JSON object, with ``--json``), each error one line
on stderr naming the input line it answers; at the end of input we wait (bounded) until the
relay has acknowledged everything, then quit. This is what ``printf 'hi\\n' | udpchat join
bot`` needs, and the exit status says how it went (:mod:`udpchat.exitcodes`).

It does not import prompt_toolkit (a test checks it): a pipe needs no terminal library.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TextIO

from udpchat.commands import HELP
from udpchat.events import ClientEvent, Closed, ErrorReported, JoinRejected, MessageRefused
from udpchat.exitcodes import ExitCode
from udpchat.frontend import ChatHandle, Frontend, HandleFactory
from udpchat.render import error_text, json_line, json_record, notice_line, plain_line

__all__ = ["IDLE_TIMEOUT", "LineUI"]

IDLE_TIMEOUT = 10.0
"""At the end of piped input, how long we wait for the relay to acknowledge everything."""

_END_OF_INPUT = object()
_SESSION_OVER = object()


class LineUI(Frontend):
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
        match event:
            case ErrorReported() | MessageRefused() | JoinRejected():
                where = f"line {line}: " if line is not None else ""
                self._write_error(where + error_text(event))
                if isinstance(event, JoinRejected):
                    self._failure_shown = True
            case Closed() if not self._welcomed:
                return  # never in the room: the one line on stderr says why
            case _:
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
