"""What a member sees while the relay is gone: the outage counted from the last datagram
heard, rejoin attempts worded as what happens, and a status bar that cuts what does not fit
with an ellipsis instead of dropping it."""

from __future__ import annotations

import io
import time

import pytest

from tests.client_support import RELAY, client_addr, join_all, make_net, of
from udpchat import events as ev
from udpchat.render import plain_line
from udpchat.sim import PathModel
from udpchat.statusbar import LinkStatus, fit
from udpchat.terminal import InteractiveUI

pytestmark = pytest.mark.unit


class Handle:
    nick = "alice"
    members = ("alice", "bob")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def bar(ui: InteractiveUI, width: int) -> str:
    return "".join(item[1] for item in ui.status_bar(width))


def test_a_silent_relay_is_reported_with_how_long_it_was_silent() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    net.run(0.5)
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))  # as after kill -9
    silent_from = net.now
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    (lost,) = of(alice, ev.ConnectionLost)
    assert isinstance(lost, ev.ConnectionLost)
    # the last datagram came at most one heartbeat (an ACK, a PONG) before the cut
    assert net.now - silent_from <= lost.silent_for <= net.now - silent_from + 1.05
    assert lost.silent_for >= 4  # noticed only after seconds of silence


def test_the_status_bar_counts_the_outage_from_the_last_datagram(clock: list[float]) -> None:
    ui = InteractiveUI(colour=False, stderr=io.StringIO())
    ui._handle = Handle()  # type: ignore[assignment]
    ui.on_event(ev.Welcomed("alice", ("alice", "bob"), False))
    clock[0] += 60
    ui.on_event(ev.ConnectionLost("the relay went silent", silent_for=5.0))
    ui.on_event(ev.Reconnecting(1, 0.5))
    assert "relay lost 5 s ago" in bar(ui, 100)
    clock[0] += 3
    assert "relay lost 8 s ago" in bar(ui, 100)


def test_a_move_to_another_relay_counts_from_the_last_datagram_too() -> None:
    status = LinkStatus(0.0, "joined").after(
        ev.RelayMoved("a:1", "b:2", "the relay went silent", 1, 0.0, silent_for=2.0), 10.0
    )
    assert status.since == 8.0
    later = status.after(ev.RelayMoved("b:2", "a:1", "it did not answer", 2, 1.0, 9.0), 20.0)
    assert later.since == 8.0  # the same outage goes on


@pytest.mark.parametrize("width", [40, 49, 55])
def test_a_narrow_status_bar_cuts_the_rejoin_with_an_ellipsis(
    clock: list[float], width: int
) -> None:
    ui = InteractiveUI(colour=False, stderr=io.StringIO())
    ui._handle = Handle()  # type: ignore[assignment]
    ui.on_event(ev.Welcomed("alice", ("alice", "bob"), False))
    ui.on_event(ev.ConnectionLost("the relay went silent", silent_for=5.0))
    ui.on_event(ev.Reconnecting(3, 0.0))
    clock[0] += 7
    shown = bar(ui, width)
    assert len(shown) <= width
    assert "relay lost 12 s ago" in shown  # what matters most, whole
    assert shown.endswith("\u2026"), shown  # and a sign that there was more
    if width >= 49:
        assert "rejoin attempt 3" in shown
    whole = "relay lost 12 s ago  \u00b7  rejoin attempt 3: no answer for 7 s"
    assert bar(ui, 100) == f" alice: {whole}"
    # the prompt shows our nickname: the bar gives its room to the rest first
    assert bar(ui, 60) == f" {whole}"


def test_fit_cuts_the_last_state_part_and_keeps_the_first() -> None:
    state = [" relay lost 12 s ago", "rejoin attempt 3: no answer for 7 s"]
    assert fit(state, [], [], 200) == "  \u00b7  ".join(state)
    assert fit(state, [], [], 45) == " relay lost 12 s ago  \u00b7  rejoin attempt 3:\u2026"
    assert fit(state, [], [], 48) == " relay lost 12 s ago  \u00b7  rejoin attempt 3: no\u2026"
    assert fit(state, [], [], 28) == " relay lost 12 s ago\u2026"  # too little left to show
    assert fit(state, [], [], 12) == " relay lost\u2026"


def test_rejoin_attempts_are_worded_as_what_happens() -> None:
    first = plain_line(ev.Reconnecting(1, 0.5), now=0)
    later = plain_line(ev.Reconnecting(3, 4.0), now=0)
    assert first is not None and later is not None
    assert first.endswith("trying to rejoin (attempt 1)\u2026")
    assert later.endswith("rejoin attempt 3 starts in 4 s\u2026")
    assert "0.5" not in first  # not read as the rhythm of the retries
