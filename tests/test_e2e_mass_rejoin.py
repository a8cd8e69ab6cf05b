"""A room of 200 members whose relay restarts: everyone comes back at once.

The members are real client sessions (``udpchat_bench.pool``: the terminal client's core,
sans I/O, one socket each, one loop), the relay a ``RelayServer`` on a fixed port. The relay
is stopped without a goodbye and a new one, with the same identity, starts on the same port:
the members' next heartbeats get RESETs that prove the restart (protocol.md 7.2), and all 200
rejoin at once, as a new epoch. All members here are on 127.0.0.1, which the relay counts as
one host: its per-host limits are raised so that they measure the room, not the loopback.

The bound on how long the rejoin takes is measured at 1,000 members by ``udpchat load
--storm``, never asserted here: only that everyone is back, with nothing lost.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from udpchat import events as ev
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat_bench.pool import MemberPool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MEMBERS = 200
SENDERS = 10  # members who say something while the relay is away


def room_config(members: int) -> RelayConfig:
    return RelayConfig(
        handshake_burst=members + 200,
        handshake_rate=1000.0,
        reply_burst=members + 200,
        reply_rate=1000.0,
        max_members_per_host=members + 64,
        max_members_per_network=members + 64,
    )


@pytest.fixture
def room() -> Iterator[tuple[MemberPool, RelayOptions]]:
    options = RelayOptions(
        host="127.0.0.1", port=0, config=room_config(MEMBERS), static_key=secrets.token_bytes(32)
    )
    relay = RelayServer(options).start()
    options = RelayOptions(
        host="127.0.0.1",
        port=relay.address[1],
        config=options.config,
        static_key=options.static_key,
    )
    now = time.monotonic()
    pool = MemberPool(relay.address, [f"m{i}" for i in range(MEMBERS)], now, keep_events=True)
    try:
        for index in range(MEMBERS):
            pool.connect(index, now)
        assert pool.run_until(lambda: pool.joined() == MEMBERS, 60)
        everyone = {m.session.nick for m in pool.members}
        assert pool.run_until(lambda: all(pool.knows_room(m, everyone) for m in pool.members), 30)
        relay.stop(goodbye=False)  # a crash, as far as the members can tell
        yield pool, options
    finally:
        relay.stop(goodbye=False)
        pool.close()


def test_a_room_of_200_rejoins_at_once_after_a_restart(
    room: tuple[MemberPool, RelayOptions],
) -> None:
    pool, options = room
    everyone = sorted(f"m{i}" for i in range(MEMBERS))
    restarted = time.monotonic()
    texts = [f"said while the relay was away, by m{i}" for i in range(SENDERS)]
    for index, text in enumerate(texts):
        pool.say(index, text, restarted)  # queued: the session has not noticed yet
    relay = RelayServer(options).start()
    try:
        assert pool.run_until(
            lambda: all(m.joined_at is not None and m.joined_at > restarted for m in pool.members),
            60,
        ), f"{pool.joined()} of {MEMBERS} back"

        def settled() -> bool:
            lists = all(pool.knows_room(m, set(everyone)) for m in pool.members)
            return lists and pool.missing(texts) == 0

        assert pool.run_until(settled, 30)
        pool.run_until(lambda: False, 0.5)  # late duplicates, if any, would arrive now
        # every member back under its own name, its list exact, nobody timed out
        assert sorted(m.session.nick for m in pool.members) == everyone
        assert relay.members() == everyone
        # the full list, page by page (protocol.md 6.7), as a few members ask for it
        asking = [0, MEMBERS // 2, MEMBERS - 1]
        for index in asking:
            pool.who(index, time.monotonic())
        assert pool.run_until(
            lambda: all(sorted(pool.members[i].session.members) == everyone for i in asking), 30
        )
        assert pool.timed_out == []
        # what was said while the relay was away was posted once, after its sender was back,
        # and reached exactly once every member back by then (the restarted relay has no
        # older room to give the later ones, beyond its join history)
        assert sorted(pool.posted_at) == sorted(texts)
        assert pool.missing(texts) == 0 and pool.duplicated(texts) == 0
        assert all(m.lines.get(text) == 1 for m in pool.members for text in texts[:1])
        for member in pool.members:
            assert not any(isinstance(e, ev.MessageRefused) for e in member.events)
        # and nothing overflowed a socket on the way (None where the system does not count)
        assert relay.kernel_drops() in (0, None)
        assert pool.kernel_drops() == 0
    finally:
        relay.stop(goodbye=False)


def test_scheduled_joins_start_in_order_no_earlier_than_asked_and_all_join() -> None:
    """``schedule_connect`` (the storm's pacing) starts each join from within the pool's
    loop, in order and never before its time, and the joiners' answers are served."""
    count = 40
    relay = RelayServer(RelayOptions(host="127.0.0.1", port=0, config=room_config(count))).start()
    start = time.monotonic()
    pool = MemberPool(relay.address, [f"s{i}" for i in range(count)], start)
    try:
        due = [start + 0.05 + index / 200 for index in range(count)]
        for index, when in enumerate(due):
            pool.schedule_connect(index, when)
        assert pool.run_until(lambda: pool.joined() == count, 60)
        started = [m.started_at or 0.0 for m in pool.members]
        assert all(s >= when for s, when in zip(started, due, strict=True))
        assert started == sorted(started)
        assert all(m.joined_at is not None for m in pool.members)
    finally:
        relay.stop(goodbye=False)
        pool.close()
