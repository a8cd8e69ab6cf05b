"""UDP datagrams from source port 0, which no ordinary socket can send: a raw socket (root).

The kernel delivers such datagrams like any other, and a relay that answers one sends to port
0, which fails. Used in the test process (as root) and, to attack a relay inside a private
network namespace, as ``ip netns exec NAME python -m tests.rawudp HOST PORT [KEY]``, which
sends :func:`attack` once and prints how many datagrams it sent.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from tests.fakeclient import stray_session
from udpchat import wire

UDP_HEADER = struct.Struct("!HHHH")  # source port, destination port, length, checksum


def can_send() -> tuple[bool, str]:
    """Whether this process may open a raw socket, and why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "raw sockets need root"
    return True, "ok"


def udp_datagram(payload: bytes, source_port: int, destination_port: int) -> bytes:
    """A UDP header and ``payload``; checksum 0 means "none", which IPv4 allows."""
    return UDP_HEADER.pack(source_port, destination_port, UDP_HEADER.size + len(payload), 0) + (
        payload
    )


class PortZeroSender:
    """Sends IPv4 UDP payloads with source port 0; the kernel adds the IP header."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        # A raw UDP socket also receives a copy of every UDP packet: it is never read.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def send(self, payload: bytes, to: tuple[str, int]) -> None:
        self._sock.sendto(udp_datagram(payload, 0, to[1]), (to[0], 0))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> PortZeroSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attack(key: str | None = None) -> list[bytes]:
    """One of each datagram that draws an answer from a relay that answers everything: a
    padded HELLO (CHALLENGE), a PING with a random token (RESET), a padded version-1
    request (REJECT VERSION), and random bytes. ``key`` changes nothing since protocol
    version 2: the room key enters only the JOIN's handshake, which needs a cookie first."""
    version_1 = bytearray(wire.encode_hello(os.urandom(8)))
    version_1[1] = 1
    return [
        wire.encode_hello(os.urandom(8)),
        stray_session(os.urandom(8)),
        bytes(version_1),
        os.urandom(wire.MIN_INITIAL_SIZE),
    ]


def main(argv: list[str]) -> int:
    host, port = argv[0], int(argv[1])
    key = argv[2] if len(argv) > 2 else None
    datagrams = attack(key)
    with PortZeroSender() as sender:
        for data in datagrams:
            sender.send(data, (host, port))
    print(len(datagrams))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
