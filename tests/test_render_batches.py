"""A batch of joins or leaves is one line of at most 80 columns, plain and styled."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.events import MembersChanged, MembersJoined, MembersLeft
from udpchat.render import BATCH_LINE_WIDTH, json_line, plain_line
from udpchat.roll import cells
from udpchat.styled import ansi_line

pytestmark = pytest.mark.unit

T = 1_790_000_000.0
NICKS = tuple(f"member{i:03d}" for i in range(12))


def test_twelve_joined_reads_as_one_line_naming_the_first_and_counting_the_rest() -> None:
    line = plain_line(MembersJoined(5, T, NICKS))
    assert line is not None
    body = line.split(" ", 1)[1]
    assert body == "-- 12 joined: member000, member001, member002, member003, … and 8 more"
    assert len(line) <= BATCH_LINE_WIDTH


def test_one_join_and_one_leave_read_as_before() -> None:
    assert (plain_line(MembersJoined(5, T, ("alice",))) or "").endswith("-- alice joined")
    left = plain_line(MembersLeft(6, T, ("bob",), ("quit",), ("bye",)))
    assert (left or "").endswith("-- bob left (quit: bye)")


def test_new_and_returned_members_share_the_line() -> None:
    line = plain_line(MembersJoined(5, T, NICKS[:3], NICKS[3:])) or ""
    assert "3 joined: member000" in line and "; 9 back: member003" in line
    assert len(line) <= BATCH_LINE_WIDTH


def test_the_json_record_is_one_per_batch_with_every_name() -> None:
    record = json_line(MembersLeft(6, T, NICKS[:2], ("quit", "timed out"), ("", "timed out")))
    assert record.count('"type"') == 1 and '"nicks":["member000","member001"]' in record


nick = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=32,
)


@given(joined=st.lists(nick, max_size=40), returned=st.lists(nick, max_size=40))
def test_any_batch_fits_80_columns(joined: list[str], returned: list[str]) -> None:
    if not joined and not returned:
        return
    event = MembersJoined(5, T, tuple(joined), tuple(returned))
    line = plain_line(event) or ""
    assert "\n" not in line and cells(line) <= BATCH_LINE_WIDTH
    assert str(len(joined) or len(returned)) in line
    assert ansi_line(event, colour=False).startswith(line[:8])


@given(left=st.lists(nick, min_size=2, max_size=60))
def test_any_leave_batch_fits_80_columns(left: list[str]) -> None:
    event = MembersLeft(5, T, tuple(left), ("quit",) * len(left), ("",) * len(left))
    line = plain_line(event) or ""
    assert cells(line) <= BATCH_LINE_WIDTH and f"{len(left)} left" in line


@given(
    left=st.integers(0, 30),
    joined=st.integers(0, 30),
    width=st.integers(3, 16),
)
def test_the_away_line_keeps_to_80_columns_whatever_the_two_lists(
    left: int, joined: int, width: int
) -> None:
    names = [f"{i:0{width}d}"[-width:].replace("0", "n") for i in range(left + joined)]
    event = MembersChanged(tuple(names[:left]), tuple(names[left:]))
    line = plain_line(event, T)
    if left or joined:
        assert line is not None and len(line) <= BATCH_LINE_WIDTH
