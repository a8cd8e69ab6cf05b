"""How often a member's loop wakes, what it sends and what each message costs it, per message.

A relay (``RelayServer``, flood limits lifted) and two ``ChatClient``s run in this process on
loopback sockets: ``tx`` says a line every 1/rate s, ``rx`` receives the fan-out. Every turn of
each client's driver loop is counted and timed on the loop's thread CPU clock, and each
``say`` on the caller's; a turn that read nothing is a timer turn (a delayed ACK, a
retransmission, a wake-up after a ``say``).

    python bench/scripts/client_wakeups.py --rate 200 --seconds 3
    PYTHONPATH=/path/to/checkout python bench/scripts/client_wakeups.py --rate 50 200 1000

Output, per rate and client, per message said: turns, timer turns, datagrams sent and the
loop thread's CPU in µs. A diagnostic only: nothing is asserted. The machine's load shows in
the CPU figures; the counts are what to compare first.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.endpoint import Address
from udpchat.events import ClientEvent, MessageReceived
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer


class _Counted:
    """Counts and times one client's loop turns and sends."""

    def __init__(self, client: ChatClient) -> None:
        self.turns = self.timer_turns = self.sent = 0
        self.cpu = 0.0
        driver = client._driver
        turn, send = driver._turn, driver.transport.sendto

        def counted_turn(got: Any, slept: float, timer: float | None) -> None:
            self.turns += 1
            self.timer_turns += got is None
            start = time.thread_time()
            turn(got, slept, timer)
            self.cpu += time.thread_time() - start

        def counted_send(data: bytes, addr: Address) -> None:
            self.sent += 1
            send(data, addr)

        driver._turn = counted_turn  # type: ignore[method-assign]
        driver.transport.sendto = counted_send  # type: ignore[method-assign]

    def per(self, n: int) -> str:
        return (
            f"turns {self.turns / n:.2f}, timer turns {self.timer_turns / n:.2f},"
            f" sent {self.sent / n:.2f}, loop CPU {self.cpu / n * 1e6:.0f} us"
        )


def run(rate: float, seconds: float) -> None:
    config = replace(RelayConfig(), flood_burst=10**9, flood_rate=1e9)
    relay = RelayServer(RelayOptions(host="127.0.0.1", port=0, config=config)).start()
    received: list[ClientEvent] = []

    def keep(event: ClientEvent) -> None:
        if isinstance(event, MessageReceived) and not event.own:
            received.append(event)

    rx = ChatClient(ClientOptions("rx", relay.address, pace=False), on_event=keep).start()
    tx = ChatClient(ClientOptions("tx", relay.address, pace=False)).start()
    try:
        if not (rx.wait_joined(5.0) and tx.wait_joined(5.0)):
            raise RuntimeError("the clients did not join")
        time.sleep(0.3)
        counted = {"rx": _Counted(rx), "tx": _Counted(tx)}
        n = max(1, round(rate * seconds))
        start = time.monotonic()
        said = 0.0
        for i in range(n):
            before = time.thread_time()
            tx.say(f"line {i}")
            said += time.thread_time() - before
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(0.2)
        print(f"{rate:g}/s, {n} lines, {len(received)} received")
        for name, count in counted.items():
            print(f"  {name}: per line: {count.per(n)}")
        print(f"  say() on the caller's thread: {said / n * 1e6:.0f} us per line")
    finally:
        tx.close()
        rx.close()
        relay.stop(goodbye=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, nargs="+", default=[50.0, 200.0, 1000.0])
    parser.add_argument("--seconds", type=float, default=3.0)
    ns = parser.parse_args()
    for rate in ns.rate:
        run(rate, ns.seconds)


if __name__ == "__main__":
    main()
