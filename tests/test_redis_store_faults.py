"""The Redis room store when Redis misbehaves, against a real redis-server (docs/scaling.md,
Failures): a seq that went back under the same epoch, a seq key gone while the stream stays,
a script Redis refuses, a malformed inbox entry, a reader that fails each time, credentials
in the URL's query, a lost housekeeping reply, and an epoch adopted during an append.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from typing import Any

import pytest

from tests.e2e_support import wait_until
from tests.redis_support import PERIOD, TTL, WAIT, RedisServer
from tests.test_redis_store import foreign, say
from udpchat import faults
from udpchat.relay.room_log import KeptMember
from udpchat.relay.shared_log import EpochChanged, LogUnavailable, PrivateArrived, RelayLost
from udpchat.stores.errors import StoreError

pytestmark = pytest.mark.e2e

redis_store = pytest.importorskip("udpchat.stores.redis", reason="the redis package is missing")
RedisSharedLog = redis_store.RedisSharedLog
runtime = pytest.importorskip("udpchat.stores.redis_runtime")




def restore_older(client: Any, keys: Any, seq: int) -> None:
    """What a restart from an AOF or RDB that lost the last writes leaves: the seq and the
    stream as they were at ``seq``, under the same epoch."""
    kept = client.xrange(keys.log, "-", f"{seq}-0")
    client.delete(keys.log)
    for entry_id, fields in kept:
        client.xadd(keys.log, fields, id=entry_id)
    client.set(keys.seq, seq)


def test_a_seq_gone_back_under_the_same_epoch_starts_a_new_epoch_at_an_append(
    redis_server: RedisServer, relays: Any
) -> None:
    a = relays(threads=False)
    for n in range(3):
        a.log.append(say("ann", str(n)))
    before = a.log.epoch
    restore_older(redis_server.client(), a.log.keys, 1)
    # Numbering on from 1 would give 2 and 3 again: the room starts afresh instead.
    with pytest.raises(LogUnavailable):
        a.log.append(say("ann", "after"))
    assert a.log.epoch != before and a.take() == [EpochChanged(a.log.epoch)]
    assert a.log.append(say("ann", "after")).seq == 1


def test_a_seq_gone_back_is_noticed_by_the_housekeeper_without_an_append(
    redis_server: RedisServer, relays: Any
) -> None:
    a, b = relays(threads=False), relays()
    for n in range(3):
        a.log.append(say("ann", str(n)))
    assert b.wait_for(lambda taken: len(foreign(taken)) == 3)
    before = b.log.epoch
    restore_older(redis_server.client(), a.log.keys, 2)
    assert b.wait_for(lambda taken: any(isinstance(i, EpochChanged) for i in taken))
    assert b.log.epoch != before and b.log.last_seq == 0


def test_a_missing_seq_key_under_a_stream_starts_a_new_epoch_not_an_outage(
    redis_server: RedisServer, relays: Any
) -> None:
    a = relays(threads=False)
    a.log.append(say("ann", "one"))
    a.log.append(say("ann", "two"))
    before = a.log.epoch
    client: Any = redis_server.client()
    client.delete(a.log.keys.seq)  # evicted, or an operator's DEL
    with pytest.raises(LogUnavailable):
        a.log.append(say("ann", "three"))
    assert a.log.epoch != before and not a.log.health.down
    a.take()
    assert [a.log.append(say("ann", str(n))).seq for n in range(2)] == [1, 2]


def test_a_script_error_is_counted_and_logged_once_not_an_outage(
    redis_server: RedisServer, relays: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = relays(threads=False)
    a.log.append(say("ann", "one"))
    client: Any = redis_server.client()
    client.delete(a.log.keys.log)
    client.set(a.log.keys.log, "not a stream")  # every append's script fails now
    with caplog.at_level("WARNING", logger="udpchat.relay.redis"):
        for _ in range(3):
            with pytest.raises(LogUnavailable):
                a.log.append(say("ann", "refused"))
    assert not a.log.health.down and a.log.health.errors == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "refused a command" in errors[0].getMessage()
    assert not [r for r in caplog.records if "out of reach" in r.getMessage()]


def test_a_malformed_inbox_entry_is_skipped_and_counted(
    redis_server: RedisServer, relays: Any
) -> None:
    a, b = relays(), relays()
    assert b.log.claim_nick("bob", secrets.token_bytes(8))
    client: Any = redis_server.client()
    client.xadd(b.log.keys.inbox(b.log.relay_hex), {"k": "m", "a": "not hex", "d": ""})
    assert a.log.send_private("bob", b"psst")
    assert b.wait_for(lambda taken: PrivateArrived("bob", b"psst") in taken)
    assert b.log.view.malformed == 1


def test_a_reader_that_fails_each_time_waits_a_period_between_tries(
    relays: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(faults.STRICT_ENV)  # the reader logs and goes on, as in production
    a = relays(threads=False)
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return "neither a list nor a map"

    monkeypatch.setattr(a.log.reader_line, "call", broken)
    a.log.start(a.woken.set)
    assert wait_until(lambda: len(calls) >= 2, WAIT)
    a.log.stopping.wait(5 * PERIOD)
    assert len(calls) <= 10  # about one a period, not a busy loop
    a.log.close()
    assert {fault.kind for fault in faults.take()} == {"TypeError"}


def test_resp3_in_the_url_is_refused_in_one_line(redis_server: RedisServer) -> None:
    with pytest.raises(StoreError, match="RESP3") as raised:
        RedisSharedLog(redis_server.url + "?protocol=3", "room", 10, secrets.token_bytes)
    assert "\n" not in str(raised.value)


def test_credentials_in_the_query_are_not_printed(redis_server: RedisServer) -> None:
    redacted = runtime.redacted
    assert redacted("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert "s3cret" not in redacted("redis://h/0?username=me&PASSWORD=s3cret")
    assert redacted("redis://u:s3cret@h:6380/0") == "redis://u:***@h:6380/0"
    assert redacted("redis://h/0?db=1") == "redis://h/0?db=1"
    # The start line and the outage warnings name the URL without the secret.
    store = RedisSharedLog(
        redis_server.url + "?password=s3cret", "room", 10, secrets.token_bytes
    )
    try:
        assert "password=***" in store.describe() and "s3cret" not in store.describe()
        assert "s3cret" not in str(store.health.failed(runtime.redis.ConnectionError("x")))
    finally:
        store.close()


def test_a_lost_housekeeping_reply_loses_no_lost_relay(
    redis_server: RedisServer, relays: Any
) -> None:
    a, c = relays(threads=False), relays(threads=False)
    member = KeptMember(secrets.token_bytes(8), "cat", secrets.token_bytes(16))
    assert c.log.claim_nick("cat", member.token)
    c.log.keep_member(member)
    client: Any = redis_server.client()
    a.log.housekeeper.run_once()  # an answered round: the next one judges the others
    client.delete(c.log.keys.relay(c.log.relay_hex))  # c died
    script = a.log.housekeep_script

    def answer_lost(**kwargs: Any) -> Any:
        script(**kwargs)
        raise runtime.redis.ConnectionError("the reply was lost")

    a.log.housekeep_script = answer_lost
    with pytest.raises(runtime.redis.ConnectionError):
        a.log.housekeeper.run_once()
    assert client.hexists(a.log.keys.lost(a.log.relay_hex), c.log.relay_hex)  # a took c
    a.log.housekeep_script = script
    a.log.housekeeper.run_once()
    a.log.housekeeper.run_once()  # still owed, but queued already: once
    assert a.take() == [RelayLost(c.log.relay_id, ("cat",))]
    a.log.housekeeper.run_once()  # the core has it: cleared
    assert not client.exists(a.log.keys.lost(a.log.relay_hex))
    a.log.housekeeper.run_once()
    assert a.take() == []


def test_an_epoch_adopted_during_an_append_is_not_undone(relays: Any) -> None:
    a = relays(threads=False)
    a.log.append(say("ann", "one"))
    script = a.log._append
    newer = secrets.token_bytes(8)

    def housekeeper_meanwhile(**kwargs: Any) -> Any:
        answer = script(**kwargs)
        with a.log.view.lock:  # the housekeeper adopts another epoch before the lock
            a.log.view.adopt(newer)
        return answer

    a.log._append = housekeeper_meanwhile
    with pytest.raises(LogUnavailable):
        a.log.append(say("ann", "two"))
    assert a.log.epoch == newer and a.take() == [EpochChanged(newer)]


assert TTL > PERIOD  # the imported timings are the store tests' own


def test_a_timed_out_append_the_reader_saw_first_reaches_its_own_relay_in_order(
    relays: Any,
) -> None:
    a, b = relays(), relays(threads=False)
    script = a.log._append

    def answer_lost(**kwargs: Any) -> Any:
        answer = script(**kwargs)
        # The reader reads the entry, then another relay's after it, before the answer
        # (which never comes) would have.
        assert wait_until(lambda: any(a.log.view.in_flight.values()), WAIT)
        b.log.append(say("bob", "after"))
        assert wait_until(lambda: a.log.waiting, WAIT)
        del answer
        raise runtime.redis.TimeoutError("the answer was lost")

    a.log._append = answer_lost
    with pytest.raises(LogUnavailable):
        a.log.append(say("ann", "lost answer"))
    got = foreign(a.take())
    assert [(e.seq, e.origin, e.event.text) for e in got] == [
        (1, a.log.relay_id, "lost answer"), (2, b.log.relay_id, "after"),
    ]
    assert a.log.view.in_flight == {} and a.log.view.abandoned == {}


def test_a_redis_pause_longer_than_the_ttl_loses_no_live_relay(
    redis_server: RedisServer, relays: Any
) -> None:
    """Redis stopped (SIGSTOP) for longer than a relay's ttl: when it goes on, every relay's
    key has expired, and the rounds sent during the pause run late. None of it may make one
    live relay announce another's members as left: a late round changes nothing (its
    deadline), and no relay judges the others on its first round after the outage."""
    a, b = relays(), relays()
    ann = KeptMember(secrets.token_bytes(8), "ann", secrets.token_bytes(16))
    bob = KeptMember(secrets.token_bytes(8), "bob", secrets.token_bytes(16))
    for view, member in ((a, ann), (b, bob)):
        assert view.log.claim_nick(member.nick, member.token)
        view.log.keep_member(member)
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(TTL * 3)  # every key expires meanwhile; rounds time out and queue up
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: not a.log.health.down and not b.log.health.down, WAIT)
    # rounds enough for a wrong judgement, were one to be made: each relay judges from its
    # second answered round after the outage on
    keepers = (a.log.housekeeper, b.log.housekeeper)
    since = {keeper: keeper.rounds for keeper in keepers}
    assert wait_until(lambda: all(k.rounds >= n + 3 for k, n in since.items()), WAIT)
    a.take(), b.take()
    assert not [item for item in a.taken + b.taken if isinstance(item, RelayLost)]
    assert a.log.find_member(bob.token) == bob and b.log.find_member(ann.token) == ann
    assert not relays().log.claim_nick("ann", secrets.token_bytes(8))  # still ann's


def test_a_housekeeping_round_redis_runs_too_late_changes_nothing(
    redis_server: RedisServer, relays: Any
) -> None:
    """The round's deadline (Redis's clock) has passed when Redis runs it, as after a pause:
    it neither renews nor judges, and says so; its relay learns nothing from it."""
    a, c = relays(threads=False), relays(threads=False)
    member = KeptMember(secrets.token_bytes(8), "cat", secrets.token_bytes(16))
    assert c.log.claim_nick("cat", member.token)
    c.log.keep_member(member)
    client: Any = redis_server.client()
    a.log.housekeeper.run_once()
    client.delete(c.log.keys.relay(c.log.relay_hex))  # c looks dead
    store = a.log
    answer = store.housekeep_script(
        keys=[],
        args=[store.keys.prefix, store.relay_hex, store.ttl_ms, store.view.fresh,
              store.view.epoch, store.view.seen, 1, "1"],  # a deadline long past
    )
    assert int(answer[5]) == 1 and list(answer[3]) == []
    assert client.sismember(store.keys.relays, c.log.relay_hex)  # not judged
    assert store.find_member(member.token) == member
    a.log.housekeeper.run_once()  # an on-time round does judge
    assert a.take() == [RelayLost(c.log.relay_id, ("cat",))]


def test_an_answer_to_a_call_sent_before_an_outage_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A blocked XREAD answered after another call found Redis gone says nothing of now."""
    health = runtime.Health("redis://h/0", logging.getLogger("udpchat.relay.redis"))
    sent = health.outages  # the reader's XREAD goes out
    with caplog.at_level("WARNING", logger="udpchat.relay.redis"):
        health.failed(runtime.redis.ConnectionError("refused"))  # an append finds it gone
        health.ok(sent)  # then the XREAD's answer comes in
        assert health.down
        health.ok(health.outages)  # a call sent since answers: it is back
    assert not health.down
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[1].endswith("is back")
