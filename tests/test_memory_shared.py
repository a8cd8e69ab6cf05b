"""The in-process shared room (udpchat.relay.memory_shared): one order, arrivals, nicknames,
moved sessions, a lost relay, a flushed store and a store out of reach."""

from __future__ import annotations

import random

import pytest

from udpchat import messages as m
from udpchat.relay.memory_shared import SharedRoom
from udpchat.relay.room_log import KeptMember
from udpchat.relay.shared_log import (
    EpochChanged,
    ForeignEvent,
    LogUnavailable,
    MemberLeftForRelay,
    PrivateArrived,
    RelayLost,
)

pytestmark = pytest.mark.unit


def chat(text: str) -> object:
    return lambda seq: m.ChatMessage(seq, 0, "x", text)


def joined(nick: str) -> object:
    return lambda seq: m.Joined(seq, 0, nick)


def room(history: int = 10) -> SharedRoom:
    return SharedRoom(history, random.Random(7).randbytes)


def test_one_order_and_arrivals_from_the_others_only() -> None:
    shared = room()
    a, b, c = shared.connect(), shared.connect(), shared.connect()
    assert len({a.relay_id, b.relay_id, c.relay_id}) == 3
    assert a.append(chat("1")).seq == 1  # type: ignore[arg-type]
    assert b.append(chat("2")).seq == 2  # type: ignore[arg-type]
    assert a.waiting
    assert [x.seq for x in a.arrived() if isinstance(x, ForeignEvent)] == [2]
    assert [x.seq for x in c.arrived() if isinstance(x, ForeignEvent)] == [1, 2]
    assert [x.seq for x in b.arrived() if isinstance(x, ForeignEvent)] == [1]
    assert not a.waiting and not b.waiting and not c.waiting
    assert a.replay(0) == c.replay(0) and len(a.replay(0)) == 2


def test_a_message_id_is_posted_once_across_relays() -> None:
    shared = room()
    a, b = shared.connect(), shared.connect()
    first = a.append(chat("hi"), b"id")  # type: ignore[arg-type]
    again = b.append(chat("hi"), b"id")  # type: ignore[arg-type]
    assert first.new and not again.new and again.seq == first.seq == shared.last_seq
    assert [x.seq for x in a.arrived() if isinstance(x, ForeignEvent)] == []


def test_the_history_is_capped() -> None:
    shared = room(history=3)
    a = shared.connect()
    for i in range(5):
        a.append(chat(str(i)))  # type: ignore[arg-type]
    assert a.first_seq == 3 and a.last_seq == 5 and len(a.replay(0)) == 3


def test_a_newcomers_history_and_a_catch_up_are_the_newest_of_what_is_kept() -> None:
    shared = room(history=6)
    a, b = shared.connect(), shared.connect()
    for seq in range(1, 9):  # b's chats at odd numbers, a's joins between; 3..8 kept
        if seq % 2:
            b.append(chat(str(seq)))  # type: ignore[arg-type]
        else:
            a.append(joined(f"u{seq}"))  # type: ignore[arg-type]
    texts = [m.decode_message(d).text for d in b.recent_chats(2)]  # type: ignore[union-attr]
    assert texts == ["5", "7"]
    assert [m.decode_message(d).text for d in a.recent_chats(9)] == ["3", "5", "7"]  # type: ignore[union-attr]
    assert [m.decode_message(d).seq for d in a.replay(6)] == [7, 8]  # type: ignore[union-attr]


def test_nicknames_are_unique_across_relays() -> None:
    shared = room()
    a, b = shared.connect(), shared.connect()
    assert a.claim_nick("Bob", b"t1")
    assert not b.claim_nick("BOB", b"t2")
    assert a.claim_nick("bob", b"t1")  # the holder may claim again
    b.release_nick("bob", b"t2")  # not the holder's token: nothing
    assert not b.claim_nick("bob", b"t2")
    a.release_nick("Bob", b"t1")
    assert b.claim_nick("bob", b"t2")


def test_a_moved_member_is_not_announced_by_a_lost_relay() -> None:
    shared = room()
    a, b, c = shared.connect(), shared.connect(), shared.connect()
    for token, nick in ((b"t1", "ann"), (b"t2", "bo")):
        assert a.claim_nick(nick, token)
        a.keep_member(KeptMember(token, nick, b"s"))
    found = b.find_member(b"t1")
    assert found == KeptMember(b"t1", "ann", b"s")
    b.move_member(b"t1", KeptMember(b"n1", "ann", b"s2"))
    assert a.arrived() == [MemberLeftForRelay(b"t1")]
    assert not c.claim_nick("ann", b"x")
    shared.lose(a.relay_id)
    assert b.arrived() == [RelayLost(a.relay_id, ("bo",))]
    assert c.arrived() == []  # exactly one relay announces them
    assert c.claim_nick("bo", b"x")  # free again
    assert sorted(c.roster()) == ["ann"]


def test_a_private_message_goes_to_the_holders_relay() -> None:
    shared = room()
    a, b = shared.connect(), shared.connect()
    assert b.claim_nick("Dee", b"t")
    assert a.send_private("dee", b"data")
    assert b.arrived() == [PrivateArrived("dee", b"data")]
    assert not a.send_private("nobody", b"data")


def test_a_flush_is_a_new_epoch_for_every_relay() -> None:
    shared = room()
    a, b = shared.connect(), shared.connect()
    a.append(chat("old"))  # type: ignore[arg-type]
    a.claim_nick("ann", b"t")
    epoch = a.epoch
    shared.flush()
    assert a.epoch != epoch and a.last_seq == 0 and a.replay(0) == []
    assert a.arrived() == [EpochChanged(a.epoch)] and b.arrived() == [EpochChanged(a.epoch)]
    assert b.claim_nick("ann", b"u")


def test_an_unreachable_store_changes_nothing() -> None:
    shared = room()
    a = shared.connect()
    shared.available = False
    with pytest.raises(LogUnavailable):
        a.append(chat("lost"))  # type: ignore[arg-type]
    with pytest.raises(LogUnavailable):
        a.claim_nick("ann", b"t")
    shared.available = True
    assert a.last_seq == 0 and a.claim_nick("ann", b"t")


def test_a_death_not_yet_announced_passes_on_with_the_announcer() -> None:
    shared = room()
    a, b, c = shared.connect(), shared.connect(), shared.connect()
    assert b.claim_nick("bo", b"t")
    b.keep_member(KeptMember(b"t", "bo", b"s"))
    shared.lose(b.relay_id)  # a is told to announce bo, but dies before it does
    shared.lose(a.relay_id)
    assert c.arrived() == [RelayLost(b.relay_id, ("bo",)), RelayLost(a.relay_id, ())]
