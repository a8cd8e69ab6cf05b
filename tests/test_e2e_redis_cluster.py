"""Three relays on one Redis room, with real clients on 127.0.0.1 (protocol.md 6.8).

One room order for members of every relay, /who listing the whole room, private messages
across relays, a relay process killed with SIGKILL (its members announced as left exactly
once, by one survivor), and Redis stopped mid-chat (posts refused with the answer, the room
serving again once Redis is back).
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator

import pytest

from tests.e2e_support import (
    Member,
    Process,
    assert_one_room_order,
    join,
    relay_config,
    wait_until,
)
from tests.redis_support import RedisServer
from udpchat import events as ev
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.stores import parse_store
from udpchat.transport import Address

pytestmark = pytest.mark.e2e

pytest.importorskip("redis", reason="the redis package is missing")

WAIT = 10.0


@contextlib.contextmanager
def relays(url: str, room: str, count: int) -> Iterator[list[RelayServer]]:
    started: list[RelayServer] = []
    try:
        for _ in range(count):
            options = RelayOptions(port=0, config=relay_config(), store=parse_store(url, room))
            started.append(RelayServer(options).start())
        yield started
    finally:
        for relay in started:
            relay.stop(goodbye=False)


@contextlib.contextmanager
def joined(*where: tuple[Address, str]) -> Iterator[list[Member]]:
    members: list[Member] = []
    try:
        for address, nick in where:
            members.append(join(address, nick))
        yield members
    finally:
        for member in members:
            member.client.close()


@contextlib.contextmanager
def chatting(url: str, room: str) -> Iterator[list[Member]]:
    """ann on one relay and bob on another of one room, after a first line went across."""
    with relays(url, room, 2) as (a, b), joined((a.address, "ann"), (b.address, "bob")) as pair:
        ann, bob = pair
        assert wait_until(lambda: len(ann.client.members) == 2, WAIT)
        ann.client.say("before")
        bob.log.wait_event(ev.MessageReceived, WAIT, lambda e: e.text == "before")
        yield pair


@pytest.mark.timeout(60)
def test_three_relays_are_one_room(redis_server: RedisServer, redis_room: str) -> None:
    with relays(redis_server.url, redis_room, 3) as (a, b, c), joined(
        (a.address, "ann"), (b.address, "bob"), (c.address, "cat")
    ) as room:
        ann, bob, cat = room
        for member in room:  # everyone sees the whole room, whichever relay it is on
            assert wait_until(
                lambda m_=member: set(m_.client.members) == {"ann", "bob", "cat"}, WAIT
            ), member.client.members
        bob.client.who()
        assert bob.log.wait_event(ev.MembersListed, WAIT).members == ("ann", "bob", "cat")
        # A nickname held on one relay is taken on the others, whatever its case.
        late = join(c.address, "ANN", wait=False)
        try:
            assert late.log.wait_event(ev.JoinRejected, WAIT)
        finally:
            late.client.close()
        for n in range(20):
            for member in room:
                member.client.say(f"{member.nick} {n}")
        assert all(
            wait_until(lambda m_=member: len(m_.log.chat(history=False)) == 60, WAIT)
            for member in room
        )
        assert_one_room_order([member.log for member in room], 60)
        ann.client.private("Cat", "psst")
        got = cat.log.wait_event(ev.PrivateReceived, WAIT)
        assert (got.sender, got.to, got.text) == ("ann", "cat", "psst")
        assert not bob.log.of(ev.PrivateReceived)
        cat.client.quit("bye")
        for member in (ann, bob):
            left = member.log.wait_event(ev.MemberLeft, WAIT)
            assert (left.nick, left.reason) == ("cat", "quit")


def _relay_process(url: str, room: str) -> tuple[Process, Address]:
    process = Process(
        "relay", "--port", "0", "--store", url, "--room", room, "--flood-burst", "1000",
        "--flood-rate", "1000",
    )
    line = process.wait_line(lambda text: "listening on" in text, WAIT, stderr=True)
    found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert found is not None, line
    return process, ("127.0.0.1", int(found.group(1)))


@pytest.mark.timeout(90)
def test_a_killed_relay_s_members_leave_exactly_once(
    redis_server: RedisServer, redis_room: str
) -> None:
    url = redis_server.url
    processes: list[Process] = []
    try:
        for _ in range(3):
            processes.append(_relay_process(url, redis_room)[0])
        addresses = [_address(process) for process in processes]
        with joined(
            (addresses[0], "ann"), (addresses[1], "bob"), (addresses[2], "cat"),
            (addresses[2], "dan"),
        ) as (ann, bob, cat, dan):
            for member in (ann, bob):
                assert wait_until(lambda m_=member: len(m_.client.members) == 4, WAIT)
            cat.client.close()  # the clients go silent with their relay: no fail-over here
            dan.client.close()
            processes[2].kill()
            # Its key expires (the member timeout), one survivor announces cat and dan as left.
            for member in (ann, bob):
                assert wait_until(lambda m_=member: len(m_.client.members) == 2, 30)
            ann.client.say("still here")
            bob.log.wait_event(ev.MessageReceived, WAIT, lambda e: e.text == "still here")
            for member in (ann, bob):
                gone = [
                    nick
                    for event in member.log.snapshot()
                    for nick in _left(event)
                ]
                assert sorted(gone) == ["cat", "dan"], gone  # each once, nobody else
            lines = processes[0].stderr + processes[1].stderr
            assert sum("was lost" in line for line in lines) == 1, lines
    finally:
        for process in processes:
            process.cleanup()


def _address(process: Process) -> Address:
    line = process.wait_line(lambda text: "listening on" in text, WAIT, stderr=True)
    found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert found is not None, line
    return ("127.0.0.1", int(found.group(1)))


def _left(event: ev.ClientEvent) -> tuple[str, ...]:
    if isinstance(event, ev.MemberLeft):
        return (event.nick,)
    if isinstance(event, ev.MembersLeft):
        return event.nicks
    return ()


@pytest.mark.timeout(60)
def test_redis_stopped_refuses_posts_and_the_room_serves_again(
    redis_server: RedisServer, redis_room: str
) -> None:
    with chatting(redis_server.url, redis_room) as (ann, bob):
        redis_server.stop()
        try:
            ann.client.say("while away")
            refused = ann.log.wait_event(ev.MessageRefused, WAIT)
            assert "store" in refused.reason, refused
        finally:
            redis_server.start()  # empty: a new epoch, members rejoin
        assert wait_until(lambda: ann.client.state.name == "JOINED"
                          and bob.client.state.name == "JOINED"
                          and ann.log.of(ev.Welcomed)[-1] is not ann.log.of(ev.Welcomed)[0],
                          20)
        assert wait_until(lambda: set(ann.client.members) == {"ann", "bob"}, WAIT)
        ann.client.say("after")
        got = bob.log.wait_event(ev.MessageReceived, WAIT, lambda e: e.text == "after")
        assert got.nick == "ann"


@pytest.mark.timeout(60)
def test_redis_paused_mid_chat_loses_nothing_and_keeps_the_room(
    redis_server: RedisServer, redis_room: str
) -> None:
    with chatting(redis_server.url, redis_room) as (ann, bob):
        process = redis_server.process
        assert process is not None
        process.send_signal(signal.SIGSTOP)  # Redis stops answering (shorter than the ttl)
        try:
            ann.client.say("while paused")
            refused = ann.log.wait_event(ev.MessageRefused, WAIT)
            assert "store" in refused.reason, refused
        finally:
            process.send_signal(signal.SIGCONT)

        def posted_again() -> bool:
            ann.client.say("after")
            return bool(bob.log.wait_for(
                lambda events: any(getattr(e, "text", "") == "after" for e in events), 1.0
            ))

        assert wait_until(posted_again, 15, interval=0.5)
        # The same room: nobody rejoined, and everyone saw one order without a gap.
        for member in (ann, bob):
            assert len(member.log.of(ev.Welcomed)) == 1
            seqs = [e.seq for e in member.log.chat(history=False)]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        texts = [e.text for e in bob.log.chat(history=False)]
        assert "while paused" not in texts and texts[0] == "before"
