"""The bots: a ``ChatClient`` each in the reliable run, a bare UDP socket each in the plain
run, and the plain UDP forwarder they register with. Every bot's socket sits behind its own
impairment, the same in both runs; the relay's and the forwarder's do not.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.demo.config import (
    JOIN_TIMEOUT_S,
    LOOPBACK,
    PLAIN_HELLO_RETRY_S,
    POLL_S,
    DemoConfig,
    bot_name,
)
from udpchat.demo.results import LinkNumbers, Recorder
from udpchat.endpoint import Address
from udpchat.events import (
    ClientEvent,
    ConnectionLost,
    HistoryGap,
    MessageReceived,
    MessageRefused,
)
from udpchat.impaired import ImpairedTransport
from udpchat.transport import UdpTransport

__all__ = [
    "MAX_DATAGRAM", "UDP_BYE", "UDP_DATA", "UDP_HELLO", "UDP_WELCOME", "Bot", "PlainBot",
    "ReliableBot", "run_forwarder",
]


class Bot(Protocol):
    """What a run needs of a bot, whichever network stack it speaks."""

    def send(self, text: str) -> None: ...

    def link_numbers(self) -> LinkNumbers: ...

    def close(self) -> None: ...


class ReliableBot:
    """A ``ChatClient`` whose events go to the recorder."""

    def __init__(
        self,
        index: int,
        relay: Address,
        config: DemoConfig,
        rec: Recorder,
        fallbacks: tuple[Address, ...] = (),
    ) -> None:
        self.index = index
        self._recorder = rec
        options = ClientOptions(
            nick=bot_name(index),
            server=relay,
            fallbacks=fallbacks,
            impairment=config.impairment(index),
            join_timeout=JOIN_TIMEOUT_S,
            pace=False,  # the demo relay's flood limits are raised to the bots' rate
        )
        self.client = ChatClient(options, on_event=self._on_event)

    def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, MessageReceived):
            if not event.own:
                self._recorder.delivered(self.index, event.text)
        elif isinstance(event, MessageRefused):
            self._recorder.count(self.index, "refused")
        elif isinstance(event, ConnectionLost):
            self._recorder.count(self.index, "connection_lost")
        elif isinstance(event, HistoryGap):
            self._recorder.count(self.index, "history_gaps")

    def send(self, text: str) -> None:
        self.client.say(text)

    def link_numbers(self) -> LinkNumbers:
        stats = self.client.stats()
        return LinkNumbers(
            retransmissions=int(stats["retransmissions"]),
            srtt_ms=float(stats["srtt_ms"]),
            reconnects=int(stats["reconnects"]),
        )

    def close(self) -> None:
        self.client.close()


class PlainBot:
    """A member of the plain UDP forwarder, its socket behind the same impairment."""

    def __init__(self, index: int, relay: Address, config: DemoConfig, rec: Recorder) -> None:
        self.index = index
        self._relay = relay
        self._recorder = rec
        self._transport = ImpairedTransport(
            UdpTransport.bind(LOOPBACK, 0), config.impairment(index)
        )
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self, timeout: float) -> bool:
        """Say hello until welcomed: registration must get through even though chat need not,
        or the run would measure missing members rather than lost messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._transport.sendto(UDP_HELLO, self._relay)
            retry = min(deadline, time.monotonic() + PLAIN_HELLO_RETRY_S)
            while (left := retry - time.monotonic()) > 0:
                got = self._transport.recvfrom(left)
                if got is not None and got == (UDP_WELCOME, self._relay):
                    self._thread = threading.Thread(
                        target=self._receive, name=f"demo-{bot_name(self.index)}", daemon=True
                    )
                    self._thread.start()
                    return True
        return False

    def _receive(self) -> None:
        while not self._closed.is_set():
            got = self._transport.recvfrom(POLL_S)
            if got is not None and got[1] == self._relay and got[0][:1] == UDP_DATA:
                text = got[0][1:].decode("utf-8", errors="replace")
                self._recorder.delivered(self.index, text)

    def send(self, text: str) -> None:
        self._transport.sendto(UDP_DATA + text.encode(), self._relay)

    def link_numbers(self) -> LinkNumbers:
        return LinkNumbers(retransmissions=None, srtt_ms=None, reconnects=0)

    def close(self) -> None:
        self._transport.sendto(UDP_BYE, self._relay)
        self._closed.set()
        self._transport.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)



# --- the plain UDP forwarder ----------------------------------------------------------------

UDP_HELLO = b"H"
UDP_WELCOME = b"W"
UDP_DATA = b"D"
UDP_BYE = b"B"
MAX_DATAGRAM = 65535


def run_forwarder(host: str, ready: Callable[[Address], None], stop: threading.Event) -> None:
    """Register members by a hello datagram and forward each data datagram, as is, to every
    other registered member, until ``stop``. Nothing is acknowledged or repeated: chat over
    bare UDP, what the reliable run is compared with."""
    # Dicts keep insertion order: fan-out order is join order, the same in every run.
    members: dict[Address, None] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(POLL_S)
        bound = sock.getsockname()
        ready((bound[0], bound[1]))
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:  # a timeout, or an ICMP error from an earlier send
                continue
            sender: Address = (addr[0], addr[1])
            kind = data[:1]
            if kind == UDP_DATA:
                for member in members:
                    if member != sender:
                        with contextlib.suppress(OSError):  # one lost datagram, as on the wire
                            sock.sendto(data, member)
            elif kind == UDP_HELLO:
                members[sender] = None
                with contextlib.suppress(OSError):
                    sock.sendto(UDP_WELCOME, sender)
            elif kind == UDP_BYE:
                members.pop(sender, None)
