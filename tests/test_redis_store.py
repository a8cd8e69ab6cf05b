"""The Redis room store against a real redis-server: the SharedLog contract (protocol.md 6.8).

Several ``RedisSharedLog`` views of one room, as several relays have them: one order,
arrivals, resent posts, room-wide nicknames, moved sessions, private messages, a lost relay,
Redis going away and coming back, and a flushed Redis (a new epoch).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e_support import wait_until
from tests.redis_support import PERIOD, TTL, WAIT, RedisServer, Relay
from udpchat import messages as m
from udpchat.relay.room_log import KeptMember
from udpchat.relay.shared_log import (
    EpochChanged,
    ForeignEvent,
    LogUnavailable,
    MemberLeftForRelay,
    PrivateArrived,
    RelayLost,
)

pytestmark = pytest.mark.e2e

redis_store = pytest.importorskip("udpchat.stores.redis", reason="the redis package is missing")
RedisSharedLog = redis_store.RedisSharedLog

def say(nick: str, text: str) -> Callable[[int], m.RoomEvent]:
    return lambda seq: m.ChatMessage(seq, 1, nick, text)


def joined(nick: str) -> Callable[[int], m.RoomEvent]:
    return lambda seq: m.Joined(seq, 1, nick)


def foreign(items: list[Any]) -> list[ForeignEvent]:
    return [item for item in items if isinstance(item, ForeignEvent)]


def test_a_turns_posts_are_appended_together_each_as_alone(relays: Any) -> None:
    a, b = relays(threads=False), relays()
    b.log.append(say("bob", "first"))
    msgid = secrets.token_bytes(8)
    results = a.log.append_many(
        [(say("ann", "one"), msgid), (say("ann", "two"), b""), (say("ann", "one"), msgid)]
    )
    one, two, again = results
    assert not isinstance(one, LogUnavailable) and not isinstance(two, LogUnavailable)
    assert not isinstance(again, LogUnavailable)
    assert (one.seq, two.seq, one.new, two.new) == (2, 3, True, True)
    # the resent one is recognised by its message id, within the same exchange
    assert (again.seq, again.new) == (2, False)
    assert m.decode_message(two.data) == m.ChatMessage(3, 1, "ann", "two")
    # b's event (numbered before them) came with the answers, before the first of them
    assert [e.seq for e in foreign(a.log.arrived())] == [1]
    assert a.log.last_seq == 3 and a.log.replay(0)[-2:] == [one.data, two.data]
    assert a.log.append_many([]) == []
    assert b.wait_for(lambda taken: len(foreign(taken)) == 2)
    assert [e.event.text for e in foreign(b.taken)] == ["one", "two"]


def test_appends_together_after_redis_lost_its_scripts(
    redis_server: RedisServer, relays: Any
) -> None:
    a = relays(threads=False)
    a.log.append(say("ann", "one"))
    redis_server.client().script_flush()
    results = a.log.append_many([(say("ann", "two"), b""), (say("ann", "three"), b"")])
    assert [getattr(r, "seq", None) for r in results] == [2, 3]


def test_one_order_and_every_foreign_event_before_an_append_returns(relays: Any) -> None:
    a, b = relays(), relays()
    first = a.log.append(say("ann", "one"))
    second = a.log.append(say("ann", "two"))
    # b appends without its reader having run: the append brings what came before it.
    mine = b.log.append(say("bob", "three"))
    assert (first.seq, second.seq, mine.seq) == (1, 2, 3)
    got = foreign(b.log.arrived())
    assert [(e.seq, e.event) for e in got] == [
        (1, m.ChatMessage(1, 1, "ann", "one")),
        (2, m.ChatMessage(2, 1, "ann", "two")),
    ]
    assert got[0].origin == a.log.relay_id
    assert m.decode_message(got[1].data) == m.ChatMessage(2, 1, "ann", "two")
    # a's reader brings b's event, once, and never a's own.
    assert a.wait_for(lambda taken: len(foreign(taken)) == 1)
    assert [e.event for e in foreign(a.taken)] == [m.ChatMessage(3, 1, "bob", "three")]
    assert a.woken.is_set()
    time.sleep(3 * PERIOD)  # nothing more arrives (each event exactly once)
    assert foreign(a.take()) == [] and foreign(b.take()) == []
    assert b.log.last_seq == 3 and a.log.last_seq == 3
    assert b.log.replay(1) == [got[1].data, mine.data]


def test_concurrent_appends_from_three_relays_give_one_gapless_order(relays: Any) -> None:
    views = [relays() for _ in range(3)]
    seqs: list[list[int]] = [[] for _ in views]

    def post(index: int) -> None:
        for n in range(40):
            seqs[index].append(views[index].log.append(say(f"n{index}", str(n))).seq)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(s for own in seqs for s in own) == list(range(1, 121))
    for index, view in enumerate(views):
        assert view.wait_for(lambda taken: len(foreign(taken)) == 80)
        got = [e.seq for e in foreign(view.taken)]
        assert got == sorted(got) and set(got) == set(range(1, 121)) - set(seqs[index])


def test_a_resent_post_is_recognised_across_relays(relays: Any) -> None:
    a, b = relays(), relays()
    posted = a.log.append(say("ann", "hello"), msgid=b"id-1")
    again = b.log.append(say("ann", "hello"), msgid=b"id-1")
    assert posted.new and not again.new
    assert again.seq == posted.seq and again.data == posted.data and again.chat
    assert b.log.append(say("bob", "next")).seq == posted.seq + 1


def test_nicknames_are_unique_across_relays_and_case(relays: Any) -> None:
    a, b = relays(), relays()
    ta, tb = secrets.token_bytes(8), secrets.token_bytes(8)
    assert a.log.claim_nick("Bob", ta)
    assert a.log.claim_nick("Bob", ta)  # again by its holder
    assert not b.log.claim_nick("BOB", tb)
    a.log.release_nick("Bob", tb)  # not its holder: nothing changes
    assert not b.log.claim_nick("bob", tb)
    a.log.release_nick("Bob", ta)
    assert b.log.claim_nick("bob", tb)
    time.sleep(TTL * 2)  # claims outlive their ttl while the housekeeper refreshes them
    assert not a.log.claim_nick("Bob", ta)


def test_find_and_move_a_member_to_another_relay(relays: Any) -> None:
    a, b = relays(), relays()
    old = KeptMember(secrets.token_bytes(8), "ann", secrets.token_bytes(16))
    assert a.log.claim_nick("ann", old.token)
    a.log.keep_member(old)
    assert b.log.find_member(old.token) == old
    assert b.log.roster() == [] and relays().log.roster() == ["ann"]
    moved = KeptMember(secrets.token_bytes(8), "ann", old.resume_secret)
    b.log.move_member(old.token, moved)
    assert a.wait_for(lambda taken: MemberLeftForRelay(old.token) in taken)
    assert b.log.find_member(old.token) is None and b.log.find_member(moved.token) == moved
    assert b.log.kept_members() == [moved] and a.log.kept_members() == []
    # The nickname is the new session's: a's old session cannot let it go.
    a.log.release_nick("ann", old.token)
    assert not a.log.claim_nick("ann", secrets.token_bytes(8))
    a.log.forget_member(old.token)  # a forgets its session: the moved one stays
    assert relays().log.roster() == ["ann"]


def test_a_private_message_reaches_the_relay_of_its_recipient(relays: Any) -> None:
    a, b = relays(), relays()
    assert b.log.claim_nick("bob", secrets.token_bytes(8))
    data = m.encode_message(m.Private(1, "ann", "Bob", "psst"))
    assert a.log.send_private("Bob", data)
    assert b.wait_for(lambda taken: PrivateArrived("Bob", data) in taken)
    assert not a.log.send_private("carol", data)  # nobody holds it
    assert not b.log.send_private("bob", data)  # b's own member: found without the store


def test_a_dead_relay_is_announced_once_by_one_survivor(redis_server: RedisServer,
                                                        relays: Any) -> None:
    a, b, c = relays(), relays(), relays()
    stay = KeptMember(secrets.token_bytes(8), "stay", secrets.token_bytes(16))
    goes = KeptMember(secrets.token_bytes(8), "goes", secrets.token_bytes(16))
    for member in (stay, goes):
        assert c.log.claim_nick(member.nick, member.token)
        c.log.keep_member(member)
    a.log.move_member(goes.token, KeptMember(secrets.token_bytes(8), "goes", goes.resume_secret))
    # c dies: its threads stop and its key is left to expire (a kill -9).
    c.log.stopping.set()
    lost = c.log.relay_id

    def told(view: Relay) -> list[RelayLost]:
        return [item for item in view.taken if isinstance(item, RelayLost)]

    assert wait_until(lambda: bool(a.take() or True) and bool(b.take() or True)
                      and len(told(a)) + len(told(b)) >= 1, WAIT)
    time.sleep(TTL)  # long enough for a second announcement, were there one
    a.take(), b.take()
    assert told(a) + told(b) == [RelayLost(lost, ("stay",))]
    assert a.log.find_member(stay.token) is None
    assert b.log.claim_nick("stay", secrets.token_bytes(8))  # its claim is free at once


def test_redis_away_refuses_then_recovers(redis_server: RedisServer, relays: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    a = relays()
    token = secrets.token_bytes(8)
    assert a.log.claim_nick("ann", token)
    a.log.append(say("ann", "before"))
    redis_server.stop()
    with caplog.at_level("WARNING", logger="udpchat.relay.redis"):
        for _ in range(3):
            with pytest.raises(LogUnavailable):
                a.log.append(say("ann", "while away"))
        with pytest.raises(LogUnavailable):
            a.log.claim_nick("bob", token)
        assert a.log.last_seq == 1
        redis_server.start()  # empty: the room's history is gone
        assert wait_until(lambda: not a.log.health.down, WAIT)
        assert a.wait_for(lambda taken: any(isinstance(i, EpochChanged) for i in taken))
        logged = a.log.append(say("ann", "after"))
    away = [r for r in caplog.records if "posts are refused" in r.getMessage()]
    back = [r for r in caplog.records if r.getMessage().endswith("0 is back")]
    assert len(away) == 1 and len(back) == 1
    assert logged.seq == 1 and a.log.epoch == a.taken[-1].epoch
    # A new epoch: the relay's sessions are reset (they rejoin), their claims not kept.
    assert a.log.kept_members() == []
    assert relays().log.claim_nick("ANN", secrets.token_bytes(8))


def test_a_relay_presumed_dead_takes_its_claims_and_members_back(
    redis_server: RedisServer, relays: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = relays()
    member = KeptMember(secrets.token_bytes(8), "ann", secrets.token_bytes(16))
    assert a.log.claim_nick("ann", member.token)
    a.log.keep_member(member)
    client: Any = redis_server.client()
    keys = a.log.keys
    with caplog.at_level("WARNING", logger="udpchat.relay.redis"):
        # What an outage longer than the ttl leaves: the relay's key, claim and member gone.
        client.delete(keys.relay(a.log.relay_hex), keys.nick("ann"))
        client.hdel(keys.members, member.token.hex())
        b = relays()
        assert wait_until(lambda: b.log.find_member(member.token) == member, WAIT)
    assert not b.log.claim_nick("ann", secrets.token_bytes(8))
    assert any("longer than its ttl" in r.getMessage() for r in caplog.records)


def test_a_flushed_redis_is_a_new_epoch_for_every_relay(redis_server: RedisServer,
                                                       relays: Any) -> None:
    a, b = relays(threads=False), relays()  # a has no housekeeper: its append notices
    a.log.append(say("ann", "one"))
    before = a.log.epoch
    assert b.log.epoch == before
    client: Any = redis_server.client()
    client.flushall()
    # a notices at its next append (which appends nothing: the relay restarts its room
    # first); b within a housekeeping period, without appending.
    with pytest.raises(LogUnavailable):
        a.log.append(say("ann", "two"))
    assert a.log.epoch != before and a.log.last_seq == 0
    assert a.take() == [EpochChanged(a.log.epoch)]
    assert a.log.append(say("ann", "two")).seq == 1
    assert b.wait_for(lambda taken: EpochChanged(a.log.epoch) in taken)
    assert b.wait_for(lambda taken: [e.seq for e in foreign(taken)] == [1])
    assert b.log.append(joined("bob")).seq == 2


def test_replay_and_history_after_a_relay_opens(relays: Any) -> None:
    a = relays(history=3)
    for n in range(5):
        a.log.append(say("ann", str(n)))
    a.log.append(joined("bob"))
    late = relays(history=3)
    assert late.log.last_seq == 6 and late.log.first_seq == 4
    replayed: list[Any] = [m.decode_message(data) for data in late.log.replay(4)]
    assert [event.seq for event in replayed] == [5, 6]
    chats: list[Any] = [m.decode_message(data) for data in late.log.recent_chats(5)]
    assert [event.text for event in chats] == ["3", "4"]
    newest: list[Any] = [m.decode_message(data) for data in late.log.recent_chats(1)]
    assert [event.text for event in newest] == ["4"]  # fewer asked for than kept


def test_an_append_given_up_on_but_run_by_redis_reaches_its_own_relay_too(
    redis_server: RedisServer, relays: Any
) -> None:
    a = relays()
    mine = a.log.append(say("ann", "answered"))
    # An append whose answer did not come in time, which Redis ran all the same: the core
    # never had it from ``append``, so the reader brings it like another relay's.
    with a.log.view.lock:
        a.log.view.abandon(b"999")
    client: Any = redis_server.client()
    keys = a.log.keys
    seq = client.incr(keys.seq)
    payload = m.encode_message(m.ChatMessage(0, 1, "ann", "late"))
    fields = {"o": a.log.relay_hex, "n": "999", "m": "", "e": payload}
    client.xadd(keys.log, fields, id=f"{seq}-0")
    assert a.wait_for(lambda taken: len(foreign(taken)) == 1)
    late = foreign(a.taken)[0]
    assert (late.seq, late.event, late.origin) == (mine.seq + 1, m.ChatMessage(
        mine.seq + 1, 1, "ann", "late"), a.log.relay_id)
    assert a.log.view.abandoned == {}


def test_a_survivor_that_dies_before_announcing_passes_the_announcement_on(
    redis_server: RedisServer, relays: Any
) -> None:
    a, c = relays(), relays()
    member = KeptMember(secrets.token_bytes(8), "cat", secrets.token_bytes(16))
    assert c.log.claim_nick("cat", member.token)
    c.log.keep_member(member)
    c.log.stopping.set()  # c dies; a (the only survivor) is given its members ...
    assert wait_until(lambda: bool(a.log.waiting), WAIT)
    a.log.stopping.set()  # ... and dies before its core took them
    b = relays()  # b notices both: it announces c's member, and a's none
    assert b.wait_for(lambda taken: len([i for i in taken if isinstance(i, RelayLost)]) >= 2)
    time.sleep(TTL)
    b.take()
    lost = {item.relay: item.nicks for item in b.taken if isinstance(item, RelayLost)}
    assert lost == {c.log.relay_id: ("cat",), a.log.relay_id: ()}
    client: Any = redis_server.client()
    assert wait_until(lambda: not client.exists(b.log.keys.lost(b.log.relay_hex)), WAIT)


def test_a_move_says_whether_the_old_record_was_still_there(relays: Any) -> None:
    """A resume read the record of a member of a relay that died; the relay that noticed
    the death removed it before the move: the move says so (and the member is kept here),
    so that the relay announces it anew; a move of a record still there says True."""
    a, b, c = relays(), relays(), relays()
    kept = KeptMember(secrets.token_bytes(8), "mo", secrets.token_bytes(16))
    stays = KeptMember(secrets.token_bytes(8), "al", secrets.token_bytes(16))
    for member in (kept, stays):
        assert c.log.claim_nick(member.nick, member.token)
        c.log.keep_member(member)
    assert b.log.find_member(kept.token) == kept  # the resume reads it...
    c.log.stopping.set()  # ...c dies, and a survivor takes its members out
    assert wait_until(lambda: bool(a.take() or True) and bool(b.take() or True) and any(
        isinstance(item, RelayLost) for item in (*a.taken, *b.taken)), WAIT)
    moved = KeptMember(secrets.token_bytes(8), "mo", kept.resume_secret)
    assert b.log.move_member(kept.token, moved) is False
    assert b.log.find_member(moved.token) == moved and b.log.kept_members() == [moved]
    assert not a.log.claim_nick("mo", secrets.token_bytes(8))  # the new session holds it
    again = KeptMember(secrets.token_bytes(8), "mo", kept.resume_secret)
    assert a.log.move_member(moved.token, again) is True


def test_an_old_claim_refreshed_after_a_move_goes_when_the_old_relay_lets_it_go(
    redis_server: RedisServer, redis_room: str, relays: Any
) -> None:
    """A resume under another nickname: the old relay's housekeeping may set the old claim
    again before it reads the move from its inbox; the relay lets it go when it learns of the
    move (as its core does), and its housekeeping does not set it again."""
    a, b = relays(), relays()
    old = KeptMember(secrets.token_bytes(8), "mo", secrets.token_bytes(16))
    assert a.log.claim_nick("mo", old.token)
    a.log.keep_member(old)
    moved = KeptMember(secrets.token_bytes(8), "mona", old.resume_secret)
    assert b.log.claim_nick("mona", moved.token)
    assert b.log.move_member(old.token, moved) is True
    client: Any = redis_server.client()
    key = f"udpchat:{{{redis_room}}}:nick:mo"
    client.set(key, f"{a.log.relay_hex} {old.token.hex()}", px=int(TTL * 1000))  # refreshed
    assert a.wait_for(lambda taken: MemberLeftForRelay(old.token) in taken)
    a.log.release_nick("mo", old.token)  # the core, taking MemberLeftForRelay
    time.sleep(PERIOD * 3)  # housekeeping periods: the claim is not set again
    assert client.get(key) is None
    assert relays().log.claim_nick("mo", secrets.token_bytes(8))


def test_appends_together_while_redis_is_away_are_each_refused(
    redis_server: RedisServer, relays: Any
) -> None:
    a = relays()
    a.log.append(say("ann", "one"))
    redis_server.stop()
    try:
        for _ in range(2):  # the first finds it out, the second knows it already
            results = a.log.append_many([(say("ann", "two"), b""), (say("ann", "3"), b"")])
            assert len(results) == 2
            assert all(isinstance(r, LogUnavailable) for r in results)
    finally:
        redis_server.start()
