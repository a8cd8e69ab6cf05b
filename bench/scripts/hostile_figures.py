"""What a stranger can get out of a relay: sessions from one host, and answer bytes per byte.

    PYTHONPATH=. python bench/scripts/hostile_figures.py [--seconds 20]  # uses tests/fakeclient.py

1. Sessions per host: a real relay (`RelayServer`, defaults) on 127.0.0.1 and as many real
   handshakes as the time allows, from distinct ports and from several loopback addresses
   (all of 127.0.0.0/8 is one machine), paced at the relay's JOIN rate so that the member cap,
   not the handshake bucket, is what stops them.
2. Answer amplification: every request pattern we could think of, sent by one member of a
   room of 10 (and 60 for the member list), each as a burst packed into as few DATA datagrams
   as it fits, on the simulated network (the same relay core, exact byte counts): the bytes
   the relay sent that member over the bytes it received from it, from its HELLO on.

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import time
import zlib

from udpchat import messages as m
from udpchat import wire
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.sim import PathModel, SimNetwork
from udpchat_bench.bareclient import BareClient

LOOPBACK = "127.0.0.1"
RELAY_SIM: Address = ("127.0.0.1", 9000)


def sessions_from_one_host(seconds: float, attempts: int = 200) -> tuple[int, int, dict[str, int]]:
    """(admitted, tried, refusals by reason) within ``seconds``."""
    refusals: dict[str, int] = {}
    admitted = tried = 0
    socks: list[socket.socket] = []
    # Defaults, but members are never timed out, so nobody makes room by going silent.
    config = RelayConfig(heartbeat=1.0, timeout=3600.0)
    with RelayServer(RelayOptions(host=LOOPBACK, port=0, config=config)) as relay:
        deadline = time.monotonic() + seconds
        pace = 1 / (RelayConfig().handshake_rate * 0.95)
        try:
            for i in range(attempts):
                if time.monotonic() >= deadline:
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((f"127.0.0.{1 + i % 3}", 0))  # three loopback addresses, one machine
                sock.settimeout(1.0)
                nonce = os.urandom(wire.NONCE_SIZE)
                tried += 1
                outcome = _handshake(sock, relay.address, nonce, f"s{i}")
                if outcome is None:
                    admitted += 1
                else:
                    refusals[outcome] = refusals.get(outcome, 0) + 1
                if tried > RelayConfig().handshake_burst:
                    time.sleep(pace)
        finally:
            for sock in socks:
                sock.close()
    return admitted, tried, refusals


def _handshake(sock: socket.socket, relay: Address, nonce: bytes, nick: str) -> str | None:
    """None if admitted, else why not."""
    client = BareClient(nick, nonce, os.urandom, retry_s=math.inf)  # one try, no retries
    for _ in range(4):
        for data in client.take_datagrams(time.monotonic()):
            sock.sendto(data, relay)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return "no answer"
        client.receive(wire.decode_datagram(data), time.monotonic())
        if client.link is not None:
            return None
        if client.reject is not None:
            return client.reject.reason
    return "no ACCEPT"


def answer_ratio(requests: list[m.Message], room: int = 10, spread: float = 0.0) -> float:
    net = SimNetwork(seed=5, default=PathModel())
    relay = RelayCore(RelayConfig(max_members_per_host=1000), 0.0, random.Random(5).randbytes)
    net.attach(RELAY_SIM, relay)
    from tests.fakeclient import FakeClient

    def join(nick: str, addr: Address) -> FakeClient:
        client = FakeClient(nick, RELAY_SIM, seed=zlib.crc32(repr(addr).encode()))
        client.heartbeat = 1.0
        net.attach(addr, client)
        net.run_until(lambda: client.joined or client.reject is not None, 5)
        return client

    for i in range(room):
        join(f"member{i:02}", (f"192.0.2.{i + 10}", 4000))
    attacker_addr: Address = ("198.51.100.66", 4000)
    counts = [0, 0]

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == attacker_addr:
            counts[0] += len(data)
        elif dst == attacker_addr:
            counts[1] += len(data)

    net.taps.append(tap)
    attacker = join("mallory", attacker_addr)
    for message in requests:
        attacker.send(message)
        if spread:
            net.run(spread)
    net.run(2.0)
    return counts[1] / counts[0]


PATTERNS: list[tuple[str, list[m.Message], int, float]] = [
    ("287 WHO in one datagram", [m.Who()] * 287, 10, 0.0),
    ("10 WHO in one datagram", [m.Who()] * 10, 10, 0.0),
    ("WHO every 0.1 s for 20 s, room of 60", [m.Who()] * 200, 60, 0.1),
    ("250 empty SAY", [m.Say("")] * 250, 10, 0.0),
    ("200 PRIVATE_SEND to nobody", [m.PrivateSend("x", "y")] * 200, 10, 0.0),
    ("250 invalid NICK", [m.NickRequest("/")] * 250, 10, 0.0),
    ("250 NICK already taken", [m.NickRequest("member00")] * 250, 10, 0.0),
    ("12 SAY of 17,000 bytes", [m.Say("x" * 17_000)] * 12, 10, 0.0),
    ("100 renames", [m.NickRequest(f"n{i}") for i in range(100)], 10, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time for the session test")
    args = parser.parse_args()
    admitted, tried, refusals = sessions_from_one_host(args.seconds)
    print(f"sessions from one host: {admitted} admitted of {tried} tried in {args.seconds:g} s")
    for reason, count in sorted(refusals.items(), key=lambda kv: -kv[1]):
        print(f"  {count:4d} refused: {reason}")
    print("answer bytes per request byte, from the HELLO on:")
    worst = 0.0
    for name, requests, room, spread in PATTERNS:
        ratio = answer_ratio(requests, room, spread)
        worst = max(worst, ratio)
        print(f"  {ratio:5.2f}x  {name}")
    print(f"largest: {worst:.2f}x")


if __name__ == "__main__":
    main()
