"""One line's way through udpchat at 0% loss, hop by hop: where its milliseconds go.

A relay (``RelayServer``) and two members (``ChatClient``, a sender and a receiver) run in
three processes on 127.0.0.1, as ``udpchat relay`` and ``udpchat join`` run them; each
transport is wrapped so that every datagram sent and received is stamped with
``time.monotonic()`` (one clock for all three processes). The sender says ``--lines`` lines
at ``--rate`` a second; reported are the percentiles of the line's one-way latency (``say``
called to the receiver's ``MessageReceived``) and the medians of its stages: ``say`` to the
sender's DATA leaving, that DATA reaching the relay, the relay's turn to the receiver's copy
leaving (and whether the copy left before the poster's POSTED), the copy reaching the
receiver, and the receiver's turn to its event.

    python bench/scripts/latency_hops.py --lines 250 --rate 50

Run it alternately from two checkouts to compare them (the machine's load moves every
figure); nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from dataclasses import replace
from typing import Any

from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.events import ClientEvent, MessageReceived
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.wire import DatagramType, datagram_type

DATA = int(DatagramType.DATA)
Stamp = tuple[str, float, int, int]  # (tx or rx, when, datagram type, peer port)


def stamp(owner: Any, log: list[Stamp]) -> None:
    """Wrap ``owner``'s transport so that every datagram is stamped into ``log``."""
    inner = owner._transport

    class Stamped:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        @property
        def local_address(self) -> Any:
            return inner.local_address

        def sendto(self, data: bytes, addr: Any) -> None:
            log.append(("tx", time.monotonic(), _kind(data), addr[1]))
            inner.sendto(data, addr)

        def recvfrom(self, timeout: float | None) -> Any:
            got = inner.recvfrom(timeout)
            if got is not None:
                log.append(("rx", time.monotonic(), _kind(got[0]), got[1][1]))
            return got

    owner._transport = Stamped()


def _kind(data: bytes) -> int:
    kind = datagram_type(data)
    return -1 if kind is None else int(kind)


def relay(queue: Any, stop: Any) -> None:
    config = replace(RelayConfig(), flood_burst=10**9, flood_rate=1e9)
    server = RelayServer(RelayOptions(host="127.0.0.1", port=0, config=config))
    log: list[Stamp] = []
    stamp(server, log)
    server.start()
    queue.put(server.address)
    stop.wait()
    queue.put(log)
    server.stop(goodbye=False)


def receiver(address: Any, queue: Any, stop: Any) -> None:
    got: list[tuple[float, str]] = []

    def on_event(event: ClientEvent) -> None:
        if isinstance(event, MessageReceived) and not event.own:
            got.append((time.monotonic(), event.text))

    client = ChatClient(ClientOptions(nick="rx", server=address, pace=False), on_event=on_event)
    log: list[Stamp] = []
    stamp(client, log)
    client.start()
    client.wait_joined(10)
    queue.put(client.local_address[1])
    stop.wait()
    queue.put((got, log))
    client.close()


def first_after(times: list[float], t: float) -> float | None:
    later = [x for x in times if x >= t]
    return min(later) if later else None


def median_gap(starts: list[float], ends: list[float]) -> float:
    gaps = [e - s for s in starts if (e := first_after(ends, s)) is not None]
    return 1000 * statistics.median(gaps) if gaps else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=250)
    parser.add_argument("--rate", type=float, default=50.0)
    options = parser.parse_args()
    ctx = mp.get_context("fork")
    relay_q, receiver_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    relay_p = ctx.Process(target=relay, args=(relay_q, stop))
    relay_p.start()
    address = relay_q.get(timeout=10)
    receiver_p = ctx.Process(target=receiver, args=(address, receiver_q, stop))
    receiver_p.start()
    receiver_port = receiver_q.get(timeout=15)
    client = ChatClient(ClientOptions(nick="tx", server=address, pace=False))
    log: list[Stamp] = []
    stamp(client, log)
    client.start()
    try:
        client.wait_joined(10)
        time.sleep(0.3)
        said: dict[str, float] = {}
        for i in range(options.lines):
            said[f"m{i}"] = time.monotonic()
            client.say(f"m{i}")
            time.sleep(1 / options.rate)
        time.sleep(0.5)
    finally:
        stop.set()
    got, receiver_log = receiver_q.get(timeout=15)
    relay_log = relay_q.get(timeout=15)
    client.close()
    relay_p.join(5)
    receiver_p.join(5)

    latency = sorted(1000 * (t - said[text]) for t, text in got if text in said)
    if not latency:
        raise SystemExit("no line arrived")
    n = len(latency)
    sender_tx = [t for kind, t, typ, _ in log if kind == "tx" and typ == DATA]
    relay_rx = [t for kind, t, typ, _ in relay_log if kind == "rx" and typ == DATA]
    relay_tx = [(t, port) for kind, t, typ, port in relay_log if kind == "tx" and typ == DATA]
    copies = [t for t, port in relay_tx if port == receiver_port]
    others = [t for t, port in relay_tx if port != receiver_port]
    receiver_rx = [t for kind, t, typ, _ in receiver_log if kind == "rx" and typ == DATA]
    events = [t for t, _ in got]
    copy_first = 0
    for s in relay_rx:
        copy, other = first_after(copies, s), first_after(others, s)
        copy_first += copy is not None and other is not None and copy < other
    print(
        f"{n} of {options.lines} lines: p50 {latency[n // 2]:.3f} ms, p90 "
        f"{latency[int(0.9 * n)]:.3f} ms, p99 {latency[min(n - 1, int(0.99 * n))]:.3f} ms"
    )
    print("medians, ms:")
    says = list(said.values())
    print(f"  say() to the sender's DATA sent      {median_gap(says, sender_tx):.3f}")
    print(f"  sender's DATA to the relay           {median_gap(sender_tx, relay_rx):.3f}")
    print(f"  relay's turn to the receiver's copy  {median_gap(relay_rx, copies):.3f}")
    print(f"  copy to the receiver                 {median_gap(copies, receiver_rx):.3f}")
    print(f"  receiver's turn to its event         {median_gap(receiver_rx, events):.3f}")
    print(f"copy left before the poster's POSTED: {copy_first} of {len(relay_rx)} posts")


if __name__ == "__main__":
    main()
