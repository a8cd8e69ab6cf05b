"""What the demo runs: the bots' bad network, the limits of a run, and the chat lines.

Each line names its sender and number, so that a receiver knows what it got without any other
channel: ``message_text`` makes one and ``parse_text`` reads one back.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from udpchat.errors import UsageError
from udpchat.impair import ImpairmentConfig

__all__ = [
    "DEFAULT_NETWORK", "JOIN_TIMEOUT_S", "LOOPBACK", "MAX_MEMBERS", "MAX_MESSAGES", "MAX_RATE",
    "MAX_SEND_DURATION_S", "PLAIN_HELLO_RETRY_S", "POLL_S", "SETTLE_S", "DemoConfig",
    "DemoError", "bot_name", "message_text", "parse_text",
]

LOOPBACK = "127.0.0.1"

DEFAULT_NETWORK = ImpairmentConfig(
    loss=0.25,
    delay=0.002,
    jitter=0.005,
    duplicate=0.02,
    reorder=0.05,
    reorder_delay=0.25,
)
"""The demo's bad network, crossed once in each direction by every bot: a quarter of the
datagrams lost, 2 ms +/- 5 ms of delay, 2% duplicated and 5% held back a quarter of a second
(long enough for the next messages of the same sender to overtake them)."""

MAX_MEMBERS = 32
MAX_MESSAGES = 10_000
MAX_RATE = 200.0
MAX_SEND_DURATION_S = 300.0
JOIN_TIMEOUT_S = 30.0  # the handshake backs off to 2 s between tries: slow at high loss
SETTLE_S = 0.3  # keep listening after the last delivery: late duplicates still count
POLL_S = 0.1  # how often the waiting thread looks at progress and refreshes the display
PLAIN_HELLO_RETRY_S = 0.2

_TEXT_RE = re.compile(r"^bot(\d+) message (\d+) of (\d+)$")


class DemoError(UsageError):
    """The demo could not run (a bot could not join, a relay did not start)."""


def bot_name(index: int) -> str:
    return f"bot{index + 1}"


def message_text(sender: int, msg_id: int, total: int) -> str:
    """The chat line bot ``sender`` sends as its message ``msg_id`` (0-based) of ``total``."""
    return f"{bot_name(sender)} message {msg_id + 1} of {total}"


def parse_text(text: str) -> tuple[int, int] | None:
    """``(sender, msg_id)`` from a line made by :func:`message_text`, or None."""
    match = _TEXT_RE.match(text)
    if match is None:
        return None
    sender, number = int(match.group(1)) - 1, int(match.group(2)) - 1
    if sender < 0 or number < 0:
        return None
    return sender, number



@dataclass(frozen=True)
class DemoConfig:
    """What to run. ``loss`` and ``seed`` override those of ``network``.

    ``drain_s`` bounds how long the reliable run waits for missing messages after the last
    send; the plain run waits only as long as a datagram can be held by the network.
    """

    members: int = 4
    messages: int = 50
    rate: float = 10.0
    loss: float = 0.25
    seed: int = 1
    network: ImpairmentConfig = DEFAULT_NETWORK
    drain_s: float = 15.0
    compare_plain: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.members, bool) or not 2 <= self.members <= MAX_MEMBERS:
            raise ValueError(f"members: expected 2 to {MAX_MEMBERS}, got {self.members}")
        if isinstance(self.messages, bool) or not 1 <= self.messages <= MAX_MESSAGES:
            raise ValueError(f"messages: expected 1 to {MAX_MESSAGES}, got {self.messages}")
        if not (math.isfinite(self.rate) and 0 < self.rate <= MAX_RATE):
            raise ValueError(f"rate: expected more than 0 and at most {MAX_RATE:g} messages/s")
        if (self.messages - 1) / self.rate > MAX_SEND_DURATION_S:
            raise ValueError(
                f"rate: {self.messages} messages at {self.rate:g}/s take longer than "
                f"{MAX_SEND_DURATION_S:g} s; raise the rate or send fewer"
            )
        if not (0.0 <= self.loss < 1.0):
            raise ValueError(f"loss: expected at least 0% and below 100%, got {self.loss * 100:g}%")
        if not (math.isfinite(self.drain_s) and 0 <= self.drain_s <= 600):
            raise ValueError(f"drain_s: expected 0 to 600 seconds, got {self.drain_s}")
        # Check the seed and the resulting impairment the way the network itself does.
        self.impairment(0)

    def impairment(self, member: int) -> ImpairmentConfig:
        """The network that bot ``member`` sees, the same in both runs."""
        base = replace(self.network, loss=self.loss, seed=self.seed)
        return base.derive(f"member{member}")

    @property
    def expected_per_member(self) -> int:
        return (self.members - 1) * self.messages

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = asdict(replace(self.network, loss=self.loss, seed=self.seed))
        return data


