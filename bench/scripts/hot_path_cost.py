"""CPU per operation of two steps every datagram or chat line takes, in this checkout.

* ``drain``: the driver's batch drain on a real loopback UDP socket: ``batch`` datagrams are
  queued, then taken with ``UdpTransport.recvfrom(0.0)`` until it returns None (one poll
  more than datagrams, as in ``Driver._turn``). Reported: thread CPU per datagram taken.
* ``nick_key``: the two keys a client computes per chat line it receives
  (``udpchat.names.nick_key`` of the sender and of its own nickname).

Run it from two checkouts alternately to compare them (the machine is shared, so alternate
and take medians):

    PYTHONPATH=/path/to/checkout python bench/scripts/hot_path_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from udpchat.names import nick_key
from udpchat.transport import UdpTransport


def drain_cost(batch: int, batches: int) -> float:
    """Thread CPU µs per datagram drained."""
    receiver = UdpTransport.bind("127.0.0.1")
    sender = UdpTransport.bind("127.0.0.1")
    payload = b"x" * 200
    spent = 0.0
    taken = 0
    try:
        for _ in range(batches):
            for _ in range(batch):
                sender.sendto(payload, receiver.local_address)
            time.sleep(0.001)  # let loopback deliver the whole batch
            start = time.thread_time()
            while receiver.recvfrom(0.0) is not None:
                taken += 1
            spent += time.thread_time() - start
    finally:
        receiver.close()
        sender.close()
    return spent / max(1, taken) * 1e6


def nick_key_cost(lines: int) -> float:
    """Thread CPU µs per chat line (two keys)."""
    nicks = [f"m{i % 10}" for i in range(lines)]
    start = time.thread_time()
    for nick in nicks:
        nick_key(nick) == nick_key("m1")  # noqa: B015 - the cost of the comparison is measured
    return (time.thread_time() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=500)
    ns = parser.parse_args()
    drains = [drain_cost(ns.batch, ns.batches) for _ in range(ns.rounds)]
    keys = [nick_key_cost(20_000) for _ in range(ns.rounds)]
    print(
        f"drain: {statistics.median(drains):.2f} us/datagram (median of {ns.rounds}; batch"
        f" {ns.batch}); nick_key per chat line: {statistics.median(keys):.2f} us"
    )


if __name__ == "__main__":
    main()
