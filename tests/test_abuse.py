"""A live relay on 127.0.0.1 under attack while real members keep chatting.

Three ``ChatClient``s (one of them behind a small forwarding socket that records everything
it sends, so its datagrams can be replayed) chat at a steady pace while attacker sockets
throw hypothesis-generated datagrams at the relay: random bytes, truncated and oversized
datagrams, valid msgpack of the wrong shape, every datagram type with a mutated field,
replays of the recorded member's datagrams (from its own address and from others), forged
tokens, HELLO and join floods and a JOIN carrying a cookie issued to another address.

What must hold: every member sees every message exactly once and in order; no attacker
socket receives anything but handshake answers and RESETs (never chat); the relay sends no
unvalidated address more than three times what it received from it; the relay stays up and
its tables stay bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakeclient import join_datagram
from udpchat import events as ev
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.link import REPLAY_WINDOW
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer

Address = tuple[str, int]
LOCALHOST = "127.0.0.1"
NOISE_SOCKETS = 6
CHAT_INTERVAL = 0.3  # below the default flood rate of 5 a second
MARKER = "legit-chat"
CONFIG = RelayConfig(heartbeat=0.5, timeout=3.0, shutdown_grace=0.5)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


# --- the scene --------------------------------------------------------------------------------


class Sniffer:
    """A forwarding socket between one member and the relay, recording what the member sends.

    The relay sees the member at the sniffer's address, so the sniffer can also replay those
    datagrams *from the member's own address*.
    """

    def __init__(self, relay: Address) -> None:
        self.relay = relay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.settimeout(0.05)
        self.address: Address = self.sock.getsockname()
        self.member: Address | None = None
        self.captured: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, src = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                if src == self.relay:
                    if self.member is not None:
                        self.sock.sendto(data, self.member)
                else:
                    self.member = src
                    self.sock.sendto(data, self.relay)
                    self.captured.append(data)

    def replay(self, data: bytes) -> None:
        self.sock.sendto(data, self.relay)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Attackers:
    """Sockets that never complete a handshake, and everything the relay sends them."""

    def __init__(self, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((LOCALHOST, 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self.sent: dict[int, int] = defaultdict(int)
        self.received: dict[int, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attackers", daemon=True)
        self._thread.start()

    def send(self, index: int, data: bytes, relay: Address) -> None:
        with contextlib.suppress(OSError):  # oversize or refused: the attempt still counts
            self.socks[index].sendto(data, relay)
            with self._lock:
                self.sent[index] += len(data)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, i)
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            for key, _ in selector.select(0.05):
                with contextlib.suppress(OSError):
                    data, _ = key.fileobj.recvfrom(65535)  # type: ignore[union-attr]
                    with self._lock:
                        self.received[key.data].append(data)
        selector.close()

    def snapshot(self) -> tuple[dict[int, int], dict[int, list[bytes]]]:
        with self._lock:
            return dict(self.sent), {k: list(v) for k, v in self.received.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self.socks:
            sock.close()


class Member:
    def __init__(self, nick: str, server: Address) -> None:
        self.nick = nick
        self.events: list[ev.ClientEvent] = []
        self.sent: list[str] = []
        self.client = ChatClient(
            ClientOptions(nick=nick, server=server, reconnect=False), self.events.append
        )

    def say(self, text: str) -> None:
        self.client.say(text)
        self.sent.append(text)


def chat(members: list[Member], stop: threading.Event, min_rounds: int, max_rounds: int) -> None:
    for r in range(max_rounds):
        if r >= min_rounds and stop.is_set():
            return
        for member in members:
            member.say(f"{MARKER} {member.nick} {r}")
        time.sleep(CHAT_INTERVAL)


class MoveLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.moves: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if " moved from " in text:
            self.moves.append(text)


@contextlib.contextmanager
def watching_moves() -> Iterator[MoveLog]:
    logger = logging.getLogger("udpchat.relay")
    handler = MoveLog()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- what attackers send ------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


def template(kind: int, token: bytes) -> list[Any]:
    """A well-formed datagram of each type, as a field list, for a token that is not ours
    (session datagrams and RESET as the fields their compact form carries, protocol.md 3)."""
    nonce = os.urandom(8)
    fields: dict[int, list[Any]] = {
        1: [nonce, bytes(1190)],
        2: [nonce, os.urandom(20), os.urandom(32), False],
        3: [nonce, os.urandom(20), os.urandom(90), bytes(1080)],
        4: [nonce, token, os.urandom(80)],
        5: [nonce, 1, "no"],
        6: [token, 5, os.urandom(60)],
        7: [token, 5, os.urandom(20)],
        8: [token, 5, os.urandom(20)],
        9: [token, os.urandom(16)],
        10: [token, 5, os.urandom(25)],
        11: [token, 5, os.urandom(25)],
    }
    return [wire.PROTOCOL_VERSION, kind, *fields[kind]]


def flipped(token: bytes, bit: int) -> bytes:
    return (int.from_bytes(token, "big") ^ (1 << bit)).to_bytes(len(token), "big")


actions = st.one_of(
    st.tuples(st.just("raw"), st.binary(max_size=1300)),
    st.tuples(st.just("oversize"), st.integers(1201, 65507), st.integers(0, 255)),
    st.tuples(st.just("truncated"), st.integers(0, 10_000), st.integers(1, 1199)),
    st.tuples(st.just("msgpack"), st.integers(0, 20), st.lists(msgpack_values, max_size=8)),
    st.tuples(
        st.just("mutate"),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        st.sampled_from(["replace", "drop", "append"]),
        st.integers(0, 10),
        msgpack_values,
    ),
    st.tuples(st.just("replay"), st.integers(0, 10_000), st.booleans()),
    st.tuples(
        st.just("forge"),
        st.sampled_from([6, 7, 8, 11]),
        st.one_of(st.none(), st.integers(0, 63)),
        st.booleans(),
        st.integers(0, 2**64 - 1),
    ),
    st.tuples(st.just("hello"), st.binary(min_size=8, max_size=8)),
)


# --- the test ---------------------------------------------------------------------------------


def test_relay_under_attack_keeps_the_room_intact() -> None:
    server = RelayServer(RelayOptions(host=LOCALHOST, port=0, config=CONFIG)).start()
    relay = server.address
    sniffer = Sniffer(relay)
    attackers = Attackers(NOISE_SOCKETS)
    alice = Member("alice", relay)
    bob = Member("bob", relay)
    carol = Member("carol", sniffer.address)  # every datagram carol sends is recorded
    members = [alice, bob, carol]
    stop_chat = threading.Event()
    chatter: threading.Thread | None = None
    flooders: list[socket.socket] = []
    try:
        with watching_moves() as moves:
            for member in members:
                member.client.start()
                assert member.client.wait_joined(10), member.nick
            chatter = threading.Thread(target=chat, args=(members, stop_chat, 10, 150))
            chatter.start()
            time.sleep(1.0)  # let carol's link carry data worth replaying
            carol_token = carol.client._session._link.token  # type: ignore[union-attr]

            flood_members = _join_flood(relay, flooders)
            _spoofed_join(attackers, relay)
            _hello_flood(attackers, relay)

            @settings(
                max_examples=250,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(st.lists(st.tuples(st.integers(0, NOISE_SOCKETS - 1), actions), max_size=8))
            def attack(batch: list[tuple[int, tuple[Any, ...]]]) -> None:
                for sock_index, action in batch:
                    _perform(action, sock_index, attackers, sniffer, relay, carol_token)
                time.sleep(0.002)

            attack()
            stop_chat.set()
            chatter.join(60)
            assert not chatter.is_alive()
            for member in members:
                assert member.client.wait_idle(10), member.nick
            # The flood's members never answer: they time out.
            end = time.monotonic() + CONFIG.timeout + 3
            while len(server.members()) > len(members) and time.monotonic() < end:
                time.sleep(0.1)

            _check_members(members, flood_members)
            _check_attackers(attackers)
            assert moves.moves == []  # no session was moved by a replay or a forgery
            assert sorted(server.members()) == ["alice", "bob", "carol"]
            assert server.failure is None and not server.wait(0)  # still serving
    finally:
        stop_chat.set()
        if chatter is not None:
            chatter.join(60)
        for member in members:
            member.client.close()
        for sock in flooders:
            sock.close()
        sniffer.close()
        attackers.close()
        server.stop(goodbye=False)
    _check_bounded(server)


def _perform(
    action: tuple[Any, ...],
    index: int,
    attackers: Attackers,
    sniffer: Sniffer,
    relay: Address,
    carol_token: bytes,
) -> None:
    kind = action[0]
    captured = sniffer.captured
    if kind == "raw":
        attackers.send(index, action[1], relay)
    elif kind == "oversize":
        attackers.send(index, bytes([action[2]]) * action[1], relay)
    elif kind == "truncated" and captured:
        data = captured[action[1] % len(captured)]
        attackers.send(index, data[: action[2] % len(data)], relay)
    elif kind == "msgpack":
        attackers.send(index, msgpack.packb([1, action[1], *action[2]]), relay)
    elif kind == "mutate":
        _, dtype, how, position, value = action
        fields = template(dtype, os.urandom(8))
        i = position % len(fields)
        if how == "replace":
            fields[i] = value
        elif how == "drop":
            del fields[i]
        else:
            fields.insert(i, value)
        attackers.send(index, msgpack.packb(fields), relay)
    elif kind == "replay" and captured:
        data = captured[action[1] % len(captured)]
        if action[2]:
            sniffer.replay(data)  # from carol's own address
        else:
            attackers.send(index, data, relay)
    elif kind == "forge":
        _, dtype, bit, spoof, pn = action
        token = os.urandom(8) if bit is None else flipped(carol_token, bit)
        fields = template(dtype, token)
        # protocol.md 3: a session datagram is type || token || pn || sealed
        data = session_bytes.encode_session(wire.DatagramType(dtype), token, pn, fields[4])
        if spoof:
            sniffer.replay(data)  # as if from carol's address
        else:
            attackers.send(index, data, relay)
    elif kind == "hello":
        attackers.send(index, wire.encode_hello(action[1]), relay)


def _spoofed_join(attackers: Attackers, relay: Address) -> None:
    """Socket 0 gets a cookie; socket 1 presents it (same nonce): no session results."""
    nonce = os.urandom(8)
    attackers.send(0, wire.encode_hello(nonce), relay)
    cookie = relay_key = None
    for _ in range(100):
        _, received = attackers.snapshot()
        for data in received.get(0, []):
            datagram = wire.decode_datagram(data)
            if isinstance(datagram, wire.Challenge) and datagram.nonce == nonce:
                cookie, relay_key = datagram.cookie, datagram.relay_key
        if cookie is not None:
            break
        time.sleep(0.01)
    assert cookie is not None
    assert relay_key is not None
    challenge = wire.Challenge(nonce, cookie, relay_key, False)
    attackers.send(1, join_datagram(nonce, challenge, "mallory"), relay)


def _hello_flood(attackers: Attackers, relay: Address) -> None:
    for i in range(200):
        attackers.send(2 + i % 2, wire.encode_hello(os.urandom(8)), relay)


def _join_flood(relay: Address, socks: list[socket.socket], count: int = 40) -> int:
    """HELLO then JOIN from ``count`` source ports of one IP; return how many got in."""
    start = time.monotonic()
    nonces = [os.urandom(8) for _ in range(count)]
    for nonce in nonces:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCALHOST, 0))
        sock.setblocking(False)
        socks.append(sock)
        sock.sendto(wire.encode_hello(nonce), relay)
    challenges = _collect(socks, wire.Challenge)
    for i, challenge in challenges.items():
        assert isinstance(challenge, wire.Challenge) and challenge.nonce == nonces[i]
        socks[i].sendto(join_datagram(nonces[i], challenge, f"flood{i}"), relay)
    accepted = len(_collect(socks, wire.Accept))
    elapsed = time.monotonic() - start
    # One host, however many ports: every HELLO is answered (protocol.md 4), but the JOINs
    # that proved the address draw from the host's bucket, and the rest are refused.
    allowance = CONFIG.handshake_burst + CONFIG.handshake_rate * elapsed + 1
    assert len(challenges) == count
    assert 0 < accepted <= allowance, (accepted, elapsed)
    assert accepted < count
    return accepted


def _collect(socks: list[socket.socket], kind: type, wait: float = 0.5) -> dict[int, Any]:
    """The first datagram of ``kind`` each socket receives within ``wait`` seconds."""
    found: dict[int, Any] = {}
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, i)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        for key, _ in selector.select(max(end - time.monotonic(), 0.0)):
            with contextlib.suppress(OSError, wire.DecodeError):
                data, _ = key.fileobj.recvfrom(65535)  # type: ignore[union-attr]
                datagram = wire.decode_datagram(data)
                if isinstance(datagram, kind):
                    found.setdefault(key.data, datagram)
    selector.close()
    return found


def _check_members(members: list[Member], flood_members: int) -> None:
    sent = {mb.nick: mb.sent for mb in members}
    for member in members:
        events = member.events
        assert not [e for e in events if isinstance(e, (ev.MessageRefused, ev.ConnectionLost))]
        chats = [e for e in events if isinstance(e, ev.MessageReceived)]
        seqs = [e.seq for e in chats]
        assert seqs == sorted(set(seqs)), "a message came twice or out of order"
        for nick, texts in sent.items():
            got = [e.text for e in chats if e.nick == nick and not e.history]
            assert got == texts, (member.nick, nick)  # every message, once, in order
        assert all(e.text.startswith(MARKER) for e in chats), "a forged message got through"
        renames = [e for e in events if isinstance(e, ev.MemberRenamed)]
        assert renames == []
        left = {e.nick for e in events if isinstance(e, ev.MemberLeft)}
        assert not left & {"alice", "bob", "carol"}
        joined = {e.nick for e in events if isinstance(e, ev.MemberJoined)}
        assert "mallory" not in joined
        assert len(joined - {"alice", "bob", "carol"}) <= flood_members


def _check_attackers(attackers: Attackers) -> None:
    sent, received = attackers.snapshot()
    allowed = (wire.Challenge, wire.Reject, wire.Reset)
    for index, datagrams in received.items():
        for data in datagrams:
            assert MARKER.encode() not in data
            datagram = wire.decode_datagram(data)
            assert isinstance(datagram, allowed), datagram  # never session data
        # RFC 9000 8: an address that never echoed its cookie gets at most 3x what it sent.
        assert sum(len(d) for d in datagrams) <= 3 * sent.get(index, 0), index


def _check_bounded(server: RelayServer) -> None:
    core = server.core
    config = core.config
    assert len(core.members) <= 3
    assert len(core.sessions.by_nick) == len(core.members)
    assert len(core.sessions.by_join) <= len(core.members)
    assert len(core.gate.join_buckets) <= config.max_sources
    assert len(core.gate.reply_buckets) <= config.max_sources
    assert len(core.log.replay(0)) <= max(config.history, 1)
    assert len(core.outbox.events) <= 10_000
    assert len(core.sessions.timers) <= 2 * len(core.members) + 10
    for member in core.members.values():
        link = member.link
        assert link.send_buffer_free >= 0
        assert link.in_flight <= wire.WINDOW
        assert len(link._buffer) <= wire.WINDOW
        assert len(link._partial) <= m.MAX_MESSAGE_SIZE
        assert link._replay_bits.bit_length() <= REPLAY_WINDOW
