"""A room with a key on real sockets: a keyed chat between library clients, watched at the
relay's socket, and what ``udpchat join`` says, and how soon, when key and relay do not
match."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from tests.e2e_support import Process, Recorder, join_process, relay_config
from udpchat import events as ev
from udpchat import wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.cli import app
from udpchat.exitcodes import ExitCode
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.transport import Address, DatagramTransport

pytestmark = pytest.mark.e2e

KEY = "open sesame"


class Watched:
    """A transport that notes the length of every datagram it sends and receives."""

    def __init__(self, inner: DatagramTransport) -> None:
        self.inner = inner
        self.sizes: list[int] = []
        self.datagrams: list[bytes] = []

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    def sendto(self, data: bytes, addr: Address) -> None:
        self.sizes.append(len(data))
        self.datagrams.append(data)
        self.inner.sendto(data, addr)

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        got = self.inner.recvfrom(timeout)
        if got is not None:
            self.sizes.append(len(got[0]))
            self.datagrams.append(got[0])
        return got

    def wake(self) -> None:
        self.inner.wake()

    def close(self) -> None:
        self.inner.close()


@contextlib.contextmanager
def relay_with(key: str | None) -> Iterator[tuple[RelayServer, Watched]]:
    server = RelayServer(RelayOptions(host="127.0.0.1", port=0, config=relay_config(), key=key))
    watched = server._transport = Watched(server._transport)
    server.start()
    try:
        yield server, watched
    finally:
        server.stop(goodbye=False)


def member(relay: RelayServer, nick: str, key: str | None) -> tuple[ChatClient, Recorder]:
    log = Recorder()
    options = ClientOptions(nick=nick, server=relay.address, key=key, pace=False)
    return ChatClient(options, log).start(), log


@pytest.mark.timeout(30)
def test_keyed_chat_end_to_end() -> None:
    """Two members with the key chat through a relay with it; on the wire, nothing but the
    handshake and session datagrams padded to four sizes, and "hi" looks like a 100-character
    line."""
    with relay_with(KEY) as (relay, watched):
        alice, alice_log = member(relay, "alice", KEY)
        bob, bob_log = member(relay, "bob", KEY)
        try:
            assert alice.wait_joined(5) and bob.wait_joined(5)
            alice.say("hi")
            alice.say("x" * 100)
            bob.say("and a longer line back, " * 10)
            lines = ["hi", "x" * 100, "and a longer line back, " * 10]
            for log in (alice_log, bob_log):
                assert log.wait_for(lambda _, log=log: sorted(log.texts()) == sorted(lines), 5)
            assert alice.wait_idle(5) and bob.wait_idle(5)
        finally:
            alice.close()
            bob.close()
        stats = relay.stats
    assert stats.bad_key == 0 and stats.malformed == 0 and stats.auth_failures == 0
    kinds = {wire.datagram_type(data) for data in watched.datagrams}
    assert kinds <= {1, 2, 3, 4, 6, 7, 8}
    padded: set[int] = set()
    for data in watched.datagrams:
        datagram = wire.decode_datagram(data)
        if isinstance(datagram, wire.Protected):
            padded.add(len(datagram.sealed) - 16)  # the tag
    assert padded <= {64, 256, 512, 1152}, sorted(padded)
    # "hi" and the 100-character line share a bucket. (A datagram of ACKs alone would be 64,
    # but on a busy machine every ACK may ride on data, so none is required.)
    assert 256 in padded


@pytest.mark.timeout(40)
def test_join_says_at_once_when_key_and_relay_do_not_match() -> None:
    """Well before the 10 s a silent relay takes, one line on stderr and the status of a
    refused join."""
    cases = [
        (
            KEY,
            [],
            "udpchat: could not join: this room needs a key: give it with --key or UDPCHAT_KEY",
            ExitCode.FAILURE,
        ),
        (
            KEY,
            ["--key", "open says me"],
            "udpchat: the relay refused to let us in: wrong room key",
            ExitCode.REFUSED,
        ),
        (
            None,
            ["--key", KEY],
            "udpchat: could not join: this relay has no room key; join without --key",
            ExitCode.FAILURE,
        ),
    ]
    with contextlib.ExitStack() as stack:
        runs: list[tuple[RelayServer, Process, float, str, int]] = []
        for relay_key, args, expected, status in cases:
            relay, _ = stack.enter_context(relay_with(relay_key))
            process = join_process("eve", relay.address, *args, json_output=False)
            stack.callback(process.cleanup)
            runs.append((relay, process, time.monotonic(), expected, status))
        for relay, process, started, expected, status in runs:
            assert process.wait(15) == status, (process.args, process.stderr)
            # Told, not timed out: the words say which, and it came before the join timeout
            # (three interpreters starting at once on a busy machine can take seconds).
            assert time.monotonic() - started < ClientOptions.join_timeout, process.stderr
            assert process.stderr == [expected]
            assert relay.members() == []


@pytest.mark.timeout(30)
def test_a_wrong_key_is_told_not_timed_out() -> None:
    """The library client: the relay's BAD_KEY, confirmed by a second CHALLENGE, ends the
    join with that reason, well before the join timeout (how fast is for a benchmark)."""
    with relay_with(KEY) as (relay, _):
        client, log = member(relay, "mallory", "open says me")
        try:
            assert client.wait_closed(ClientOptions.join_timeout / 2)
        finally:
            client.close()
    assert log.of(ev.JoinRejected) == [ev.JoinRejected(5, "wrong room key")]


@pytest.mark.timeout(30)
def test_a_keygen_key_works_as_a_room_key() -> None:
    key = CliRunner().invoke(app, ["keygen"]).stdout.strip()
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    with relay_with(key) as (relay, _):
        alice, _ = member(relay, "alice", key)
        bob, bob_log = member(relay, "bob", key)
        mallory, mallory_log = member(relay, "mallory", typo)
        try:
            assert alice.wait_joined(5) and bob.wait_joined(5)
            alice.say("sealed with a generated key")
            bob_log.wait_event(ev.MessageReceived, 5, lambda e: e.nick == "alice")
            assert mallory.wait_closed(5)
        finally:
            for client in (alice, bob, mallory):
                client.close()
    assert mallory_log.of(ev.JoinRejected) == [ev.JoinRejected(5, "wrong room key")]
