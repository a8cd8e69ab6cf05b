"""``udpchat demo``: a relay and bot members on loopback, chatting across a simulated bad network.

The same traffic runs twice under the same impairment. First over udpchat itself (a
``RelayServer`` and one ``ChatClient`` per bot), then as plain UDP datagrams through a
forwarder that repairs nothing. In both runs each bot's socket crosses the impairment in both
directions and the relay's does not, so every datagram between a bot and the relay crosses
exactly one simulated network. Each bot's impairment has the same seed in both runs (the fates
still differ datagram by datagram: the reliable run sends handshakes, ACKs and retransmissions
that the plain run does not).

Each bot sends ``messages`` chat lines at a steady ``rate``; each line names its sender and
number. Delivery latency runs from just before the sender's send call to the receiver's event,
both read from ``time.monotonic_ns`` in this one process. The verdict uses ``analyze``
(``udpchat.demo.delivery``): every bot must receive every other bot's messages exactly once,
in order.

``udpchat demo --cluster`` (``udpchat.demo.cluster``) runs the same traffic through three
relay processes sharing one room on a redis-server of the demo's own, kills one of them
halfway, and judges the room across the kill: every line once and in order, the killed
relay's bots moved, nobody seen leaving.

Modules: ``config`` (what to run), ``bots`` (who sends), ``run`` (driving one run),
``results`` (recording and verdicts), ``delivery`` (judging deliveries), ``display`` (what
is shown), ``cluster`` (the cluster run), ``cluster_report`` (its view and verdict),
``processes`` (its redis-server and relay processes).
"""

from __future__ import annotations

from udpchat.demo.config import (
    DEFAULT_NETWORK,
    DemoConfig,
    DemoError,
    bot_name,
    message_text,
    parse_text,
)
from udpchat.demo.display import comparison_table, print_result, verdict_table
from udpchat.demo.results import DemoResult, MemberVerdict, RunResult, percent
from udpchat.demo.run import run_demo

__all__ = [
    "DEFAULT_NETWORK", "DemoConfig", "DemoError", "DemoResult", "MemberVerdict", "RunResult",
    "bot_name", "comparison_table", "message_text", "parse_text", "percent", "print_result",
    "run_demo", "verdict_table",
]
