"""End to end through the library: a real RelayServer and real ChatClients on loopback UDP.

Joining and refusals, fan-out in one room order, the slash-command features, garbage thrown
at a live relay, and a lossy run.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import threading
import time

import msgpack
import pytest

from tests.e2e_support import (
    Recorder,
    assert_one_room_order,
    join,
    members,
    running_relay,
    wait_until,
)
from tests.fakeclient import stray_session
from udpchat import events as ev
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.impair import ImpairmentConfig

pytestmark = pytest.mark.e2e


def refused(relay: tuple[str, int], nick: str) -> ev.JoinRejected:
    """Join as ``nick``, expect a final REJECT, and check the client closes."""
    member = join(relay, nick, wait=False)
    try:
        rejected = member.log.wait_event(ev.JoinRejected, 5)
        member.log.wait_event(ev.Closed, 5)
        assert member.client.wait_closed(5)
        assert not member.log.of(ev.Welcomed)
        return rejected
    finally:
        member.client.close()


# --- 1. joining -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_nickname_taken_is_compared_case_insensitively() -> None:
    with running_relay() as relay, members(relay.address, "Alice") as [alice]:
        fullwidth = "\uff21\uff4c\uff49\uff43\uff45"
        for other in ("ALICE", "alice", fullwidth):
            rejected = refused(relay.address, other)
            assert rejected.code == wire.RejectCode.NICK_TAKEN
            assert "taken" in rejected.reason
        assert relay.members() == ["Alice"]
        # Alice never noticed a thing.
        assert not alice.log.of(ev.MemberJoined)
        assert alice.client.state.value == "joined"


@pytest.mark.timeout(30)
def test_invalid_nicknames_are_refused_before_anything_is_sent() -> None:
    for bad in ("", "/alice", "two words", "a" * 33, "tab\there", "\u200bzero"):
        with pytest.raises(ValueError):
            ChatClient(ClientOptions(nick=bad, server=("127.0.0.1", 9)))


@pytest.mark.timeout(30)
def test_relay_full_refuses_then_admits_once_a_place_is_free() -> None:
    with running_relay(max_members=2) as relay, members(relay.address, "alice", "bob") as room:
        alice, bob = room
        rejected = refused(relay.address, "carol")
        assert rejected.code == wire.RejectCode.RELAY_FULL
        bob.client.quit("making room", timeout=5)
        left = alice.log.wait_event(ev.MemberLeft, 5)
        assert (left.nick, left.reason, left.text) == ("bob", "quit", "making room")
        with members(relay.address, "carol") as [carol]:
            alice.log.wait_event(ev.MemberJoined, 5, lambda e: e.nick == "carol")
            welcome = carol.log.wait_event(ev.Welcomed, 1)
            assert welcome.members == ("alice", "carol")


# --- 2. fan-out in one order ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_fan_out_reaches_every_other_member_once_in_one_order() -> None:
    nicks = ("alice", "bob", "carol", "dave")
    per_member = 15
    with running_relay() as relay, members(relay.address, *nicks) as room:
        # Everybody talks at once, from their own threads.
        def talk(member_index: int) -> None:
            for i in range(per_member):
                room[member_index].client.say(f"{nicks[member_index]} {i}")

        talkers = [threading.Thread(target=talk, args=(i,)) for i in range(len(room))]
        for t in talkers:
            t.start()
        for t in talkers:
            t.join(10)
        total = per_member * len(room)
        for member in room:
            assert member.log.wait_for(
                lambda es: sum(isinstance(e, ev.MessageReceived) for e in es) >= total, 15
            ), member.nick
            assert member.client.wait_idle(5)
        order = assert_one_room_order([member.log for member in room], total)
        for member in room:
            chat = member.log.chat()
            own = [e for e in chat if e.own]
            # a member gets its own messages only as POSTED confirmations, never echoed back
            assert [e.text for e in own] == [f"{member.nick} {i}" for i in range(per_member)]
            assert all(e.nick == member.nick for e in own)
            assert sorted(e.local_id or 0 for e in own) == list(range(1, per_member + 1))
            assert not [e for e in chat if e.nick == member.nick and not e.own]
        # each sender's messages keep their sending order in the room order
        for nick in nicks:
            mine = [text for _, who, text in order if who == nick]
            assert mine == [f"{nick} {i}" for i in range(per_member)]


# --- 3. private messages, nick changes, who, actions ----------------------------------------------


@pytest.mark.timeout(30)
def test_private_nick_who_and_me() -> None:
    with running_relay() as relay, members(relay.address, "alice", "bob", "carol") as room:
        alice, bob, carol = room

        alice.client.private("BOB", "psst")  # recipients are matched like nicknames
        got = bob.log.wait_event(ev.PrivateReceived, 5)
        assert (got.sender, got.to, got.text) == ("alice", "bob", "psst")
        copy = alice.log.wait_event(ev.PrivateReceived, 5)
        assert (copy.sender, copy.to, copy.text) == ("alice", "bob", "psst")

        alice.client.private("nobody", "hello?")
        error = alice.log.wait_event(ev.ErrorReported, 5)
        assert "nobody" in error.text

        bob.client.change_nick("Robert")
        for member in room:
            renamed = member.log.wait_event(ev.MemberRenamed, 5)
            assert (renamed.old, renamed.new, renamed.own) == ("bob", "Robert", member is bob)
        assert bob.client.nick == "Robert"
        assert wait_until(lambda: set(relay.members()) == {"alice", "carol", "Robert"}, 5)

        bob.client.change_nick("CAROL")
        refusal = bob.log.wait_event(ev.ErrorReported, 5)
        assert "taken" in refusal.text.lower() or "use" in refusal.text.lower(), refusal.text
        assert bob.client.nick == "Robert"

        alice.client.who()
        listed = alice.log.wait_event(ev.MembersListed, 5)
        assert listed.members == ("alice", "carol", "Robert")
        for member in room:
            assert wait_until(lambda m_=member: m_.client.members == listed.members, 5)

        carol.client.action("waves")
        bob.client.say("I am Robert now")
        for member in room:
            member.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "I am Robert now")
        for member in (alice, bob):
            action = member.log.wait_event(ev.MessageReceived, 1, lambda e: e.action)
            assert (action.nick, action.text, action.own) == ("carol", "waves", False)
        own_action = carol.log.wait_event(ev.MessageReceived, 1, lambda e: e.action)
        assert (own_action.nick, own_action.own) == ("carol", True)
        said = alice.log.wait_event(ev.MessageReceived, 1, lambda e: e.text == "I am Robert now")
        assert said.nick == "Robert"
        # the private message went to bob alone; carol heard nothing of it
        assert not carol.log.of(ev.PrivateReceived)
        assert not carol.log.of(ev.ErrorReported)
        # the rename and the chat are in one room order for everyone
        for log in (alice.log, bob.log, carol.log):
            events = log.snapshot()
            seqs = [e.seq for e in events if isinstance(e, ev.MemberRenamed | ev.MessageReceived)]
            assert seqs == sorted(seqs) and len(seqs) == 3


# --- 7. garbage at a live relay -------------------------------------------------------------------


JUNK_HOST = "127.0.0.2"


def garbage(rng: random.Random, real_hello: bytes) -> list[bytes]:
    """Datagrams that break protocol.md in many ways; none carries a real token."""
    forged = rng.randbytes(8)
    V = wire.PROTOCOL_VERSION
    wrong_shape: list[object] = [
        [],
        [V],
        [V, 6],
        {"version": V},
        "hello",
        42,
        None,
        [V, 6, forged, 0],  # DATA with nothing sealed (as an array of old)
        [V, 6, forged, -1, b"x" * 40],
        [V, 7, forged, 0, "not binary"],
        [V, 4, b"n" * 8, forged, b"h" * 80],  # an ACCEPT, at the relay
        [V, 99, forged],
        [V, 3, b"n" * 8, b"c" * 16, b"h" * 60, b"\0" * 1100],  # JOIN, forged cookie
        [V, 1, b"n" * 8, b""],  # HELLO without padding
        [1, 1, b"n" * 8, b"\0" * 1200],  # another protocol version
        [V, 6, forged, 0, 0, 0, 0, False, m.encode_message(m.Say("forged"))],  # in the clear
    ]
    out = [msgpack.packb(shape) for shape in wrong_shape]
    out += [
        b"",
        rng.randbytes(1),
        rng.randbytes(100),
        rng.randbytes(1200),
        rng.randbytes(1500),  # over MAX_DATAGRAM_SIZE
        b"\x00" * 60000,
        real_hello[: rng.randrange(1, len(real_hello))],  # truncated
        real_hello + b"\x00",  # trailing byte, oversize too
        wire.encode_hello(rng.randbytes(8)) + b"trailing",
        stray_session(
            forged,
            0,
            wire.DatagramType.DATA,
            session_bytes.data_fields(0, 0, 0, 0, [m.encode_message(m.Say("forged"))]),
        ),
        stray_session(forged, 5, wire.DatagramType.ACK),
        stray_session(forged, 7),
        stray_session(forged, 1, wire.DatagramType.PATH_RESPONSE, wire.path_fields(b"p" * 8)),
        wire.encode_reset(forged, rng.randbytes(16)),
    ]
    return out


@pytest.mark.timeout(40)
def test_garbage_at_a_live_relay_disturbs_nobody() -> None:
    per_member = 20
    with running_relay() as relay, members(relay.address, "alice", "bob", "carol") as room:
        rng = random.Random(7)
        stop = threading.Event()
        thrown = itertools.count()
        targets = [relay.address, *(member.client.local_address for member in room)]

        def throw() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                # Another loopback address: the relay limits handshakes per IP address, and
                # the flood's HELLOs must not use up the members' allowance.
                junk.bind((JUNK_HOST, 0))
                junk.settimeout(0)
                hello = wire.encode_hello(rng.randbytes(8))
                for _ in range(400):  # bounded, and ends early once the chat is over
                    if stop.is_set():
                        return
                    for payload in garbage(rng, hello):
                        with contextlib.suppress(OSError):  # too big, or a full buffer
                            junk.sendto(payload, rng.choice(targets))
                        next(thrown)
                    # the relay's answers (CHALLENGE, RESET, REJECT) are drained and ignored
                    for _ in range(64):
                        try:
                            junk.recv(65535)
                        except OSError:
                            break
                    stop.wait(0.005)  # pace the flood so that the chat gets through too

        thrower = threading.Thread(target=throw, daemon=True)
        thrower.start()
        try:
            assert wait_until(lambda: relay.stats.malformed > 50, 10)
            for i in range(per_member):
                for member in room:
                    member.client.say(f"{member.nick} {i}")
                # let more garbage in between rounds of chat
                before = relay.stats.malformed
                assert wait_until(lambda b=before: relay.stats.malformed > b + 5, 5)
            total = per_member * len(room)
            for member in room:
                assert member.log.wait_for(
                    lambda es: sum(isinstance(e, ev.MessageReceived) for e in es) >= total, 20
                )
        finally:
            stop.set()
            thrower.join(10)
        assert next(thrown) > 100
        assert_one_room_order([member.log for member in room], total)
        stats = relay.stats
        assert stats.malformed > 0 and stats.unknown_session > 0
        assert relay.members() == ["alice", "bob", "carol"]
        for member in room:
            assert not member.log.of(ev.ConnectionLost)
            assert not member.log.of(ev.MemberLeft)
            assert {e.nick for e in member.log.of(ev.MemberJoined)} <= {"bob", "carol"}
            assert member.client.wait_idle(5)
        # and the relay still serves newcomers
        with members(relay.address, "dave") as [dave]:
            assert dave.log.wait_event(ev.Welcomed, 1).members == ("alice", "bob", "carol", "dave")


# --- 9. a lossy network ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_lossy_paths_still_deliver_everything_once_in_one_order() -> None:
    per_member = 50
    nicks = ("alice", "bob", "carol")
    with running_relay() as relay:
        room = []
        try:
            for seed, nick in enumerate(nicks, start=1):
                impairment = ImpairmentConfig(loss=0.2, duplicate=0.05, reorder=0.05, seed=seed)
                room.append(join(relay.address, nick, impairment=impairment, timeout=10))
            for i in range(per_member):
                for member in room:
                    member.client.say(f"{member.nick} {i}")
            total = per_member * len(room)
            for member in room:
                assert member.log.wait_for(
                    lambda es: sum(isinstance(e, ev.MessageReceived) for e in es) >= total, 30
                ), (member.nick, len(member.log.chat()))
            assert_one_room_order([member.log for member in room], total)
            for member in room:
                assert not member.log.of(ev.MessageRefused)
                stats = member.client.stats()
                assert stats["retransmissions"] > 0  # the loss was real
        finally:
            for member in room:
                member.client.close()


def test_recorder_is_a_valid_event_sink() -> None:
    # the helper must accept every event type the client emits
    log = Recorder()
    log(ev.Closed("x"))
    assert log.of(ev.Closed) == [ev.Closed("x")]


class SlowSink(Recorder):
    """A consumer that takes a moment over each pending message, like a UI writing a line."""

    def __call__(self, event: ev.ClientEvent) -> None:
        if isinstance(event, ev.MessagePending):
            time.sleep(0.002)  # the cost of the write, not a synchronisation
        super().__call__(event)


@pytest.mark.timeout(30)
def test_each_message_is_pending_before_it_is_posted() -> None:
    # The user's thread emits MessagePending and the receiver thread the posted message: the
    # callback must get them in that order, or the UI keeps a "(sending)" line forever.
    with running_relay() as relay, members(relay.address, "bob") as [bob]:
        log = SlowSink()
        options = ClientOptions(nick="alice", server=relay.address, pace=False)
        alice = ChatClient(options, log).start()
        try:
            assert alice.wait_joined(5)
            for i in range(100):
                alice.say(f"n{i}")
            assert bob.log.wait_for(lambda es: len(es) >= 100, 15)
            assert alice.wait_idle(5)
        finally:
            alice.close()
        seen: set[int] = set()
        for event in log.snapshot():
            if isinstance(event, ev.MessagePending):
                seen.add(event.local_id)
            elif isinstance(event, ev.MessageReceived) and event.own:
                assert event.local_id in seen, f"{event.text} posted before it was pending"
