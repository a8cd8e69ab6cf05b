"""Relay datagrams sent per join in a room of N, with and without batched join notices.

Real client sessions and the relay core on the simulated network (virtual clock, 2 ms each
way, no loss): N - K members join (with batched notices, so that setting up a big room
stays quick), then, under the notice window measured, K more join at RATE a second while
the relay's sent datagrams are counted; the figure is that count over K (the newcomer's
own handshake, WELCOME and history included; heartbeats every 30 s, so idle members cost
next to nothing while it counts).

    python bench/scripts/notice_cost.py 200 1000 --window 0.2 --window 0
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.client_support import relay_net
from udpchat.client.states import SessionState
from udpchat.relay.config import RelayConfig
from udpchat.sim import PathModel


def per_join(members: int, window: float, probes: int, rate: float) -> float:
    config = RelayConfig(
        max_members=max(1024, members),
        max_members_per_host=4096,
        max_members_per_network=4096,
        handshake_burst=4096,
        handshake_rate=1000.0,
        notice_window=RelayConfig().notice_window,
        heartbeat=30.0,  # idle members cost nothing while we count
        timeout=120.0,
    )
    nicks = tuple(f"m{i:04d}" for i in range(members))
    net, relay, sessions = relay_net(nicks, PathModel(delay=0.002), relay_config=config)
    settle = sessions[: members - probes]
    for s in settle:
        s.connect(net.now)
        net.run(0.002)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in settle), 600)
    net.run(1.0)
    relay.room.config = replace(relay.room.config, notice_window=window)
    before = relay.stats.datagrams_sent
    for s in sessions[members - probes :]:
        s.connect(net.now)
        net.run(1 / rate)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 60)
    net.run(window + 0.5)
    return (relay.stats.datagrams_sent - before) / probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--window", type=float, action="append")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    for window in args.window or [RelayConfig().notice_window]:
        for size in args.sizes:
            cost = per_join(size, window, args.probes, args.rate)
            print(
                f"N={size} window={window:g}s: {cost:.1f} relay datagrams sent per join", flush=True
            )


if __name__ == "__main__":
    main()
