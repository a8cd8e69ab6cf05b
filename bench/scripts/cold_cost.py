"""What a chat line costs on a CPU that was idle: thread CPU per operation against idle gap.

At chat rates every datagram is handled after the thread slept for milliseconds, and on this
machine (a virtual 2-core box) whatever ran there meanwhile has left the caches cold: the
same work costs several times more CPU than in a hot loop. Two measures, each after sleeping
``--gaps`` seconds before every operation, medians of thread CPU (``time.thread_time``):

* ``raw``: one msgpack encode of a 100-byte payload, one ChaCha20-Poly1305 seal and one
  ``send`` on a connected loopback UDP socket (the least any sealed datagram costs);
* ``say``: ``ChatClient.say`` on a client joined to a ``udpchat relay`` process on
  127.0.0.1 (its whole path: the driver's lock, the session, the link, the seal, sendto).

    python bench/scripts/cold_cost.py --gaps 0.0002 0.001 0.005 0.02 --count 300

A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e_support import RelayProcess
from udpchat.chat_client import ChatClient, ClientOptions


def after_gaps(operation: Callable[[int], object], gap: float, count: int) -> float:
    """Median thread CPU in µs of ``operation`` run ``count`` times, each after ``gap``."""
    spent = []
    for i in range(count):
        time.sleep(gap)
        start = time.thread_time()
        operation(i)
        spent.append((time.thread_time() - start) * 1e6)
    return statistics.median(spent)


def raw_costs(gaps: list[float], count: int) -> list[float]:
    aead = ChaCha20Poly1305(os.urandom(32))
    payload = b"x" * 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as out:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        out.connect(sink.getsockname())

        def seal_and_send(i: int) -> None:
            plain = msgpack.packb([1, 2, i, payload])
            out.send(aead.encrypt(i.to_bytes(12, "little"), plain, b"header"))

        costs = []
        for gap in gaps:
            costs.append(after_gaps(seal_and_send, gap, count))
            while True:  # what was sent is read outside the timed part
                try:
                    sink.recv(2048)
                except BlockingIOError:
                    break
        return costs


def say_costs(gaps: list[float], count: int) -> list[float]:
    limits = ("--flood-burst", "100000", "--flood-rate", "100000")
    with tempfile.TemporaryDirectory() as state:
        os.environ["XDG_STATE_HOME"] = state  # the relay's key, remembered here only
        relay = RelayProcess(*limits)
        try:
            client = ChatClient(
                ClientOptions("cold", server=relay.address, pace=False), lambda event: None
            ).start()
            try:
                if not client.wait_joined(10):
                    raise SystemExit("the client did not join the relay")
                return [
                    after_gaps(lambda i: client.say(f"line {i}"), gap, count) for gap in gaps
                ]
            finally:
                client.close()
        finally:
            relay.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0002, 0.001, 0.005, 0.02])
    parser.add_argument("--count", type=int, default=300)
    options = parser.parse_args()
    raw = raw_costs(options.gaps, options.count)
    say = say_costs(options.gaps, options.count)
    print("| idle gap | raw: msgpack + seal + send | ChatClient.say |")
    print("|---:|---:|---:|")
    for gap, r, s in zip(options.gaps, raw, say, strict=True):
        print(f"| {gap * 1000:g} ms | {r:.0f} µs | {s:.0f} µs |")


if __name__ == "__main__":
    main()
