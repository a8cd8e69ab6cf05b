"""WELCOME carries the room's size (protocol.md 6.2, 6.7): its format, a paged welcome from
one relay and from a relay of a shared room, the client's count and welcome event, and the
welcome line at 80 columns with its JSON record."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.client_support import of, relay_net
from tests.cluster_support import CONFIG, cluster
from tests.test_json_schema import SCHEMA
from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.relay.config import RelayConfig
from udpchat.render import BATCH_LINE_WIDTH, json_line, plain_line
from udpchat.roll import cells
from udpchat.sim import PathModel, SimNetwork
from udpchat.wiretypes import pack

pytestmark = pytest.mark.unit

T = 1_790_000_000.0


def test_welcome_round_trips_with_its_total_and_needs_it() -> None:
    welcome = msg.Welcome("carol", ("alice", "bob", "carol"), 900, 1, 0, 1000)
    data = msg.encode_message(welcome)
    assert msg.decode_message(data) == welcome
    without_total = pack([int(msg.K.WELCOME), "carol", ["carol"], 900, 1, 0])
    with pytest.raises(wire.DecodeError, match="fields"):
        msg.decode_message(without_total)


def welcomed(session: ClientSession) -> ev.Welcomed:
    found = of(session, ev.Welcomed)
    assert len(found) == 1 and isinstance(found[0], ev.Welcomed)
    return found[0]


def join_room(
    count: int, config: RelayConfig, later: tuple[str, ...] = ()
) -> tuple[SimNetwork, list[ClientSession]]:
    """``count`` members joined and every batch window over; then sessions for ``later``
    nicknames, not yet connected, at the end of the list."""
    nicks = (*(f"m{i:03d}" for i in range(count)), *later)
    net, _, sessions = relay_net(nicks, PathModel(delay=0.002), relay_config=config)
    joined = sessions[:count]
    for session in joined:
        session.connect(net.now)
        net.run(0.01)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in joined), 30)
    net.run(2.0)  # every batch window over
    return net, sessions


def test_a_paged_welcome_counts_the_room_in_one_message() -> None:
    config = RelayConfig(member_page=5, max_members_per_host=64, max_members_per_network=64)
    net, sessions = join_room(12, config)
    late = sessions[-1]
    event = welcomed(late)
    # the first page, itself, and the room's size, all from WELCOME: no size notice after it
    assert event.members == ("m000", "m001", "m002", "m003", "m004", "m011")
    assert event.size == 12 and late.room_size == 12
    assert late.stats.bad_messages == 0
    assert welcomed(sessions[3]).size == 4 and welcomed(sessions[3]).members == (
        "m000",
        "m001",
        "m002",
        "m003",
    )
    for s in sessions[:4]:
        s.quit("bye", net.now)
    net.run(2.0)
    assert late.room_size == 8  # kept current by the leaves after WELCOME


def test_a_paged_welcome_names_only_the_first_few_and_who_brings_the_rest() -> None:
    config = RelayConfig(
        member_page=5, welcome_page=2, max_members_per_host=64, max_members_per_network=64
    )
    net, sessions = join_room(12, config)
    late = sessions[-1]
    event = welcomed(late)
    assert event.members == ("m000", "m001", "m011") and event.size == 12
    late.who(net.now)
    net.run(2.0)
    assert late.members == tuple(f"m{i:03d}" for i in range(12))
    with pytest.raises(ValueError, match="welcome_page"):
        RelayConfig(welcome_page=0)


def test_a_paged_welcome_leaves_out_who_waits_in_a_join_batch() -> None:
    # protocol.md 6.3: WELCOME lists the room as of its seq; a joiner still waiting in the
    # batch (here "a00", who sorts first) is named by that batch, which the newcomer gets.
    config = RelayConfig(
        member_page=5,
        batch_notices_above=0,
        notice_window=1.0,
        max_members_per_host=64,
        max_members_per_network=64,
    )
    net, sessions = join_room(8, config, later=("a00", "a01"))
    first, second = sessions[8:]
    first.connect(net.now)
    assert net.run_until(lambda: first.state is SessionState.JOINED, 5)
    second.connect(net.now)
    assert net.run_until(lambda: second.state is SessionState.JOINED, 5)
    event = welcomed(second)
    assert event.members == ("a01", "m000", "m001", "m002", "m003") and event.size == 9
    net.run(2.0)
    assert second.room_size == 10 and "a00" in second.members


def test_a_relay_of_a_shared_room_counts_every_relay_s_members() -> None:
    room = cluster(2, RelayConfig(timeout=CONFIG.timeout, member_page=3))
    for i in range(6):
        room.join(f"m{i}", i % 2)
    room.settle()
    late = room.join("zed", 1)
    event = welcomed(late)
    assert event.size == 7 and late.room_size == 7
    assert event.members == ("m0", "m1", "m2", "zed")
    assert late.stats.bad_messages == 0


def test_a_small_room_s_welcome_names_everyone_and_counts_them() -> None:
    _, sessions = join_room(3, RelayConfig())
    event = welcomed(sessions[-1])
    assert event.members == ("m000", "m001", "m002") and event.size == 3
    assert sessions[-1].room_size == 3


def test_the_welcome_line_names_the_first_and_counts_the_room() -> None:
    page = tuple(f"member{i:03d}" for i in range(100))
    line = plain_line(ev.Welcomed("alice", ("alice", *page), False, size=1000)) or ""
    body = line.split(" ", 1)[1]
    assert body.startswith("-- you are alice; in the room (1,000): alice, member000, ")
    assert body.endswith("alice, member000, … and 998 more")
    assert cells(line) <= BATCH_LINE_WIDTH


def test_a_small_room_s_welcome_line_is_unchanged() -> None:
    line = plain_line(ev.Welcomed("alice", ("alice", "bob"), False, size=2)) or ""
    assert line.endswith("-- you are alice; in the room (2): alice, bob")


nick = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=16,
)


@given(
    own=nick,
    others=st.lists(nick, max_size=120),
    extra=st.integers(0, 100_000),
    resumed=st.booleans(),
)
def test_any_welcome_fits_80_columns_and_says_the_size(
    own: str, others: list[str], extra: int, resumed: bool
) -> None:
    members = tuple(sorted({own, *others}))
    size = len(members) + extra
    event = ev.Welcomed(own, members, resumed, size=size)
    line = plain_line(event) or ""
    assert "\n" not in line and cells(line) <= BATCH_LINE_WIDTH
    assert f"in the room ({size:,})" in line


def test_the_welcome_record_has_the_size_and_matches_the_schema() -> None:
    record = json.loads(json_line(ev.Welcomed("alice", ("alice", "bob"), False, size=1000)))
    assert record["size"] == 1000 and record["members"] == ["alice", "bob"]
    assert not list(Draft202012Validator(SCHEMA).iter_errors(record))
    del record["size"]
    assert list(Draft202012Validator(SCHEMA).iter_errors(record))  # the size is required


def test_a_welcome_event_never_counts_fewer_than_it_names() -> None:
    assert ev.Welcomed("alice", ("alice", "bob"), False).size == 2
