"""The relay's shell: ``RelayCore`` on a UDP socket, run by :class:`~udpchat.driver.Driver`.

All protocol decisions live in the core and the serving loop in the driver; this module
only builds them, says goodbye on ``stop()``, logs what the core reports and gives memory
back to the system once members released a lot of it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from udpchat import wire
from udpchat.driver import STOP_TIMEOUT, Driver
from udpchat.endpoint import Address
from udpchat.impair import ImpairmentConfig
from udpchat.impaired import ImpairedTransport
from udpchat.memory import give_back_free_memory, settle_heap
from udpchat.noise import DHLEN
from udpchat.relay.config import RelayConfig, RelayStats
from udpchat.relay.core import RelayCore
from udpchat.relay.events import (
    DatagramDropped,
    MemberAdmitted,
    MemberMoved,
    MemberNickChanged,
    MemberRemoved,
    RelayEvent,
    RoomNotice,
)
from udpchat.relay.room_log import RoomLog
from udpchat.sanitize import safe_text
from udpchat.seal import room_key
from udpchat.signals import interrupt_on_signals
from udpchat.stores import MEMORY, Background, StoreURL, open_store, parse_store
from udpchat.transport import (
    DatagramTransport,
    SocketBuffers,
    UdpTransport,
    format_address,
)

__all__ = [
    "DROP_REPORT_EVERY", "GIVE_BACK_AFTER", "GIVE_BACK_WHEN_EMPTY", "SEND_BATCH", "RelayOptions",
    "RelayServer", "run_relay",
]

log = logging.getLogger("udpchat.relay")

# Datagrams encoded per slice before they are sent: a large fan-out starts leaving early.
SEND_BATCH = 64
# Bytes of members' receive buffers released (sessions gone, gaps filled) after which the
# relay asks the C allocator to give free memory back to the system; or fewer, once the
# members hold nothing at all any more.
GIVE_BACK_AFTER = 8 * 1024 * 1024
GIVE_BACK_WHEN_EMPTY = 1024 * 1024
# Seconds between two summaries of the bad datagrams dropped.
DROP_REPORT_EVERY = 10.0

# Bytes asked for each of the socket's receive and send buffers: room for a burst of
# handshakes (a room rejoining at once) beyond the system's usual 208 KiB, but not for
# seconds of work. When the relay is behind for long (a thousand members joining while each
# join is fanned out to all), a large buffer only delays every datagram: acknowledgements
# arrive after retransmission timers fired and the retransmissions add to the load. Measured
# with `udpchat load --members 1000 --join-rate 50` on 2 cores: 4 MiB made the median join
# 15 times slower than 1 MiB, which also halved the drops of the system's default.
# Linux grants at most net.core.rmem_max / wmem_max and reports twice what it granted.
SOCKET_BUFFER = 1024 * 1024


class _Chores:
    """An item of the driver's hand-out that is not an event: the serving loop has work to
    do off the lock (giving memory back, a summary of drops due). The driver hands out only
    when there are items, so a turn that has such work adds this."""


_CHORES = _Chores()


@dataclass(frozen=True)
class RelayOptions:
    """Everything ``udpchat relay`` can be told, with the library's defaults."""

    host: str = "127.0.0.1"
    port: int = 9000
    config: RelayConfig = field(default_factory=RelayConfig)
    impairment: ImpairmentConfig | None = None
    key: str | None = None
    # The relay's static X25519 private key, its identity (protocol.md 4). None: a fresh one
    # at start, so clients that pinned an earlier one refuse this relay.
    static_key: bytes | None = None
    # Receive and send buffer of the relay's socket, in bytes (0: the system's default).
    socket_buffer: int = SOCKET_BUFFER
    # Where the room log is kept (udpchat.stores): the library keeps the room in memory, so
    # that tests and demos leave nothing behind; ``udpchat relay`` defaults to a SQLite file.
    # A room kept in a file is carried on by a relay restarted with the same static key.
    store: StoreURL = field(default_factory=lambda: parse_store(MEMORY))


class RelayServer:
    """A running relay. ``start()`` serves in a thread; ``stop()`` says goodbye to members."""

    def __init__(self, options: RelayOptions, transport: DatagramTransport | None = None) -> None:
        """Serve on ``transport`` when given (a fake in tests), otherwise on a UDP socket
        bound to the options' host and port. ``OSError`` if the port cannot be bound (before
        the store is opened: a second relay on a busy port hears that the port is busy, not
        that the first relay's store is in use); then ``StoreError`` if the room store cannot
        be used (and the socket is closed again)."""
        self.options = options
        self._udp: UdpTransport | None = None
        if transport is None:
            size = options.socket_buffer
            transport = self._udp = UdpTransport.bind(
                options.host, options.port, SocketBuffers(size, size)
            )
        try:
            self._room_log: RoomLog = open_store(
                options.store, options.config.history, secrets.token_bytes, options.config.timeout
            )
        except BaseException:
            if self._udp is not None:
                self._udp.close()
            raise
        try:
            self._driver: Driver[RelayEvent | _Chores] = self._serving(transport)
        except BaseException:  # nothing bound or opened outlives a relay that never was
            if self._udp is not None:
                self._udp.close()
            self._close_log()
            raise
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._give_back = False
        self._last_drop_report = time.monotonic()
        self._drops_since_report = 0
        self._failure: str | None = None


    def _serving(self, transport: DatagramTransport) -> Driver[RelayEvent | _Chores]:
        """The core and the driver that runs it on ``transport``."""
        if self.options.impairment is not None and not self.options.impairment.is_noop:
            transport = ImpairedTransport(transport, self.options.impairment)
        self._core = RelayCore(
            self.options.config,
            time.monotonic(),
            secrets.token_bytes,
            wall_offset=time.time() - time.monotonic(),
            room_key=room_key(self.options.key) if self.options.key else None,
            static_key=self.options.static_key
            if self.options.static_key is not None
            else secrets.token_bytes(DHLEN),
            room_log=self._room_log,
        )
        return Driver(
            self._core,
            transport,
            label="RelayCore",
            log=log,
            name="udpchat-relay",
            take=self._take,
            deliver=self._deliver,
            finished=lambda: self._core.closed,
            on_exit=self._ended,
            send_batch=SEND_BATCH,
            urgent=wire.is_handshake_request,
        )

    @property
    def _transport(self) -> DatagramTransport:
        return self._driver.transport

    @_transport.setter
    def _transport(self, transport: DatagramTransport) -> None:
        """Wrap the transport (to watch the traffic) before the relay starts."""
        self._driver.transport = transport

    @property
    def address(self) -> Address:
        return self._transport.local_address

    @property
    def socket_buffers(self) -> SocketBuffers | None:
        """The buffer sizes the kernel granted the relay's socket (None on a fake transport)."""
        return None if self._udp is None else self._udp.buffers

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped before the relay read them: its receive buffer was
        full. None where the system does not tell (or on a fake transport)."""
        return None if self._udp is None else self._udp.kernel_drops()

    @property
    def relay_key(self) -> bytes:
        """The relay's static public key, which clients check (and pin)."""
        return self._core.relay_key

    @property
    def stats(self) -> RelayStats:
        return self._core.stats

    @property
    def core(self) -> RelayCore:
        """For inspection in tests and benchmarks; call it only while the relay is stopped."""
        return self._core

    @property
    def internal_errors(self) -> int:
        """Exceptions a core call raised and serving survived (see udpchat.faults)."""
        return self._driver.internal_errors

    @property
    def send_errors_by_errno(self) -> dict[int, int]:
        """Sends the transport refused, by errno: each lost one datagram, nothing more."""
        return self._driver.send_errors_by_errno

    def members(self) -> list[str]:
        with self._driver.lock:
            return self._core.member_nicks()

    def start(self) -> RelayServer:
        self._start_store()
        self._driver.start()
        return self

    def _start_store(self) -> None:
        """A store with threads of its own (Redis: what the other relays do) starts them.
        What they bring is handled on their thread, under the driver's lock, and sent from
        there: a hand-off to the serving thread would add a wake-up to every event's way."""
        log_ = self._room_log
        if isinstance(log_, Background):
            driver, core = self._driver, self._core

            def arrived(now: float) -> None:
                driver.guard("handle_timer", lambda: core.handle_timer(now))

            log_.start(lambda: driver.call(arrived))

    @property
    def store_description(self) -> str | None:
        """Where a shared room is kept (for the start line); None for one of this relay."""
        log_ = self._room_log
        return log_.describe() if isinstance(log_, Background) else None

    @property
    def failure(self) -> str | None:
        """Why serving ended, when it ended other than by ``stop()``; otherwise None."""
        return self._failure

    def serve_forever(self) -> None:
        """Serve until ``stop()``; then run the core's shutdown until members acknowledged."""
        self._start_store()
        self._driver.run()

    def _ended(self, error: BaseException | None) -> None:
        if error is not None:
            self._failure = f"{type(error).__name__}: {error}"
        elif not self._stopping.is_set():
            self._failure = "serving ended without being asked to stop"
        self._transport.close()
        self._close_log()
        self._done.set()

    def _close_log(self) -> None:
        """Commit and close the room store; a failure is logged."""
        try:
            self._room_log.close()
        except Exception as error:  # the room may lose its last events; say so, once
            log.error("could not close the room store: %s", error)

    def wait(self, timeout: float | None = None) -> bool:
        """True once serving has ended; False after ``timeout``.

        Unlike ``Thread.join``, safe to interrupt with Ctrl-C: on Python before 3.12 a join
        interrupted by KeyboardInterrupt marks a running thread as finished, and a later
        ``stop()`` would return before the goodbye was sent.
        """
        return self._done.wait(timeout)

    def _take(self, now: float) -> list[RelayEvent | _Chores]:
        """What happened in the core since the last turn, and the chores now due (called
        locked)."""
        if self._core.receive_budget.take_released(GIVE_BACK_AFTER, GIVE_BACK_WHEN_EMPTY):
            self._give_back = True
        # a list of its own each time (the outbox hands its list over): ours to extend
        items = cast("list[RelayEvent | _Chores]", self._core.events())
        if self._give_back or (
            self._drops_since_report and now - self._last_drop_report >= DROP_REPORT_EVERY
        ):
            items.append(_CHORES)
        return items

    def _deliver(self, items: list[RelayEvent | _Chores]) -> None:
        self._log(items)
        if self._give_back:
            self._give_back = False
            give_back_free_memory()

    def stop(self, reason: str = "stopped by its operator", goodbye: bool = True) -> None:
        """Tell members (``goodbye``) and stop; returns once the serving thread has ended.

        With a goodbye, serving goes on until every member acknowledged it or the shutdown
        grace ran out (the core is then ``closed``)."""
        self._stopping.set()
        if goodbye:
            self._driver.call(self._shut_down(reason))
        else:
            self._driver.stop()
        if not self._driver.started:
            self._transport.close()
            self._close_log()
            self._done.set()
            return
        self._driver.join(self._core.config.shutdown_grace + STOP_TIMEOUT)

    def _shut_down(self, reason: str) -> Callable[[float], None]:
        def shut_down(now: float) -> None:
            if not self._core.shutting_down:
                self._core.shutdown(reason, now)

        return shut_down

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self, events: list[RelayEvent | _Chores]) -> None:
        for event in events:
            match event:
                case MemberAdmitted(nick=nick, addr=addr, resumed=resumed):
                    how = "rejoined" if resumed else "joined"
                    log.info("%s %s from %s", nick, how, format_address(addr))
                case MemberRemoved(nick=nick, reason=reason, text=text):
                    # A quit message is a stranger's text: never raw on the operator's terminal.
                    shown = text != reason  # a timeout's text repeats its reason
                    said = f": {safe_text(text)}" if text and shown else ""
                    log.info("%s left (%s)%s", nick, reason, said)
                case MemberNickChanged(old=old, new=new):
                    log.info("%s is now %s", old, new)
                case MemberMoved(nick=nick, old=old_addr, new=new_addr):
                    log.info(
                        "%s moved from %s to %s",
                        nick,
                        format_address(old_addr),
                        format_address(new_addr),
                    )
                case RoomNotice(text=text):  # protocol.md 6.8: a room shared with others
                    log.info("%s", text)
                case DatagramDropped(reason=reason, addr=addr):
                    self._drops_since_report += 1
                    log.debug("dropped a datagram from %s: %s", format_address(addr), reason)
        if not self._drops_since_report:
            return  # the common turn: nothing to report, no clock read
        now = time.monotonic()
        if now - self._last_drop_report >= DROP_REPORT_EVERY:
            count = self._drops_since_report
            log.info(
                "dropped %d bad datagram%s in the last %.0f s (see --verbose)",
                count,
                "" if count == 1 else "s",
                now - self._last_drop_report,
            )
            self._drops_since_report = 0
            self._last_drop_report = now


def run_relay(options: RelayOptions, verbose: bool = False) -> int:
    """Serve in the foreground until Ctrl-C; the ``udpchat relay`` command.

    Returns 0 after Ctrl-C or SIGTERM, 1 when serving ended by itself: an operator or a
    supervisor must be able to tell a relay that was stopped from one that died.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    interrupt_on_signals()
    server = RelayServer(options)
    shown = format_address(server.address)
    settle_heap()  # before serving: this process is the relay, its start-up objects live as long
    try:  # a Ctrl-C from here on is a goodbye, however early it comes
        server.start()
        buffers = server.socket_buffers
        details = [
            *(["room key set"] if options.key else []),
            *([buffers.describe()] if buffers is not None else []),
        ]
        # "listening on HOST:PORT" comes first and alone: scripts and tests read it.
        log.info(
            "udpchat relay listening on %s%s", shown, f" ({'; '.join(details)})" if details else ""
        )
        shared = server.store_description
        if shared is not None:
            log.info("%s: %s so far", shared, _count(server.core.room_seq, "event"))
        elif options.store.path is not None:
            core = server.core
            dormant = len(core.sessions.dormant)
            log.info(
                "room kept in %s: %s so far, %s may resume",
                options.store,
                _count(core.room_seq, "event"),
                _count(dormant, "member"),
            )
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        present = len(server.members())
        log.info("shutting down: telling %s", _count(present, "member") if present else "nobody")
        drops = server.kernel_drops()
        server.stop()
        if drops:
            log.info(
                "the system dropped %d datagrams for the relay: its receive buffer was full "
                "(raise --socket-buffer and net.core.rmem_max)",
                drops,
            )
    if server.failure is not None:
        log.error("the relay stopped serving: %s", server.failure)
        return 1
    return 0


def _count(n: int, noun: str) -> str:
    """``1 member``, ``2 members``, ``1,000 events``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
