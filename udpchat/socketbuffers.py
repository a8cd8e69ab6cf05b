"""The buffers of a UDP socket: sized on purpose, and what the kernel dropped for them.

A burst of datagrams that overflows a socket's receive buffer is lost in the kernel before
any code can count it. So a shell asks for the size it needs (``set_buffers``) and reports
what the kernel granted (Linux caps a request at ``net.core.rmem_max`` / ``wmem_max`` and
reports twice what it granted, for its bookkeeping), and ``kernel_drops`` reads the loss back
where the system counts it: the ``drops`` column of ``/proc/net/udp`` for the socket's inode.
Nothing here raises for a refused size or a system that does not count.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass

__all__ = ["SocketBuffers", "granted_buffers", "kernel_drops", "set_buffers"]


@dataclass(frozen=True)
class SocketBuffers:
    """Receive and send buffer sizes in bytes, as asked for or as the kernel reports them."""

    receive: int
    send: int

    def describe(self) -> str:
        return f"receive buffer {self.receive // 1024} KiB, send buffer {self.send // 1024} KiB"


def set_buffers(sock: socket.socket, wanted: SocketBuffers) -> SocketBuffers:
    """Ask for ``wanted`` (0 leaves a size at the system's default); return what was granted.

    A refusal is not an error: the socket keeps the size it had, which the result shows."""
    for option, size in ((socket.SO_RCVBUF, wanted.receive), (socket.SO_SNDBUF, wanted.send)):
        if size > 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
    return granted_buffers(sock)


# Linux reports twice the size it granted (the other half is its own bookkeeping, socket(7)).
_REPORTED_PER_GRANTED = 2 if sys.platform.startswith("linux") else 1


def granted_buffers(sock: socket.socket) -> SocketBuffers:
    """The sizes the socket's data may use: what was asked for, or the system's ceiling."""
    return SocketBuffers(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // _REPORTED_PER_GRANTED,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // _REPORTED_PER_GRANTED,
    )


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (a full receive buffer, mostly), from
    the ``drops`` column of ``/proc/net/udp`` or ``udp6`` for the socket's inode; None where
    the system does not say (not Linux, or the socket is closed)."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except (OSError, ValueError):
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None
