import contextlib
import io
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.plain_text import PlainTextOutput

from udpchat.commands import HELP
from udpchat.completion import NickCompleter
from udpchat.errors import UsageError
from udpchat.events import (
    Closed,
    ConnectionLost,
    ErrorReported,
    JoinRejected,
    MemberJoined,
    MemberRenamed,
    MembersListed,
    MessagePending,
    MessageReceived,
    MessageRefused,
    PrivateReceived,
    Reconnecting,
    Welcomed,
)
from udpchat.exitcodes import ExitCode
from udpchat.terminal import InteractiveUI
from udpchat.ui import ChatHandle, EventSink, choose_mode, run_ui

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]

STATS = {"srtt_ms": 12.5, "rto_ms": 40.0, "retransmissions": 3, "loss_estimate": 0.02}


class FakeHandle:
    """A client stand-in: answers from its own thread, like the real receiver thread."""

    def __init__(
        self,
        sink: EventSink,
        nick: str = "alice",
        members: tuple[str, ...] = ("alice", "bob", "Bea", "carol"),
        *,
        delivers: bool = True,
    ) -> None:
        self._sink = sink
        self.nick = nick
        self.members = members
        self.calls: list[tuple[Any, ...]] = []
        self.delivers = delivers
        self.fail_next: Exception | None = None
        self._ids = 0
        self._seq = 100
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        sink(Welcomed(nick, members, False))

    def _run(self) -> None:
        while (job := self._work.get()) is not None:
            job()
            self._work.task_done()
        self._work.task_done()

    def _later(self, job: Callable[[], None]) -> None:
        self._work.put(job)

    def _check(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def _post(self, text: str, action: bool) -> int:
        self._check()
        self._ids += 1
        local_id = self._ids
        self._sink(MessagePending(local_id, text, action))
        if self.delivers:

            def posted() -> None:
                self._seq += 1
                self._sink(
                    MessageReceived(
                        self._seq, 0.0, self.nick, text, action=action, own=True, local_id=local_id
                    )
                )

            self._later(posted)
        return local_id

    def say(self, text: str) -> int:
        self.calls.append(("say", text))
        return self._post(text, False)

    def action(self, text: str) -> int:
        self.calls.append(("action", text))
        return self._post(text, True)

    def _request(self) -> int:
        self._ids += 1
        return self._ids

    def private(self, to: str, text: str) -> int:
        self.calls.append(("private", to, text))
        self._check()
        self._later(lambda: self._sink(PrivateReceived(0.0, self.nick, to, text)))
        return self._request()

    def change_nick(self, nick: str) -> int:
        self.calls.append(("nick", nick))
        old = self.nick

        def changed() -> None:
            self.nick = nick
            self._seq += 1
            self._sink(MemberRenamed(self._seq, 0.0, old, nick, own=True))

        self._later(changed)
        return self._request()

    def who(self) -> int:
        self.calls.append(("who",))
        self._later(lambda: self._sink(MembersListed(self.members)))
        return self._request()

    def stats(self) -> dict[str, float | int]:
        self.calls.append(("stats",))
        return dict(STATS)

    def quit(self, reason: str) -> None:
        self.calls.append(("quit", reason))
        self._later(lambda: self._sink(Closed("quit")))
        self._work.put(None)
        self._thread.join(5)

    def wait_idle(self, timeout: float) -> bool:
        self.calls.append(("wait_idle", timeout))
        if not self.delivers:
            return False
        self._work.join()
        return True

    def close_from_relay(self, reason: str) -> None:
        self._later(lambda: self._sink(Closed(reason)))


class Factory:
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.handle: FakeHandle | None = None

    def __call__(self, sink: EventSink) -> ChatHandle:
        self.handle = FakeHandle(sink, **self.options)
        return self.handle

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        assert self.handle is not None
        return self.handle.calls


def run_lines(
    text: str, factory: Callable[[EventSink], ChatHandle], mode: str = "plain"
) -> tuple[int, list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_ui(factory, mode, stdin=io.StringIO(text), stdout=out, stderr=err)  # type: ignore[arg-type]
    return code, out.getvalue().splitlines(), err.getvalue()


def bodies(lines: list[str]) -> list[str]:
    """Plain lines without their HH:MM:SS stamp."""
    return [line[9:] if line[2:3] == ":" and line[5:6] == ":" else line for line in lines]


def test_plain_mode_sends_lines_and_commands_then_quits() -> None:
    factory = Factory()
    script = "hello\n/me waves\n/msg bob psst\n/who\n   \n/nick al\n//etc\n"
    code, lines, err = run_lines(script, factory)
    assert code == 0, err
    assert err == ""
    assert factory.calls == [
        ("say", "hello"),
        ("action", "waves"),
        ("private", "bob", "psst"),
        ("who",),
        ("nick", "al"),
        ("say", "/etc"),
        ("wait_idle", 10.0),
        ("quit", ""),
    ]
    shown = bodies(lines)
    assert shown[0] == "-- you are alice; in the room (4): alice, bob, Bea, carol"
    assert "<alice> hello" in shown
    assert "* alice waves" in shown
    assert "[alice -> bob] psst" in shown
    assert "-- in the room (4): alice, bob, Bea, carol" in shown
    assert "-- you are now al" in shown
    assert "<al> /etc" in shown
    assert shown[-1] == "-- session closed: quit"
    assert not any("(sending)" in line for line in lines)  # pending is not a plain line


def test_plain_mode_reports_bad_commands_on_stderr_with_their_line_and_goes_on() -> None:
    factory = Factory()
    code, lines, err = run_lines("/bogus\n\n/msg\nstill here\n", factory)
    assert code == ExitCode.UNDELIVERED == 3
    assert err.splitlines() == [
        "udpchat: line 1: unknown command /bogus; try /help",
        "udpchat: line 3: usage: /msg NICK TEXT",
    ]
    assert not any("!!" in line for line in lines)
    assert ("say", "still here") in factory.calls


def test_quit_command_stops_reading_and_sends_the_message() -> None:
    factory = Factory()
    code, _, _ = run_lines("one\n/quit gone fishing\ntwo\n", factory)
    assert code == 0
    assert factory.calls == [("say", "one"), ("wait_idle", 10.0), ("quit", "gone fishing")]


def test_crlf_input_is_accepted() -> None:
    factory = Factory()
    run_lines("hi there\r\n/quit\r\n", factory)
    assert factory.calls[0] == ("say", "hi there")


def test_help_and_stats_in_plain_mode() -> None:
    code, lines, _ = run_lines("/help\n/stats\n", Factory())
    assert code == 0
    text = "\n".join(lines)
    assert HELP in text
    assert "link statistics" in lines
    assert any(line.split()[:4] == ["round", "trip", "12", "ms"] for line in lines), lines


def test_handle_errors_are_shown_and_the_session_goes_on() -> None:
    def factory(sink: EventSink) -> ChatHandle:
        handle = FakeHandle(sink)
        handle.fail_next = UsageError("send queue full, try again")
        return handle

    code, lines, err = run_lines("first\nsecond\n", factory)
    assert code == ExitCode.UNDELIVERED
    assert err == "udpchat: line 1: send queue full, try again\n"
    assert "<alice> second" in bodies(lines)


def test_undelivered_messages_give_a_non_zero_exit() -> None:
    factory = Factory(delivers=False)
    code, _, err = run_lines("lost\n", factory)
    assert code == ExitCode.UNDELIVERED
    assert err.count("\n") == 1 and "the relay answered nothing for" in err
    assert factory.calls[-1] == ("quit", "")


class PacedHandle(FakeHandle):
    """Confirms one message per wait, as a client pacing a long paste does."""

    def __init__(self, sink: EventSink) -> None:
        super().__init__(sink, delivers=False)
        self.unconfirmed: list[tuple[int, str]] = []

    def say(self, text: str) -> int:
        local_id = super().say(text)
        self.unconfirmed.append((local_id, text))
        return local_id

    def wait_idle(self, timeout: float) -> bool:
        self.calls.append(("wait_idle", timeout))
        if self.unconfirmed:
            local_id, text = self.unconfirmed.pop(0)
            self._seq += 1
            self._sink(
                MessageReceived(self._seq, 0.0, self.nick, text, own=True, local_id=local_id)
            )
        return not self.unconfirmed


def test_end_of_input_waits_as_long_as_the_relay_keeps_answering() -> None:
    handles: list[PacedHandle] = []

    def factory(sink: EventSink) -> ChatHandle:
        handles.append(PacedHandle(sink))
        return handles[0]

    code, lines, err = run_lines("".join(f"line {i}\n" for i in range(5)), factory)
    assert code == 0, err
    assert sum(1 for call in handles[0].calls if call[0] == "wait_idle") == 5
    assert [b for b in bodies(lines) if b.startswith("<alice>")] == [
        f"<alice> line {i}" for i in range(5)
    ]


def test_join_failure_is_one_line_on_stderr() -> None:
    def factory(sink: EventSink) -> ChatHandle:
        raise TimeoutError("the relay does not answer")

    code, lines, err = run_lines("hello\n", factory)
    assert code == 1
    assert lines == []
    assert err == "udpchat: cannot join: the relay does not answer\n"


@contextlib.contextmanager
def open_pipe() -> Iterator[TextIO]:
    """A stdin that stays open with nothing to read, like a quiet producer."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "r") as stdin:
        try:
            yield stdin
        finally:
            os.close(write_end)  # EOF lets the reader thread finish before the fd is closed
            time.sleep(0.05)


def test_ctrl_c_while_joining_is_one_line() -> None:
    def factory(sink: EventSink) -> ChatHandle:
        raise KeyboardInterrupt

    code, _, err = run_lines("hello\n", factory)
    assert code == ExitCode.INTERRUPTED == 130
    assert err == "udpchat: interrupted while joining\n"


def test_rejection_ends_the_session_even_while_stdin_stays_open() -> None:
    class Rejected:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} called on a rejected session")

    def factory(sink: EventSink) -> ChatHandle:
        def later() -> None:
            time.sleep(0.05)
            sink(JoinRejected(1, "nickname taken"))
            sink(Closed("rejected"))

        threading.Thread(target=later, daemon=True).start()
        return Rejected()

    out, err = io.StringIO(), io.StringIO()
    with open_pipe() as stdin:
        code = run_ui(factory, "plain", stdin=stdin, stdout=out, stderr=err)
    assert code == ExitCode.REFUSED == 4
    assert out.getvalue() == ""  # said once, where errors go
    assert err.getvalue() == "udpchat: the relay refused to let us in: nickname taken\n"


def test_relay_closing_the_session_is_a_failure() -> None:
    def factory(sink: EventSink) -> ChatHandle:
        handle = FakeHandle(sink)
        handle.close_from_relay("the relay shut down")
        return handle

    out, err = io.StringIO(), io.StringIO()
    with open_pipe() as stdin:
        code = run_ui(factory, "plain", stdin=stdin, stdout=out, stderr=err)
    assert code == 1
    assert "the session was closed: the relay shut down" in err.getvalue()


def test_json_mode_prints_one_object_per_line() -> None:
    factory = Factory()
    code, lines, err = run_lines("hi \x1b[31m\n/nope\n/stats\n/help\n", factory, "json")
    assert code == ExitCode.UNDELIVERED, err  # /nope was refused
    assert err == ""  # a program reads the records; nothing else to say
    records = [json.loads(line) for line in lines]
    kinds = [record["type"] for record in records]
    assert kinds[0] == "welcome"
    assert records[0]["members"] == ["alice", "bob", "Bea", "carol"]
    assert {"pending", "message", "error", "stats", "help", "closed"} <= set(kinds)
    message = next(r for r in records if r["type"] == "message")
    assert message["text"] == "hi \x1b[31m"  # raw, escaped by JSON
    assert message["own"] is True
    error = next(r for r in records if r["type"] == "error")
    assert (error["text"], error["line"]) == ("unknown command /nope; try /help", 2)
    assert message["line"] == 1 and records[1] == {
        "type": "pending",
        "local_id": 1,
        "text": "hi \x1b[31m",
        "action": False,
        "line": 1,
    }
    stats = next(r for r in records if r["type"] == "stats")
    assert stats["stats"] == STATS
    assert all(line.isascii() for line in lines)


def test_refused_message_in_plain_mode() -> None:
    def factory(sink: EventSink) -> ChatHandle:
        handle = FakeHandle(sink, delivers=False)
        original = handle.say

        def say(text: str) -> int:
            local_id = original(text)
            sink(MessageRefused(local_id, text, "slow down"))
            return local_id

        handle.say = say  # type: ignore[method-assign]
        handle.wait_idle = lambda timeout: True  # type: ignore[method-assign]
        return handle

    code, lines, err = run_lines("spam\n", factory)
    assert code == ExitCode.UNDELIVERED
    assert err == "udpchat: line 1: not delivered (slow down): spam\n"
    assert not any("spam" in line for line in lines)


def test_an_answer_handed_out_before_its_request_returns_names_its_line() -> None:
    """The client hands out, on the calling thread, events that arrived while it sent: the
    relay's answer to a request can reach the front end before the request's id does."""

    def factory(sink: EventSink) -> ChatHandle:
        handle = FakeHandle(sink)

        def private(to: str, text: str) -> int:
            handle.calls.append(("private", to, text))
            request = handle._request()
            sink(ErrorReported(f"no such nickname: {to}", request))  # before returning
            return request

        handle.private = private  # type: ignore[method-assign]
        return handle

    code, lines, err = run_lines("hi\n/msg nobody psst\n/nope\n", factory, "json")
    assert code == ExitCode.UNDELIVERED, err
    errors = [r for r in map(json.loads, lines) if r["type"] == "error"]
    assert [(r["text"], r["line"]) for r in errors] == [
        ("no such nickname: nobody", 2),
        ("unknown command /nope; try /help", 3),
    ]


def test_a_pending_handed_out_after_its_line_has_run_names_its_line() -> None:
    """While the client's thread hands out earlier events (the room's history), what a
    call emits waits behind them: a MessagePending can come after its line has run."""
    held: list[tuple[int, str]] = []

    def factory(sink: EventSink) -> ChatHandle:
        handle = FakeHandle(sink, delivers=False)

        def say(text: str) -> int:
            local_id = handle._request()
            held.append((local_id, text))  # handed out later, by another thread
            return local_id

        def who() -> int:
            for local_id, text in held:
                sink(MessagePending(local_id, text, False))
            held.clear()
            return handle._request()

        handle.say = say  # type: ignore[method-assign]
        handle.who = who  # type: ignore[method-assign]
        handle.wait_idle = lambda timeout: True  # type: ignore[method-assign]
        return handle

    _, lines, err = run_lines("one\ntwo\n/who\n", factory, "json")
    pending = [r for r in map(json.loads, lines) if r["type"] == "pending"]
    assert [(r["text"], r["line"]) for r in pending] == [("one", 1), ("two", 2)], err


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_choose_mode() -> None:
    assert choose_mode(json_output=True, stdin=TTY(), stdout=TTY()) == "json"
    assert choose_mode(json_output=False, stdin=TTY(), stdout=TTY()) == "interactive"
    assert choose_mode(json_output=False, stdin=io.StringIO(), stdout=TTY()) == "plain"
    assert choose_mode(json_output=False, stdin=TTY(), stdout=io.StringIO()) == "plain"
    assert choose_mode(json_output=False, stdin=None, stdout=None) == "plain"


# --- completion -------------------------------------------------------------------------------


def complete(text: str, members: tuple[str, ...] = ("alice", "bob", "Bea", "carol")) -> list[str]:
    completer = NickCompleter(lambda: members, lambda: "alice")
    document = Document(text, len(text))
    found = completer.get_completions(document, CompleteEvent(completion_requested=True))
    return [text[: len(text) + c.start_position] + c.text for c in found]


def test_nick_completion_at_the_start_of_a_line() -> None:
    assert complete("b") == ["Bea: ", "bob: "]
    assert complete("BO") == ["bob: "]
    assert complete("car") == ["carol: "]
    assert complete("") == ["Bea: ", "bob: ", "carol: "]  # not ourselves
    assert complete("al") == []
    assert complete("zed") == []


def test_nick_completion_anywhere_in_the_line() -> None:
    assert complete("hello b") == ["hello Bea ", "hello bob "]
    assert complete("thanks CAR") == ["thanks carol "]
    assert complete("/me hugs c") == ["/me hugs carol "]
    assert complete("hello ") == []  # no word begun: Tab does not list the whole room
    assert complete("/who b") == []  # commands other than /me and /msg take no nickname


def test_msg_target_completion() -> None:
    assert complete("/msg c") == ["/msg carol "]
    assert complete("/MSG  b") == ["/MSG  Bea ", "/MSG  bob "]
    assert complete("/msg carol hi") == []


def test_command_completion() -> None:
    assert complete("/m") == ["/me ", "/msg "]
    assert complete("/q") == ["/quit "]
    assert complete("//") == []


def test_completion_shows_sanitised_names() -> None:
    completer = NickCompleter(lambda: ("b\x1bob",), lambda: "alice")
    (completion,) = completer.get_completions(Document("b", 1), CompleteEvent())
    assert completion.text == "b\x1bob: "
    assert completion.display_text == "b␛ob"


# --- interactive ------------------------------------------------------------------------------


@pytest.fixture
def terminal() -> Iterator[Any]:
    with create_pipe_input() as pipe:
        yield pipe


def interactive(pipe: Any, factory: Callable[[EventSink], ChatHandle]) -> tuple[list[int], Any]:
    ui = InteractiveUI(colour=False, stderr=io.StringIO(), pt_input=pipe, pt_output=DummyOutput())
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(ui.run(factory)), daemon=True)
    thread.start()
    return result, thread


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_interactive_sends_lines_and_quits(terminal: Any) -> None:
    factory = Factory()
    result, thread = interactive(terminal, factory)
    wait_for(lambda: factory.handle is not None)
    terminal.send_text("hello\r")
    wait_for(lambda: ("say", "hello") in factory.calls)
    terminal.send_text("/me waves\r/quit see you\r")
    thread.join(10)
    assert result == [0]
    assert factory.calls == [("say", "hello"), ("action", "waves"), ("quit", "see you")]


def test_interactive_ctrl_d_and_ctrl_c_leave_cleanly() -> None:
    for key, code in (("\x04", ExitCode.OK), ("\x03", ExitCode.INTERRUPTED)):
        with create_pipe_input() as pipe:
            factory = Factory()
            result, thread = interactive(pipe, factory)
            wait_for(lambda f=factory: f.handle is not None)  # type: ignore[misc]
            pipe.send_text(key)
            thread.join(10)
            assert result == [code]
            assert factory.calls == [("quit", "")]


def test_interactive_ctrl_c_clears_a_half_typed_line_and_up_brings_it_back(terminal: Any) -> None:
    ui = InteractiveUI(
        colour=False, stderr=io.StringIO(), pt_input=terminal, pt_output=DummyOutput()
    )
    factory = Factory()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(ui.run(factory)), daemon=True)
    thread.start()
    wait_for(lambda: factory.handle is not None and ui._session is not None)
    assert ui._session is not None
    buffer = ui._session.default_buffer
    terminal.send_text("half a thought")
    wait_for(lambda: buffer.text == "half a thought")
    terminal.send_text("\x03")  # clears the line: nothing is sent, nobody leaves
    # the history is reloaded into the buffer at the next redraw, as after Enter
    wait_for(lambda: buffer.text == "" and "half a thought" in buffer._working_lines)
    terminal.send_text("\x1b[A\r")  # Up, Enter: the cleared line comes back and is sent
    wait_for(lambda: ("say", "half a thought") in factory.calls)
    terminal.send_text("\x04")
    thread.join(10)
    assert result == [ExitCode.OK]
    assert factory.calls == [("say", "half a thought"), ("quit", "")]


def test_interactive_ends_when_the_relay_closes_the_session(terminal: Any) -> None:
    factory = Factory()
    result, thread = interactive(terminal, factory)
    wait_for(lambda: factory.handle is not None)
    time.sleep(0.2)  # let the prompt start
    assert factory.handle is not None
    factory.handle.close_from_relay("the relay shut down")
    thread.join(10)
    assert result == [1]
    assert ("quit", "") not in factory.calls


def test_interactive_prompt_is_one_line_and_the_status_bar_counts_pending() -> None:
    ui = InteractiveUI(colour=True, stderr=io.StringIO())
    ui.build_session()

    def prompt() -> str:
        return "".join(item[1] for item in ui.prompt_message())

    def status() -> str:
        return "".join(item[1] for item in ui.status_bar())

    assert prompt() == "> "
    assert status().startswith(" connecting")
    handle = FakeHandle(ui.on_event, delivers=False)
    ui._handle = handle  # as run() does once the factory returns
    assert prompt() == "alice> "
    assert "sending" not in status()
    ui.on_event(MessagePending(1, "one"))
    ui.on_event(MessagePending(2, "two", action=True))
    assert prompt() == "alice> "  # never grows: stale lines on real terminals otherwise
    assert "sending 2: one" in status()
    ui.on_event(MessageReceived(5, 0.0, "alice", "one", own=True, local_id=1))
    assert "sending: two" in status() and "more" not in status()
    ui.on_event(MessageRefused(2, "two", "slow down"))
    assert "sending" not in status()
    ui.on_event(MessagePending(3, "x" * 100 + "\x1b[31m"))
    assert "\x1b" not in status() and len(status()) < 120


def test_interactive_prints_events_above_the_prompt(terminal: Any) -> None:
    screen = io.StringIO()
    ui = InteractiveUI(
        colour=False, stderr=io.StringIO(), pt_input=terminal, pt_output=PlainTextOutput(screen)
    )
    factory = Factory()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(ui.run(factory)), daemon=True)
    thread.start()
    wait_for(lambda: factory.handle is not None)
    terminal.send_text("hello\r/stats\r/bogus\r")
    wait_for(lambda: "!! unknown command /bogus" in screen.getvalue())
    terminal.send_text("\x04")
    thread.join(10)
    assert result == [0]
    shown = screen.getvalue()
    assert "-- you are alice; in the room (4)" in shown
    assert "<alice> hello" in shown
    assert "link statistics" in shown


def test_real_files_are_read_line_by_line_and_bad_bytes_refused(tmp_path: Any) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes("héllo\r\n".encode() + b"bad \xff byte\n\n" + b"last line")
    factory = Factory()
    out, err = io.StringIO(), io.StringIO()
    with path.open(encoding="utf-8") as stdin:
        code = run_ui(factory, "plain", stdin=stdin, stdout=out, stderr=err)
    assert code == ExitCode.UNDELIVERED
    assert factory.calls[:2] == [("say", "héllo"), ("say", "last line")]
    assert err.getvalue() == "udpchat: line 2: the line is not valid UTF-8 text\n"


def test_pending_messages_keep_the_time_they_were_typed(monkeypatch: Any) -> None:
    ui = InteractiveUI(colour=False, stderr=io.StringIO())
    ui.build_session()
    ui._handle = FakeHandle(ui.on_event, delivers=False)
    clock = [1_790_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    ui.on_event(MessagePending(1, "one"))
    first = "".join(item[1] for item in ui.prompt_message())
    clock[0] += 75  # the prompt is redrawn later: the line must not move with the clock
    assert "".join(item[1] for item in ui.prompt_message()) == first


# --- chat polish ------------------------------------------------------------------------------


def bar(ui: InteractiveUI, width: int) -> str:
    return "".join(item[1] for item in ui.status_bar(width))


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_status_bar_keeps_its_essentials_at_any_width(width: int) -> None:
    ui = InteractiveUI(colour=False, stderr=io.StringIO(), server="127.0.0.1:9000")
    ui.build_session()
    assert "connecting to 127.0.0.1:9000" in bar(ui, max(width, 60))
    ui._handle = FakeHandle(ui.on_event, delivers=False)
    for i in range(3):
        ui.on_event(MessagePending(i + 1, f"message number {i} " * 4))
    shown = bar(ui, width)
    assert len(shown) <= width
    assert "alice in a room of 4" in shown
    assert "sending" in shown and "3" in shown  # in full or as a count: never dropped
    assert ("/help" in shown) == (width >= 120)


def test_the_status_bar_counts_an_outage_and_the_rejoin() -> None:
    ui = InteractiveUI(colour=False, stderr=io.StringIO())
    ui.build_session()
    ui._handle = FakeHandle(ui.on_event)
    assert "in a room of 4" in bar(ui, 80)
    ui.on_event(ConnectionLost("the relay went silent"))
    ui.on_event(Reconnecting(2, 60.0))
    shown = bar(ui, 80)
    assert "relay lost 0 s ago" in shown and "rejoin attempt 2 in 60 s" in shown
    assert "in a room of" not in shown
    ui.on_event(Reconnecting(3, 0.0))
    assert "rejoin attempt 3: no answer for 0 s" in bar(ui, 80)
    ui.on_event(Welcomed("alice", ("alice",), True))
    assert "alice in a room of" in bar(ui, 80)


def run_screen(
    keys: str, factory: Factory, *, bell: bool = True, until: str = "<alice> done"
) -> str:
    """Run the interactive front end on a pipe: type ``keys``, then Ctrl-D; the screen."""
    screen = io.StringIO()
    with create_pipe_input() as pipe:
        ui = InteractiveUI(
            colour=False,
            stderr=io.StringIO(),
            pt_input=pipe,
            pt_output=PlainTextOutput(screen),
            bell=bell,
        )
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(ui.run(factory)), daemon=True)
        thread.start()
        wait_for(lambda: factory.handle is not None)
        pipe.send_text(keys)
        wait_for(lambda: until in screen.getvalue())
        pipe.send_text("\x04")
        thread.join(10)
    assert result == [ExitCode.OK]
    return screen.getvalue()


def test_a_multi_line_paste_is_one_message_per_line() -> None:
    factory = Factory()
    run_screen("\x1b[200~first line\nsecond line\n\nthird\x1b[201~\rdone\r", factory)
    says = [call[1] for call in factory.calls if call[0] == "say"]
    assert says == ["first line", "second line", "third", "done"]


class MentioningHandle(FakeHandle):
    """Bob answers our "done" by naming us."""

    def say(self, text: str) -> int:
        local_id = super().say(text)
        if text == "done":
            self._later(lambda: self._sink(MessageReceived(50, 0.0, "bob", "alice: look here")))
        return local_id


class MentioningFactory(Factory):
    def __call__(self, sink: EventSink) -> ChatHandle:
        self.handle = MentioningHandle(sink)
        return self.handle


def test_a_mention_rings_the_bell_unless_turned_off() -> None:
    for bell in (True, False):
        screen = run_screen("done\r", MentioningFactory(), bell=bell, until="look here")
        assert "<bob> alice: look here" in screen
        assert ("\a" in screen) == bell


def test_backlog_is_set_apart_from_live_events() -> None:
    class Backlog(FakeHandle):
        def __init__(self, sink: EventSink) -> None:
            super().__init__(sink)
            sink(MessageReceived(1, 0.0, "bob", "said before", history=True))
            sink(MemberJoined(2, 0.0, "carol", history=True))

    code, lines, _ = run_lines("now\n", Backlog)
    assert code == ExitCode.OK
    shown = bodies(lines)
    start = shown.index("-- earlier in the room (from the relay's history):")
    end = shown.index("-- end of history; live from here")
    assert shown[0].startswith("-- you are alice")
    assert shown[start + 1 : end] == ["<bob> said before", "-- carol joined"]
    assert shown[end + 1] == "<alice> now"


def test_help_and_stats_wrap_between_words_under_their_second_column() -> None:
    screen = io.StringIO()
    with create_pipe_input() as pipe:
        output = PlainTextOutput(screen)
        output.get_size = lambda: Size(rows=24, columns=41)  # type: ignore[method-assign]
        ui = InteractiveUI(colour=False, stderr=io.StringIO(), pt_input=pipe, pt_output=output)
        factory = Factory()
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(ui.run(factory)), daemon=True)
        thread.start()
        wait_for(lambda: factory.handle is not None)
        pipe.send_text("/help\r")
        wait_for(lambda: "does." in screen.getvalue())
        pipe.send_text("\x04")
        thread.join(10)
    shown = screen.getvalue().splitlines()
    at = next(i for i, line in enumerate(shown) if "act: shown as" in line)
    assert shown[at].startswith("  /me TEXT          act:") and len(shown[at]) <= 40
    assert shown[at + 1].startswith(" " * 20 + "yournick")  # under the second column
    help_text = " ".join(screen.getvalue().split())
    assert 'act: shown as "* yournick TEXT"' in help_text
