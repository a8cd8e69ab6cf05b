"""Serving loops outlive whatever one datagram does: failed sends and exceptions from a core.

The relay shell over a transport whose sends fail with each errno that a firewall, a route or
port 0 gives; a core or session method made to raise: outside strict mode the loop logs it
once, counts it and goes on; in strict mode (the test suite's) it re-raises, and the relay or
the client ends with a reason and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e_support import Recorder, members, relay_config, running_relay, wait_until
from tests.test_transport import ONE_DATAGRAM_ERRORS
from udpchat import events as ev
from udpchat import faults, relay_server, wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.relay_server import RelayOptions, RelayServer, run_relay
from udpchat.transport import Address, UdpTransport
from udpchat.ui import run_ui

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

# A thread that re-raises in strict mode ends with an unhandled exception: expected here.
expects_a_dead_thread = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside strict mode, as a relay or client runs in service."""
    monkeypatch.delenv(faults.STRICT_ENV, raising=False)


class RefusingTransport:
    """A UDP transport whose sends to some addresses fail with a given errno."""

    def __init__(self) -> None:
        self.inner = UdpTransport.bind("127.0.0.1")
        self.refuse: dict[Address, int] = {}

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    def sendto(self, data: bytes, addr: Address) -> None:
        code = self.refuse.get(addr)
        if code is not None:
            raise OSError(code, os.strerror(code))
        self.inner.sendto(data, addr)

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        return self.inner.recvfrom(timeout)

    def wake(self) -> None:
        self.inner.wake()

    def close(self) -> None:
        self.inner.close()


class Glitch:
    """Makes ``owner.method`` raise ``error`` on its next ``times`` calls, then behave."""

    def __init__(self, owner: Any, method: str, error: type[Exception], times: int) -> None:
        self.original: Callable[..., Any] = getattr(owner, method)
        self.error = error
        self.left = times
        setattr(owner, method, self)

    def __call__(self, *args: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            raise self.error("injected")
        return self.original(*args)


def error_records(
    caplog: pytest.LogCaptureFixture, kind: type[Exception]
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None and r.exc_info[0] is kind]


# --- failed sends ---------------------------------------------------------------------------------


def test_relay_keeps_serving_while_sends_fail_with_each_errno() -> None:
    transport = RefusingTransport()
    server = RelayServer(RelayOptions(config=relay_config()), transport).start()
    socks: list[socket.socket] = []
    try:
        for code in ONE_DATAGRAM_ERRORS:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            transport.refuse[sock.getsockname()] = code
            sock.sendto(wire.encode_hello(os.urandom(8)), server.address)  # draws a CHALLENGE
        expected = dict.fromkeys(ONE_DATAGRAM_ERRORS, 1)
        assert wait_until(lambda: server.send_errors_by_errno == expected, 10), (
            server.send_errors_by_errno
        )
        with members(server.address, "alice", "bob") as [alice, bob]:
            alice.client.say("still here")
            bob.log.wait_event(ev.MessageReceived, 10, lambda e: e.text == "still here")
        assert server.failure is None and not server.wait(0)
    finally:
        for sock in socks:
            sock.close()
        server.stop(goodbye=False)


# --- exceptions from the relay core ---------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["receive_datagram", "next_timer", "handle_timer", "datagrams_to_send"]
)
@pytest.mark.usefixtures("lenient")
def test_relay_survives_a_core_call_that_raises(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    class CoreBug(Exception):
        pass

    # Join notices wait out a batch window: a timer the relay must wake for. A relay with
    # nothing due sleeps until its members' expiry, so a glitch in handle_timer is met only
    # once something is due: carol's join makes it so.
    with (
        running_relay(batch_notices_above=0, notice_window=0.05) as server,
        members(server.address, "alice", "bob") as [alice, bob],
    ):
        with caplog.at_level(logging.ERROR, logger="udpchat.relay"):
            glitch = Glitch(server.core, method, CoreBug, times=2)
            alice.client.say("through the glitch")
            bob.log.wait_event(ev.MessageReceived, 10, lambda e: e.text == "through the glitch")
            with members(server.address, "carol"):
                assert wait_until(lambda: glitch.left == 0, 10)
            alice.client.say("after it")
            bob.log.wait_event(ev.MessageReceived, 10, lambda e: e.text == "after it")
        assert server.internal_errors == 2
        assert server.failure is None and not server.wait(0)
    assert [(f.where, f.kind) for f in faults.take()] == [(f"RelayCore.{method}", "CoreBug")] * 2
    assert len(error_records(caplog, CoreBug)) == 1  # logged once, with its traceback


@expects_a_dead_thread
def test_strict_mode_lets_a_relay_core_exception_end_serving() -> None:
    class CoreBug(Exception):
        pass

    assert faults.strict()
    with (
        running_relay() as server,
        contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock,
    ):
        Glitch(server.core, "receive_datagram", CoreBug, times=1)
        sock.sendto(b"any datagram", server.address)
        assert server.wait(10), "the serving thread did not end"
        assert server.failure is not None and "CoreBug" in server.failure
        assert server.internal_errors == 1
    assert [f.kind for f in faults.take()] == ["CoreBug"]


@expects_a_dead_thread
def test_udpchat_relay_exits_1_with_the_reason_when_serving_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class CoreBug(Exception):
        pass

    started: list[RelayServer] = []

    class Recorded(RelayServer):
        def start(self) -> RelayServer:
            Glitch(self.core, "receive_datagram", CoreBug, times=1)
            started.append(self)
            return super().start()

    monkeypatch.setattr(relay_server, "RelayServer", Recorded)
    codes: list[int] = []
    options = RelayOptions(host="127.0.0.1", port=0, config=relay_config())
    runner = threading.Thread(target=lambda: codes.append(run_relay(options)), daemon=True)
    with caplog.at_level(logging.INFO, logger="udpchat.relay"):
        runner.start()  # not the main thread: run_relay leaves signal handlers alone
        assert wait_until(lambda: bool(started), 10)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"any datagram", started[0].address)
        runner.join(10)
        started[0]._driver.join(10)  # its thread's exception belongs to this test's warnings
    assert codes == [1]
    reasons = [r.getMessage() for r in caplog.records if "stopped serving" in r.getMessage()]
    assert len(reasons) == 1 and "CoreBug" in reasons[0] and "\n" not in reasons[0]
    faults.take()


# --- exceptions from the client session -----------------------------------------------------------


@pytest.mark.usefixtures("lenient")
def test_client_survives_a_session_call_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    class SessionBug(Exception):
        pass

    with running_relay() as server, members(server.address, "alice", "bob") as [alice, bob]:
        with caplog.at_level(logging.ERROR, logger="udpchat.client"):
            glitch = Glitch(bob.client._session, "receive_datagram", SessionBug, times=2)
            alice.client.say("through the glitch")
            bob.log.wait_event(ev.MessageReceived, 10, lambda e: e.text == "through the glitch")
            assert glitch.left == 0
        assert bob.client.internal_errors == 2
        assert not bob.log.of(ev.Closed)
    assert [(f.where, f.kind) for f in faults.take()] == [
        ("ClientSession.receive_datagram", "SessionBug")
    ] * 2
    assert len(error_records(caplog, SessionBug)) == 1


@contextlib.contextmanager
def open_pipe() -> Iterator[io.TextIOWrapper]:
    """Standard input that stays open and says nothing, as a user who is thinking."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    try:
        yield reader
    finally:
        os.close(write_fd)  # the UI's reader thread sees the end and leaves


@expects_a_dead_thread
def test_udpchat_join_ends_with_the_reason_when_the_receiver_dies() -> None:
    class SessionBug(Exception):
        pass

    clients: list[ChatClient] = []

    def start(on_event: Callable[[ev.ClientEvent], None]) -> ChatClient:
        client = ChatClient(ClientOptions("alice", server=server.address), on_event)
        clients.append(client)
        Glitch(client._session, "receive_datagram", SessionBug, times=1)
        return client.start()

    stdout, stderr = io.StringIO(), io.StringIO()
    codes: list[int] = []
    with running_relay() as server, open_pipe() as stdin:
        ui = threading.Thread(
            target=lambda: codes.append(
                run_ui(start, "plain", stdin=stdin, stdout=stdout, stderr=stderr)
            ),
            daemon=True,
        )
        ui.start()
        ui.join(15)
        for client in clients:
            client.close()
        assert not ui.is_alive(), "the front end still waits on a dead client"
    assert codes == [1]
    assert "the client stopped receiving: SessionBug" in stderr.getvalue()
    assert [f.kind for f in faults.take()] == ["SessionBug"]


@expects_a_dead_thread
def test_a_dead_receiver_closes_the_session_with_a_reason() -> None:
    class SessionBug(Exception):
        pass

    log = Recorder()
    # A relay that never answers: the first timer the session runs is its HELLO's
    # retransmission, before any join could happen.
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as silent:
        silent.bind(("127.0.0.1", 0))
        client = ChatClient(ClientOptions("alice", server=silent.getsockname()), log)
        Glitch(client._session, "handle_timer", SessionBug, times=1)
        with contextlib.closing(client.start()):
            closed = log.wait_event(ev.Closed, 10)
            assert "SessionBug" in closed.reason
            assert not client.wait_joined(0.1)
    assert [f.where for f in faults.take()] == ["ClientSession.handle_timer"]
