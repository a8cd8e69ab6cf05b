"""The room log on its own: numbering, retention, replay, epoch (protocol.md 6.3); and the
relay core running on any ``RoomLog``, not only the memory one."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.relaysim import RELAY, client_addr, join
from udpchat import messages as m
from udpchat import wire
from udpchat.errors import UsageError
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.room_log import (
    EventBuilder,
    KeptMember,
    LoggedEvent,
    MemoryRoomLog,
    RoomLog,
    events_after,
    newest_chats,
)
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit


def rng(seed: int = 1):  # type: ignore[no-untyped-def]
    return random.Random(seed).randbytes


def chat(text: str) -> EventBuilder:
    return lambda seq: m.ChatMessage(seq, 1_700_000_000, "alice", text)


def joined(nick: str) -> EventBuilder:
    return lambda seq: m.Joined(seq, 1_700_000_000, nick)


def test_append_numbers_from_one_and_returns_the_encoded_event() -> None:
    log = MemoryRoomLog(10, rng())
    assert (log.last_seq, log.first_seq) == (0, 1)
    first = log.append(chat("hi"))
    second = log.append(joined("bob"))
    assert first == LoggedEvent(
        1, True, m.encode_message(m.ChatMessage(1, 1_700_000_000, "alice", "hi"))
    )
    assert (second.seq, second.chat) == (2, False)
    assert m.decode_message(second.data) == m.Joined(2, 1_700_000_000, "bob")
    assert (log.last_seq, log.first_seq) == (2, 1)


def test_an_event_built_with_another_number_is_refused_and_takes_none() -> None:
    log = MemoryRoomLog(10, rng())
    with pytest.raises(UsageError):
        log.append(lambda seq: m.Joined(seq + 1, 0, "bob"))
    assert log.last_seq == 0 and log.replay(0) == []
    assert log.append(joined("bob")).seq == 1


def test_retention_keeps_the_newest_history_events() -> None:
    log = MemoryRoomLog(3, rng())
    for i in range(5):
        log.append(chat(f"m{i}"))
    assert (log.first_seq, log.last_seq) == (3, 5)
    texts = [m.decode_message(d).text for d in log.replay(0)]  # type: ignore[union-attr]
    assert texts == ["m2", "m3", "m4"]


def test_replay_gives_the_kept_events_after_a_seq_in_order() -> None:
    log = MemoryRoomLog(10, rng())
    events = [log.append(chat(f"m{i}") if i % 2 else joined(f"u{i}")) for i in range(6)]
    assert log.replay(0) == [e.data for e in events]
    assert log.replay(4) == [e.data for e in events[4:]]
    assert log.replay(6) == [] and log.replay(100) == []


def test_recent_chats_skips_comings_and_goings() -> None:
    log = MemoryRoomLog(10, rng())
    events = [log.append(chat(f"m{i}") if i % 2 else joined(f"u{i}")) for i in range(6)]
    chats = [e.data for e in events if e.chat]
    assert len(chats) == 3
    assert log.recent_chats(2) == chats[-2:]
    assert log.recent_chats(10) == chats
    assert log.recent_chats(0) == []


class Counted:
    """A history that counts the events read from it, either way."""

    def __init__(self, events: list[LoggedEvent]) -> None:
        self.events, self.read = events, 0

    def __iter__(self) -> Iterator[LoggedEvent]:
        for event in self.events:
            self.read += 1
            yield event

    def __reversed__(self) -> Iterator[LoggedEvent]:
        for event in reversed(self.events):
            self.read += 1
            yield event


@given(
    st.lists(st.booleans(), max_size=60),
    st.integers(min_value=0, max_value=70),
    st.integers(min_value=-1, max_value=70),
)
def test_the_newest_chats_and_the_events_after_a_seq_are_those_of_the_whole_history(
    chats: list[bool], count: int, after: int
) -> None:
    events = [LoggedEvent(i + 1, chat, bytes([i])) for i, chat in enumerate(chats)]
    every_chat = [e.data for e in events if e.chat]
    assert newest_chats(events, count) == (every_chat[-count:] if count else [])
    assert events_after(events, after) == [e.data for e in events if e.seq > after]


def test_a_newcomers_history_and_a_catch_up_read_only_the_newest_events() -> None:
    # 200 events kept, every other one a chat (the newest too): 20 chats are the newest 39,
    # and a member that missed 5 events costs 6 steps, not 200.
    events = [LoggedEvent(i + 1, i % 2 == 1, bytes([i % 256])) for i in range(200)]
    history = Counted(events)
    assert len(newest_chats(history, 20)) == 20 and history.read == 39
    history = Counted(events)
    assert len(events_after(history, 195)) == 5 and history.read == 6


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=8))
def test_recent_chats_are_those_of_the_events_still_kept(chats: list[bool], history: int) -> None:
    log = MemoryRoomLog(history, rng())
    for i, is_chat in enumerate(chats):
        log.append(chat(f"m{i}") if is_chat else joined(f"u{i}"))
    kept = [f"m{i}" for i, is_chat in enumerate(chats) if is_chat and i >= len(chats) - history]
    for count in range(history + 2):
        texts = [m.decode_message(d).text for d in log.recent_chats(count)]  # type: ignore[union-attr]
        assert texts == (kept[-count:] if count else [])


def test_a_room_where_nobody_spoke_gives_a_newcomer_its_history_without_reading_it() -> None:
    log = MemoryRoomLog(200, rng())
    for i in range(5):  # spoken long ago: out of the history by now
        log.append(chat(f"m{i}"))
    for i in range(250):
        log.append(joined(f"u{i}"))
    history = Counted(list(log._kept))
    log._kept = history  # type: ignore[assignment]
    assert log.recent_chats(20) == [] and history.read == 0


def test_no_history_still_numbers_every_event() -> None:
    log = MemoryRoomLog(0, rng())
    for i in range(3):
        assert log.append(chat(f"m{i}")).seq == i + 1
    assert (log.first_seq, log.last_seq) == (4, 3)
    assert log.replay(0) == [] and log.recent_chats(5) == []


def test_the_epoch_comes_from_the_injected_random_source() -> None:
    assert MemoryRoomLog(5, rng(7)).epoch == random.Random(7).randbytes(wire.EPOCH_SIZE)
    assert MemoryRoomLog(5, rng(7)).epoch != MemoryRoomLog(5, rng(8)).epoch
    with pytest.raises(ValueError):
        MemoryRoomLog(-1, rng())


def test_the_relay_draws_the_cookie_secret_then_the_epoch() -> None:
    source = random.Random(3)
    source.randbytes(32)  # the cookie secret
    epoch = source.randbytes(wire.EPOCH_SIZE)
    relay = RelayCore(RelayConfig(), 0.0, rng(3))
    assert relay.epoch == epoch == relay.log.epoch


class CountingLog:
    """Another RoomLog: the memory one behind the interface, counting what the relay asks."""

    def __init__(self, inner: RoomLog) -> None:
        self.inner = inner
        self.appended = 0
        self.replays: list[int] = []
        self.commits = 0

    @property
    def epoch(self) -> bytes:
        return self.inner.epoch

    @property
    def last_seq(self) -> int:
        return self.inner.last_seq

    @property
    def first_seq(self) -> int:
        return self.inner.first_seq

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        self.appended += 1
        return self.inner.append(event, msgid)

    def replay(self, after: int) -> list[bytes]:
        self.replays.append(after)
        return self.inner.replay(after)

    def recent_chats(self, count: int) -> list[bytes]:
        return self.inner.recent_chats(count)

    def posted_ids(self, count: int) -> list[tuple[bytes, int]]:
        return self.inner.posted_ids(count)

    def keep_member(self, member: KeptMember) -> None:
        self.inner.keep_member(member)

    def forget_member(self, token: bytes) -> None:
        self.inner.forget_member(token)

    def kept_members(self) -> list[KeptMember]:
        return self.inner.kept_members()

    def commit(self) -> None:
        self.commits += 1
        self.inner.commit()

    def close(self) -> None:
        self.inner.close()


def test_the_relay_runs_on_any_room_log_and_catches_up_from_it() -> None:
    log = CountingLog(MemoryRoomLog(50, rng(9)))
    net = SimNetwork(seed=1, default=PathModel())
    relay = RelayCore(RelayConfig(), 0.0, rng(1), room_log=log)
    net.attach(RELAY, relay)
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert relay.epoch == log.epoch and relay.room_seq == log.last_seq == 2  # two JOINED
    net.run(0.2)
    assert bob.accept is not None
    last = relay.room_seq  # bob has seen everything so far (his own JOINED is not sent him)
    net.detach(client_addr(2))
    for i in range(3):
        alice.send(m.Say(f"missed {i}"))
    net.run(0.5)
    resume = wire.Resume(log.epoch, bob.accept.token, last)
    again = join(net, "bob", 3, resume=resume, resume_secret=bob.resume_secret)
    net.run(0.5)
    assert [x.text for x in again.of(m.ChatMessage)] == ["missed 0", "missed 1", "missed 2"]
    assert log.replays == [last] and log.appended == log.last_seq == 5


class FailingLog(CountingLog):
    """A log whose commits fail while ``failing`` is set."""

    def __init__(self, inner: RoomLog) -> None:
        super().__init__(inner)
        self.failing = False

    def commit(self) -> None:
        if self.failing:
            raise OSError("disk full")
        super().commit()


def test_the_log_commits_before_anything_is_sent_and_nothing_leaves_if_it_cannot() -> None:
    log = FailingLog(MemoryRoomLog(50, rng(9)))
    net = SimNetwork(seed=1, default=PathModel())
    relay = RelayCore(RelayConfig(), 0.0, rng(1), room_log=log)
    net.attach(RELAY, relay)
    alice = join(net, "alice", 1)
    join(net, "bob", 2)
    net.run(0.2)
    assert log.commits > 0
    alice.send(m.Say("hello"))
    for data, _ in alice.datagrams_to_send(net.now):  # delivered by hand, not by the network
        relay.receive_datagram(data, client_addr(1), net.now)
    assert relay.room_seq == 3
    log.failing = True
    with pytest.raises(OSError):
        relay.datagrams_to_send(net.now)
    log.failing = False
    out = relay.datagrams_to_send(net.now)  # the same output, once the commit succeeds
    assert len(out) >= 2  # POSTED to alice, MESSAGE to bob
