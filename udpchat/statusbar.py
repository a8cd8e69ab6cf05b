"""The status bar under the chat prompt: where the session stands, in as many columns as
the terminal has.

Its state comes from the session's events (connecting, joined, lost and rejoining), so the
bar can count the seconds of an outage (from the last datagram the relay was heard, which
the loss event tells) and tell when the next rejoin attempt starts without asking the client
anything. What does not fit is cut with an ellipsis, least important first, never dropped
without a sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from udpchat.events import (
    ClientEvent,
    Closed,
    ConnectionLost,
    JoinRejected,
    Reconnecting,
    RelayMoved,
    Welcomed,
)

__all__ = ["LinkStatus", "fit", "shorten"]


_MIN_CUT = 8  # the fewest characters of a cut status part worth showing, ellipsis included


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def fit(state: list[str], sending: list[str], extras: list[str], width: int) -> str:
    """The status bar's parts joined, as many as fit ``width``: the session's state first,
    then what is being sent (in full or as a count), then the rest.

    The state's parts come most important first; what does not fit of them is cut with an
    ellipsis (``relay lost 12 s ago  ·  rejoin attempt 3: no…``), never dropped without
    a sign, and a later part is shown only while at least a few of its characters fit."""
    separator = "  \u00b7  "
    line = shorten(state[0], max(width, 1)) if state else ""
    for part in state[1:]:
        room = width - len(line) - len(separator)
        if room < min(len(part), _MIN_CUT):
            if not line.endswith("\u2026"):
                line = shorten(line + "\u2026", max(width, 1))  # more was there: say so
            break
        line += separator + _cut(part, room)
    for options in (sending, extras):
        for option in options:
            if len(line) + len(separator) + len(option) <= width:
                line += separator + option
                break
    return line


def _cut(text: str, limit: int) -> str:
    """``text`` in ``limit`` characters, cut after a whole word when one fits."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    return (head[:space] if space >= _MIN_CUT - 1 else head) + "\u2026"


@dataclass(frozen=True)
class LinkStatus:
    """What the status bar says about the connection, derived from events as they come.

    ``since`` is when the current state began (monotonic seconds); while rejoining,
    ``attempt`` is the attempt under way or next, and ``attempt_at`` when it starts.
    """

    since: float
    state: Literal["connecting", "joined", "lost", "over"] = "connecting"
    attempt: int = 0
    attempt_at: float = 0.0

    def after(self, event: ClientEvent, now: float) -> LinkStatus:
        if isinstance(event, Welcomed):
            return LinkStatus(now, "joined")
        # An outage counts from the last datagram heard, not from when it was noticed.
        if isinstance(event, ConnectionLost):
            return LinkStatus(now - event.silent_for, "lost")
        if isinstance(event, (Reconnecting, RelayMoved)):
            since = self.since if self.state == "lost" else now
            if isinstance(event, RelayMoved) and self.state != "lost":
                since = now - event.silent_for
            return LinkStatus(since, "lost", event.attempt, now + event.delay)
        if isinstance(event, (Closed, JoinRejected)):
            return LinkStatus(now, "over")
        return self

    def rejoin(self, now: float) -> str:
        """``rejoin attempt 3 in 4 s``, or ``rejoin attempt 3: no answer yet``."""
        if self.attempt == 0:
            return "rejoining"
        if now < self.attempt_at:
            return f"rejoin attempt {self.attempt} in {self.attempt_at - now:.0f} s"
        return f"rejoin attempt {self.attempt}: no answer for {now - self.attempt_at:.0f} s"
