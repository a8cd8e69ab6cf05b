"""Join and leave notices batched in large rooms (protocol.md 6.3): real client sessions and
the relay core on a simulated network, virtual clock, seeded loss."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.client_support import RELAY, RELAY_STATIC, TIME, drain, of, relay_net, seeded
from udpchat import events as ev
from udpchat import messages as msg
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.notices import NoticeKind, PendingNotices
from udpchat.relay.sessions import Dormant
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit

WINDOW = RelayConfig().notice_window


def big_room(**overrides: object) -> RelayConfig:
    """Limits that let a whole simulated room join from one host at once."""
    limits: dict[str, object] = {
        "max_members_per_host": 1024,
        "max_members_per_network": 1024,
        "handshake_burst": 1024,
        "handshake_rate": 1000.0,
    }
    limits.update(overrides)
    return RelayConfig(**limits)  # type: ignore[arg-type]


def exact(relay: RelayCore, sessions: list[ClientSession]) -> bool:
    """Every joined member's list is the relay's; in a paged room (protocol.md 6.7), what
    it knows is in the room and its count of the room is exact."""
    truth = relay.member_nicks()
    for s in sessions:
        if s.state is not SessionState.JOINED:
            continue
        if len(truth) > relay.config.member_page:
            if s.room_size != len(truth) or not set(s.members) <= set(truth):
                return False
        elif sorted(s.members) != truth:
            return False
    return True


def listed_in_full(net: SimNetwork, relay: RelayCore, sessions: list[ClientSession]) -> bool:
    """Every member asks /who; then every list is the relay's, page by page."""
    for s in sessions:
        drain(s)
        s.who(net.now)
    net.run(2.0)
    truth = relay.member_nicks()
    for s in sessions:
        (listed,) = of(s, ev.MembersListed)
        assert isinstance(listed, ev.MembersListed)
        if sorted(listed.members) != truth or sorted(s.members) != truth:
            return False
    return True


def join_at_once(
    count: int, config: RelayConfig, loss: float = 0.0, seed: int = 3
) -> tuple[SimNetwork, RelayCore, list[ClientSession]]:
    nicks = tuple(f"m{i:04d}" for i in range(count))
    net, relay, sessions = relay_net(
        nicks, PathModel(delay=0.002, loss=loss), seed=seed, relay_config=config
    )
    for session in sessions:
        session.connect(net.now)
        net.run(0.004)  # 250 a second
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 60)
    net.run(3 * WINDOW + 1)
    return net, relay, sessions


def test_two_hundred_joining_at_loss_end_with_exact_lists_and_few_room_events() -> None:
    net, relay, sessions = join_at_once(200, big_room(), loss=0.05)
    assert exact(relay, sessions) and len(relay.member_nicks()) == 200
    assert listed_in_full(net, relay, sessions[::20])  # two pages each
    # 16 JOINEDs before the room is large, then one batch per window or per 64 names.
    assert relay.room_seq < 16 + 200 // 10
    batches = [e for s in sessions for e in of(s, ev.MembersJoined)]
    assert batches and max(len(e.nicks) for e in batches if isinstance(e, ev.MembersJoined)) > 1
    for s in sessions:  # nobody is told of itself, nobody twice of anyone
        named = [n for e in of(s, ev.MembersJoined) for n in e.nicks]  # type: ignore[attr-defined]
        assert s.nick not in named and len(named) == len(set(named))


def test_batching_sends_fewer_datagrams_per_join() -> None:
    counts = {}
    for window in (0.0, WINDOW):
        _, relay, sessions = join_at_once(60, big_room(notice_window=window))
        assert exact(relay, sessions)
        counts[window] = relay.stats.datagrams_sent
    assert counts[WINDOW] < counts[0.0] / 2


def test_a_newcomer_is_welcomed_at_once_while_its_notice_waits() -> None:
    net, relay, sessions = join_at_once(30, big_room())
    newcomer = relay_net(("late",), PathModel(delay=0.002), seed=9)[2][0]
    net.attach(("10.9.9.9", 5000), newcomer)
    for s in sessions:
        drain(s)
    start = net.now
    newcomer.connect(start)
    assert net.run_until(lambda: newcomer.state is SessionState.JOINED, 5)
    assert net.now - start < WINDOW / 2  # the WELCOME did not wait for the window
    assert not any(of(s, ev.MembersJoined) for s in sessions)  # the notice still does
    net.run(WINDOW + 0.1)
    assert all([e.nicks for e in of(s, ev.MembersJoined)] == [("late",)] for s in sessions)  # type: ignore[attr-defined]
    assert exact(relay, [*sessions, newcomer])


def test_leaves_are_batched_and_a_join_and_leave_in_one_window_keep_lists_exact() -> None:
    net, relay, sessions = join_at_once(40, big_room())
    for s in sessions:
        drain(s)
    seq = relay.room_seq
    for s in sessions[:10]:
        s.quit("bye", net.now)
    net.run(0.05)
    late = relay_net(("quick",), PathModel(delay=0.002), seed=11)[2][0]
    net.attach(("10.9.9.8", 5000), late)
    late.connect(net.now)
    assert net.run_until(lambda: late.state is SessionState.JOINED, 5)
    late.quit("gone again", net.now)
    net.run(3 * WINDOW)
    rest = sessions[10:]
    assert exact(relay, rest) and "quick" not in relay.member_nicks()
    # ten leaves, one join and one leave: three room events, not twelve
    assert relay.room_seq == seq + 3
    left = [e for e in of(rest[0], ev.MembersLeft) if isinstance(e, ev.MembersLeft)]
    assert [len(e.nicks) for e in left] == [10, 1] and left[0].reasons == ("quit",) * 10


def test_a_member_away_catches_up_across_batches_from_history() -> None:
    net, relay, sessions = join_at_once(20, big_room())
    away = sessions[0]
    addr = next(a for a, n in net._nodes.items() if n is away)
    net.detach(addr)
    newcomers = relay_net(tuple(f"n{i}" for i in range(12)), PathModel(delay=0.002), seed=5)[2]
    for i, s in enumerate(newcomers):
        net.attach(("10.8.0.1", 6000 + i), s)
        s.connect(net.now)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in newcomers), 10)
    net.run(WINDOW + 0.1)
    drain(away)
    net.attach(addr, away)
    assert net.run_until(lambda: exact(relay, [away]), 30)
    caught = [e for e in of(away, ev.MembersJoined) if isinstance(e, ev.MembersJoined)]
    assert {n for e in caught for n in e.nicks} == {s.nick for s in newcomers}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["join", "leave", "rename", "say", "wait"]), st.integers(0, 7)),
        max_size=25,
    ),
    loss=st.sampled_from([0.0, 0.1]),
)
def test_any_interleaving_of_joins_and_leaves_keeps_every_list_exact(
    steps: list[tuple[str, int]], loss: float
) -> None:
    config = big_room(batch_notices_above=0, notice_window=0.1)
    nicks = tuple(f"p{i}" for i in range(8))
    net, relay, sessions = relay_net(nicks, PathModel(delay=0.002, loss=loss), relay_config=config)
    renamed = 0
    for action, i in steps:
        s = sessions[i]
        state = s.state
        if action == "join" and state is SessionState.IDLE:
            s.connect(net.now)
        elif action == "leave" and state is SessionState.JOINED:
            s.quit("bye", net.now)
        elif action == "rename" and state is SessionState.JOINED:
            renamed += 1
            s.change_nick(f"r{renamed}", net.now)
        elif action == "say" and state is SessionState.JOINED:
            s.say("hi", net.now)
        net.run(0.03 if action != "wait" else 0.2)
    settled = (SessionState.IDLE, SessionState.JOINED, SessionState.CLOSED)
    assert net.run_until(lambda: all(s.state in settled for s in sessions), 30)
    net.run(1.0)
    assert exact(relay, sessions)


def test_a_batch_decodes_and_refuses_mismatched_arrays() -> None:
    batch = msg.LeftBatch(5, 7, ("a", "b"), (0, 1), ("bye", "timed out"))
    assert msg.decode_message(msg.encode_message(batch)) == batch
    with pytest.raises(Exception, match="one item per member"):
        msg.LeftBatch(5, 7, ("a", "b"), (0,), ("bye",))
    with pytest.raises(Exception, match="at least one"):
        msg.JoinedBatch(5, 7, (), ())


def test_a_newcomer_to_a_big_room_gets_one_page_and_the_rest_on_who_while_the_room_moves() -> None:
    net, relay, sessions = join_at_once(150, big_room(member_page=50))
    late = relay_net(("zed",), PathModel(delay=0.002), seed=13)[2][0]
    net.attach(("10.9.9.7", 5000), late)
    late.connect(net.now)
    assert net.run_until(lambda: late.state is SessionState.JOINED, 5)
    (welcomed,) = of(late, ev.Welcomed)
    assert isinstance(welcomed, ev.Welcomed)
    # the first few names (welcome_page) and itself; /who brings the pages of 50
    assert len(welcomed.members) == 21 and "zed" in welcomed.members
    assert late.room_size == 151
    drain(late)
    late.who(net.now)
    for s in sessions[:5]:  # the room moves while the pages come
        s.quit("bye", net.now)
    more = relay_net(("aaa", "mmm", "yyy"), PathModel(delay=0.002), seed=14)[2]
    for i, s in enumerate(more):
        net.attach(("10.9.9.6", 5000 + i), s)
        s.connect(net.now)
    net.run(2.0)
    truth = relay.member_nicks()
    (listed,) = of(late, ev.MembersListed)
    assert isinstance(listed, ev.MembersListed) and len(listed.members) >= 145
    assert sorted(late.members) == truth and late.room_size == len(truth) == 149


def test_who_pages_through_a_room_whose_names_do_not_fit_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """protocol.md 6.7: the pages list every member, even where the whole list would not fit
    the one message a WELCOME or MEMBERS carries. (Messages shrunk to 1 KiB here, so that
    200 nicknames overflow one, as about 550 long ones would at the real 64 KiB.)"""
    monkeypatch.setattr("udpchat.relay.sessions.MAX_MESSAGE_SIZE", 1024)
    nicks = tuple(f"m{i:04d}" for i in range(200))
    net, relay, sessions = relay_net(
        nicks, PathModel(delay=0.002), seed=5, relay_config=big_room(member_page=50)
    )
    for session in sessions:
        session.connect(net.now)
        net.run(0.004)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 60)
    net.run(3 * WINDOW + 1)
    assert len(relay.sessions.nick_list()) < 200  # one message holds only a prefix
    asker = relay_net(("zed",), PathModel(delay=0.002), seed=13)[2][0]
    net.attach(("10.9.9.7", 5000), asker)
    asker.connect(net.now)
    assert net.run_until(lambda: asker.state is SessionState.JOINED, 5)  # a paged WELCOME
    drain(asker)
    asker.who(net.now)
    net.run(2.0)
    (listed,) = of(asker, ev.MembersListed)
    assert isinstance(listed, ev.MembersListed)
    assert sorted(listed.members) == sorted((*nicks, "zed")) == relay.member_nicks()


def test_who_lists_everyone_to_a_member_welcomed_before_the_room_outgrew_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first member's WELCOME was not paged, so its /who asks WHO, whose MEMBERS holds
    only the prefix that fits one message once the room has grown: the client fetches the
    rest in pages (protocol.md 6.7). (Messages shrunk to 1 KiB, as above.)"""
    monkeypatch.setattr("udpchat.relay.sessions.MAX_MESSAGE_SIZE", 1024)
    net, relay, sessions = join_at_once(200, big_room(member_page=50))
    assert len(relay.sessions.nick_list()) < 200  # one message holds only a prefix
    first = sessions[0]
    drain(first)
    first.who(net.now)
    net.run(2.0)
    (listed,) = of(first, ev.MembersListed)
    assert isinstance(listed, ev.MembersListed)
    assert sorted(listed.members) == relay.member_nicks() and len(listed.members) == 200
    assert sorted(first.members) == relay.member_nicks()
    drain(first)
    first.who(net.now)  # now known to be paged: pages from the start
    net.run(2.0)
    (again,) = of(first, ev.MembersListed)
    assert isinstance(again, ev.MembersListed) and len(again.members) == 200


def test_after_a_relay_restart_the_room_comes_back_as_returned_not_joined() -> None:
    net, relay, sessions = join_at_once(40, big_room())
    config = relay.config
    restarted = RelayCore(config, net.now, seeded(77), wall_offset=TIME, static_key=RELAY_STATIC)
    net.attach(RELAY, restarted)  # same identity, new epoch: every session is lost
    for s in sessions:
        drain(s)
    assert net.run_until(lambda: len(restarted.member_nicks()) == 40, 60)
    net.run(3 * WINDOW + 1)
    assert exact(restarted, sessions)
    batches = [e for s in sessions for e in of(s, ev.MembersJoined)]
    named = [e for e in batches if isinstance(e, ev.MembersJoined)]
    assert named and all(not e.nicks and e.returned for e in named if not e.history)


def test_a_waiting_join_is_taken_out_for_a_member_that_moved_away() -> None:
    notices = PendingNotices()
    notices.start(NoticeKind.JOIN, 0.0, 0.2)
    notices.add_join("ann", returned=False)
    notices.add_join("bo", returned=True)
    assert notices.take_join("bo") and not notices.take_join("cy")
    assert notices.count == 1 and notices.kind is NoticeKind.JOIN
    assert notices.take_join("ann")
    assert notices.kind is None and notices.size == 0  # nothing left to announce


@pytest.mark.parametrize(
    ("size", "window"), [(16, 0.2), (400, 0.2), (1000, 0.5), (2000, 1.0), (10_000, 1.0)]
)
def test_the_notice_window_grows_with_the_room_up_to_a_second(size: int, window: float) -> None:
    """protocol.md 6.3: N / notice_fanout seconds when that is longer than notice_window,
    so that a large room's notices cost about notice_fanout datagrams a second at most."""
    relay = RelayCore(big_room(), 0.0, seeded(5), static_key=RELAY_STATIC)
    for i in range(size):  # members not back yet since a restart count as members
        relay.sessions.add_dormant(Dormant(b"%08d" % i, f"m{i}", f"m{i}", b"", 100.0))
    assert relay.room.notice_window() == pytest.approx(window)
    unscaled = RelayCore(big_room(notice_fanout=float("inf")), 0.0, seeded(5))
    assert unscaled.room.notice_window() == WINDOW
