"""``udpchat relay`` against datagrams no ordinary client sends, and a flood of forgeries.

One datagram from UDP source port 0 used to end a relay: its answer went to port 0, the send
failed, and the serving thread died. Here a raw socket (root only) sends exactly those
datagrams, inside a private network namespace the test creates, and then during a chat in
which ordinary sockets forge handshakes, other protocol versions, garbage and session
datagrams at a few hundred a second. The relay must stay up and the room intact.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests import rawudp
from tests.e2e_support import (
    ROOT,
    JsonProcess,
    Process,
    Recorder,
    RelayProcess,
    assert_one_room_order,
    udpchat_env,
    wait_until,
)
from tests.fakeclient import join_datagram, stray_session
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.transport import Address

pytestmark = pytest.mark.e2e

PORT_ZERO_DROP = "from port 0"
_namespaces = itertools.count()


def namespaces_available() -> tuple[bool, str]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "network namespaces and raw sockets need root"
    if shutil.which("ip") is None:
        return False, "'ip' not found (install iproute2)"
    return True, "ok"


@contextlib.contextmanager
def private_namespace() -> Iterator[list[str]]:
    """A fresh network namespace with loopback up; yields the argv prefix that runs a command
    inside. Processes started in it must have ended before the block does."""
    name = f"udpchat-test-{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)


def port_zero_drops(relay: Process) -> int:
    return sum(PORT_ZERO_DROP in line for line in list(relay.stderr))


def assert_relay_ends_cleanly(relay: Process) -> None:
    """Still serving; Ctrl-C ends it with status 0; it never logged a failure."""
    assert relay.proc.poll() is None, f"the relay died: {relay.stderr[-20:]}"
    relay.interrupt()
    assert relay.wait(15) == 0
    problems = [
        line
        for line in relay.stderr
        if "Traceback" in line or "internal error" in line or "sendto failed" in line
    ]
    assert problems == []


# --- the attack, inside a private namespace ------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("key", [None, "a room key"], ids=["open", "keyed"])
def test_port_zero_datagrams_inside_a_namespace_leave_the_relay_serving(key: str | None) -> None:
    available, why = namespaces_available()
    if not available:
        pytest.skip(why)
    key_args = ["--key", key] if key is not None else []
    with private_namespace() as inside:
        started: list[Process] = []
        try:
            relay = RelayProcess("--verbose", *key_args, prefix=inside)
            started.append(relay)
            host, port = relay.address
            attack = subprocess.run(
                [*inside, sys.executable, "-m", "tests.rawudp", host, str(port)]
                + ([key] if key is not None else []),
                capture_output=True,
                text=True,
                timeout=30,
                env=udpchat_env(),
                cwd=ROOT,
                check=True,
            )
            sent = int(attack.stdout)
            assert sent == 4
            # The relay took in every one of them (and answered none) ...
            assert wait_until(lambda: port_zero_drops(relay) >= sent, 10), relay.stderr[-20:]
            # ... and still admits and serves members.
            server = f"{host}:{port}"
            alice, bob = (
                JsonProcess("join", nick, "--server", server, "--json", *key_args, prefix=inside)
                for nick in ("alice", "bob")
            )
            started += [alice, bob]
            alice.wait_record("welcome", 15)
            bob.wait_record("welcome", 15)
            alice.send("still serving")
            bob.wait_record("message", 10, lambda r: r["text"] == "still serving")
            for member in (alice, bob):
                member.close_stdin()
                assert member.wait(15) == 0
            assert_relay_ends_cleanly(relay)
        finally:
            for process in started:
                process.cleanup()


# --- the acceptance test: a chat under forged traffic -------------------------------------------


class Forger:
    """Forges datagrams at ``rate`` a second until stopped (at most ``limit`` seconds): from
    ordinary sockets on other ports, and from source port 0 through a raw socket when the
    process may open one."""

    def __init__(self, relay: Address, rate: float, limit: float) -> None:
        self.relay = relay
        self.rate = rate
        self.limit = limit
        self.sent = 0
        self.from_port_zero = 0
        self.rng = random.Random(7)
        self.socks = []
        for _ in range(4):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self.raw = rawudp.PortZeroSender() if rawudp.can_send()[0] else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="forger", daemon=True)

    def __enter__(self) -> Forger:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(self.limit + 5)
        for sock in self.socks:
            sock.close()
        if self.raw is not None:
            self.raw.close()

    def forged(self) -> bytes:
        """One ordinary forgery: a handshake, another version, garbage, or a session datagram
        with a token that names no session."""
        rng = self.rng
        token = rng.randbytes(wire.TOKEN_SIZE)
        pn = rng.randrange(2**32)
        kind = rng.randrange(7)
        if kind == 0:
            return wire.encode_hello(rng.randbytes(8))
        if kind == 1:
            request = bytearray(wire.encode_hello(rng.randbytes(8)))
            request[1] = 1
            return bytes(request)
        if kind == 2:
            return rng.randbytes(rng.randrange(1, 1300))
        if kind == 3:
            challenge = wire.Challenge(
                rng.randbytes(8), rng.randbytes(20), rng.randbytes(32), False
            )
            return join_datagram(challenge.nonce, challenge, "mallory")
        if kind == 4:
            say = m.encode_message(m.Say("forged"))
            # in the clear
            return session_bytes.encode_session(wire.DatagramType.DATA, token, pn, say)
        if kind == 5:
            return stray_session(token, pn, wire.DatagramType.ACK)
        return stray_session(token, pn)

    def _run(self) -> None:
        burst = 6
        interval = burst / self.rate
        end = time.monotonic() + self.limit
        attack = rawudp.attack()
        for turn in itertools.count():
            if self.stop.is_set() or time.monotonic() >= end:
                return
            for i in range(burst):
                with contextlib.suppress(OSError):
                    if self.raw is not None and i == 0:
                        self.raw.send(attack[turn % len(attack)], self.relay)
                        self.from_port_zero += 1
                    else:
                        self.socks[i % len(self.socks)].sendto(self.forged(), self.relay)
                    self.sent += 1
            self.stop.wait(interval)  # pacing, not synchronisation


@pytest.mark.timeout(60)
def test_relay_keeps_the_room_intact_under_forged_traffic() -> None:
    """Every message reaches every member once and in order while forgeries arrive at
    about 300 a second, some from source port 0 when the test may use a raw socket."""
    relay = RelayProcess("--verbose")
    logs = [Recorder() for _ in range(3)]
    clients = [
        ChatClient(ClientOptions(nick, server=relay.address), log)
        for nick, log in zip(("alice", "bob", "carol"), logs, strict=True)
    ]
    rounds = 12
    try:
        for client in clients:
            client.start()
        for client in clients:
            assert client.wait_joined(10), client.nick
        with Forger(relay.address, rate=300, limit=20) as forger:
            for r in range(rounds):
                for client in clients:
                    client.say(f"{client.nick} {r}")
                forger.stop.wait(0.25)  # a human pace under the relay's flood limits
            for client in clients:
                assert client.wait_idle(15), client.nick
        assert forger.sent >= 500, forger.sent
        assert_one_room_order(logs, expected=rounds * len(clients))
        for log in logs:
            assert all(not e.text.startswith("forged") for e in log.chat())
        if forger.raw is not None:
            assert wait_until(lambda: port_zero_drops(relay) >= forger.from_port_zero, 10)
        assert sorted(c.nick for c in clients) == ["alice", "bob", "carol"]
        assert_relay_ends_cleanly(relay)
    finally:
        for client in clients:
            client.close()
        relay.cleanup()
