"""The relay shell on real UDP sockets (127.0.0.1, ephemeral ports)."""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path

import pytest

from tests.fakeclient import FakeClient
from udpchat import events as ev
from udpchat import messages as m
from udpchat import wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.stores import StoreURL

pytestmark = pytest.mark.e2e


class SocketDriver:
    """Drives a FakeClient over a real socket, for a bounded time."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def run_until(self, done, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = time.monotonic()
            for data, addr in self.client.datagrams_to_send(now):
                self.sock.sendto(data, addr)
            if done():
                return True
            timer = self.client.next_timer()
            wait = 0.05 if timer is None else min(max(timer - now, 0.0005), 0.05)
            self.sock.settimeout(wait)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                self.client.handle_timer(time.monotonic())
                continue
            self.client.receive_datagram(data, addr, time.monotonic())
        return done()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def relay():  # type: ignore[no-untyped-def]
    server = RelayServer(RelayOptions(port=0, config=RelayConfig(shutdown_grace=0.5)))
    server.start()
    yield server
    server.stop()


@pytest.mark.timeout(30)
def test_join_chat_and_garbage_over_real_udp(relay: RelayServer) -> None:
    alice = SocketDriver(FakeClient("alice", relay.address, seed=1))
    bob = SocketDriver(FakeClient("bob", relay.address, seed=2))
    try:
        assert alice.run_until(lambda: alice.client.joined)
        assert bob.run_until(lambda: bob.client.joined)
        # garbage from a third socket while members chat
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            for payload in (b"", b"\xff" * 1500, b"\x93\x01\x63", wire.encode_hello(b"x" * 8)[:50]):
                junk.sendto(payload, relay.address)
        alice.client.send(m.Say("hello over udp"))
        assert alice.run_until(lambda: bool(alice.client.of(m.Posted)))
        assert bob.run_until(lambda: bool(bob.client.of(m.ChatMessage)))
        assert bob.client.of(m.ChatMessage)[0].text == "hello over udp"
        assert relay.members() == ["alice", "bob"]
        assert relay.stats.malformed >= 3
    finally:
        alice.close()
        bob.close()


@pytest.mark.timeout(30)
def test_stop_tells_members_the_relay_is_going_away() -> None:
    server = RelayServer(RelayOptions(port=0, config=RelayConfig(shutdown_grace=1.0)))
    server.start()
    alice = SocketDriver(FakeClient("alice", server.address, seed=1))
    try:
        assert alice.run_until(lambda: alice.client.joined)
        import threading

        stopper = threading.Thread(target=server.stop, args=("bye for now",))
        stopper.start()
        assert alice.run_until(lambda: bool(alice.client.of(m.Shutdown)))
        stopper.join(5)
        assert not stopper.is_alive()
        assert alice.client.of(m.Shutdown)[0].text == "bye for now"
    finally:
        alice.close()


@pytest.mark.timeout(30)
def test_client_events_as_an_iterator_without_a_callback() -> None:
    server = RelayServer(RelayOptions(port=0, config=RelayConfig(shutdown_grace=0.3)))
    with server, ChatClient(ClientOptions("alice", server=server.address)) as alice:
        assert alice.wait_joined(5)
        alice.say("through the queue")
        assert alice.wait_idle(5)
        alice.quit("done", timeout=5)
        seen = list(alice.iter_events(timeout=2))
    kinds = [type(e) for e in seen]
    assert kinds[0] is ev.Welcomed and kinds[-1] is ev.Closed
    posted = [e for e in seen if isinstance(e, ev.MessageReceived)]
    assert [(e.text, e.own) for e in posted] == [("through the queue", True)]
    assert kinds.index(ev.MessagePending) < kinds.index(ev.MessageReceived)


def test_a_second_relay_on_a_busy_port_hears_the_port_is_busy_not_the_store(
    tmp_path: Path,
) -> None:
    """Two relays started alike (the same port, the same SQLite store, as `udpchat relay`
    twice does): the second is told its port is busy, the true cause, not that the store is
    in use; it leaves neither the socket nor the store open, so the room goes on with the
    first, and with the next relay once the first has stopped."""
    store = StoreURL("sqlite", tmp_path / "room.sqlite3")
    first = RelayServer(RelayOptions(port=0, store=store)).start()
    port = first.address[1]
    try:
        with pytest.raises(OSError) as raised:
            RelayServer(RelayOptions(port=port, store=store))
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        first.stop()
    again = RelayServer(RelayOptions(port=port, store=store)).start()  # nothing left open
    again.stop()


@pytest.mark.timeout(30)
def test_the_serving_loop_does_its_chores_when_they_are_due(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Giving free memory back and the summary of bad datagrams dropped are no events, and
    the driver hands out only when there is something: the relay adds an item for them."""
    given: list[float] = []
    monkeypatch.setattr("udpchat.relay_server.give_back_free_memory", lambda: given.append(1.0))
    server = RelayServer(RelayOptions(port=0, config=RelayConfig(shutdown_grace=0.3)))
    server.start()
    try:
        # Each flag is set inside a call, under the lock that call then takes the chore
        # under: that call hands it out, on this thread, before it returns.
        def give_back_due(now: float) -> None:
            server._give_back = True

        def drops_due(now: float) -> None:
            server._drops_since_report = 3
            server._last_drop_report = now - 11

        server._driver.call(give_back_due)
        assert given == [1.0]
        caplog.set_level("INFO", logger="udpchat.relay")
        server._driver.call(drops_due)
        assert "dropped 3 bad datagrams in the last" in caplog.text
        assert given == [1.0]
    finally:
        server.stop()
