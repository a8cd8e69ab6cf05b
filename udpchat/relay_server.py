"""The relay's shell: one UDP socket and one thread moving bytes and time into ``RelayCore``.

All protocol decisions live in the core; this module only receives, asks the core what to
send, sends it, sleeps until the core's next timer, and logs what the core reports.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from udpchat import faults
from udpchat.endpoint import Address
from udpchat.impair import ImpairmentConfig
from udpchat.memory import give_back_free_memory
from udpchat.noise import DHLEN
from udpchat.relay.config import RelayConfig, RelayStats
from udpchat.relay.core import RelayCore
from udpchat.relay.events import (
    DatagramDropped,
    MemberAdmitted,
    MemberMoved,
    MemberRemoved,
    MemberRenamed,
    RelayEvent,
)
from udpchat.sanitize import safe_text
from udpchat.seal import room_key
from udpchat.signals import interrupt_on_signals
from udpchat.transport import (
    DatagramTransport,
    ErrorLog,
    ImpairedTransport,
    UdpTransport,
    format_address,
)

log = logging.getLogger("udpchat.relay")

# How many queued datagrams one wake-up takes in before flushing: under load, replies to
# many inputs leave together and the link bundles messages into fewer datagrams.
MAX_BATCH = 64
# Datagrams encoded per turn before they are sent: a large fan-out starts leaving early.
SEND_BATCH = 64
# Longest sleep without a timer, so that a stop request is never missed for long.
IDLE_WAIT = 0.5
# Bytes of members' receive buffers released (sessions gone, gaps filled) after which the
# relay asks the C allocator to give free memory back to the system; or fewer, once the
# members hold nothing at all any more.
GIVE_BACK_AFTER = 8 * 1024 * 1024
GIVE_BACK_WHEN_EMPTY = 1024 * 1024


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


class RelayServer:
    """A running relay. ``start()`` serves in a thread; ``stop()`` says goodbye to members."""

    def __init__(self, options: RelayOptions, transport: DatagramTransport | None = None) -> None:
        """Serve on ``transport`` when given (a fake in tests), otherwise on a UDP socket
        bound to the options' host and port."""
        self.options = options
        if transport is None:
            transport = UdpTransport.bind(options.host, options.port)
        if options.impairment is not None and not options.impairment.is_noop:
            transport = ImpairedTransport(transport, options.impairment)
        self._transport = transport
        self._lock = threading.Lock()
        self._core = RelayCore(
            options.config,
            time.monotonic(),
            secrets.token_bytes,
            wall_offset=time.time() - time.monotonic(),
            room_key=room_key(options.key) if options.key else None,
            static_key=options.static_key
            if options.static_key is not None
            else secrets.token_bytes(DHLEN),
        )
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_report = time.monotonic()
        self._drops_since_report = 0
        # Exceptions a core call raised and the loop survived (see udpchat.faults).
        self.internal_errors = 0
        # Sends the transport refused, by errno: each lost one datagram, nothing more.
        self.send_errors_by_errno: dict[int, int] = {}
        self._send_errors = ErrorLog("sendto", self.send_errors_by_errno)
        self._failure: str | None = None

    @property
    def address(self) -> Address:
        return self._transport.local_address

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

    def members(self) -> list[str]:
        with self._lock:
            return self._core.member_nicks()

    def start(self) -> RelayServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="udpchat-relay", daemon=True
        )
        self._thread.start()
        return self

    @property
    def failure(self) -> str | None:
        """Why serving ended, when it ended other than by ``stop()``; otherwise None."""
        return self._failure

    def serve_forever(self) -> None:
        """Serve until ``stop()``; then run the core's shutdown until members acknowledged."""
        try:
            self._serve()
            if not self._stopping.is_set():
                self._failure = "serving ended without being asked to stop"
        except BaseException as error:
            self._failure = f"{type(error).__name__}: {error}"
            raise
        finally:
            self._transport.close()
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once serving has ended; False after ``timeout``.

        Unlike ``Thread.join``, safe to interrupt with Ctrl-C: on Python before 3.12 a join
        interrupted by KeyboardInterrupt marks a running thread as finished, and a later
        ``stop()`` would return before the goodbye was sent.
        """
        return self._done.wait(timeout)

    def _serve(self) -> None:
        core, transport = self._core, self._transport
        while True:
            with self._lock:
                timer = self._next_timer()
                closed = core.closed
            if closed:
                break
            now = time.monotonic()
            wait = IDLE_WAIT if timer is None else min(max(timer - now, 0.0), IDLE_WAIT)
            got = transport.recvfrom(wait)
            with self._lock:
                now = time.monotonic()
                for _ in range(MAX_BATCH):
                    if got is None:
                        break
                    self._receive(got[0], got[1], now)
                    got = transport.recvfrom(0.0)
                if got is not None:
                    self._receive(got[0], got[1], now)
                timer = self._next_timer()
                if timer is not None and timer <= now:
                    self._handle_timer(now)
                out = self._output(now)
                events = core.events()
                give_back = core.receive_budget.take_released(GIVE_BACK_AFTER, GIVE_BACK_WHEN_EMPTY)
            while True:
                for data, addr in out:
                    self._send(data, addr)
                if len(out) < SEND_BATCH:
                    break
                with self._lock:
                    out = self._output(time.monotonic())
            self._log(events)
            if give_back:
                give_back_free_memory()
            if self._stopping.is_set() and not core.shutting_down:
                break  # stop() was asked not to say goodbye

    # One datagram must never end the loop: a core call that raises loses what that call
    # was doing (the datagram, this turn's timers or output), is reported, and serving goes on.

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        try:
            self._core.receive_datagram(data, addr, now)
        except Exception as error:
            self._internal_error("RelayCore.receive_datagram", error)

    def _next_timer(self) -> float | None:
        try:
            return self._core.next_timer()
        except Exception as error:
            self._internal_error("RelayCore.next_timer", error)
            return None

    def _handle_timer(self, now: float) -> None:
        try:
            self._core.handle_timer(now)
        except Exception as error:
            self._internal_error("RelayCore.handle_timer", error)

    def _output(self, now: float) -> list[tuple[bytes, Address]]:
        try:
            return self._core.datagrams_to_send(now, SEND_BATCH)
        except Exception as error:
            self._internal_error("RelayCore.datagrams_to_send", error)
            return []

    def _internal_error(self, where: str, error: Exception) -> None:
        self.internal_errors += 1
        faults.report(where, error, log)  # re-raises in strict mode

    def _send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; a send that fails loses that datagram and nothing else."""
        try:
            self._transport.sendto(data, addr)
        except OSError as error:
            self._send_errors.failed(error, time.monotonic())

    def stop(self, reason: str = "stopped by its operator", goodbye: bool = True) -> None:
        """Tell members (``goodbye``) and stop; returns once the serving thread has ended."""
        with self._lock:
            if goodbye and not self._core.shutting_down:
                self._core.shutdown(reason, time.monotonic())
            self._stopping.set()
        self._transport.wake()  # act now, not after the receiver's idle wait
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._core.config.shutdown_grace + 2 * IDLE_WAIT + 1)
        if thread is None:
            self._transport.close()
            self._done.set()

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self, events: list[RelayEvent]) -> None:
        for event in events:
            if isinstance(event, MemberAdmitted):
                how = "rejoined" if event.resumed else "joined"
                log.info("%s %s from %s", event.nick, how, format_address(event.addr))
            elif isinstance(event, MemberRemoved):
                # A quit message is a stranger's text: never raw on the operator's terminal.
                shown = event.text != event.reason  # a timeout's text repeats its reason
                text = f": {safe_text(event.text)}" if event.text and shown else ""
                log.info("%s left (%s)%s", event.nick, event.reason, text)
            elif isinstance(event, MemberRenamed):
                log.info("%s is now %s", event.old, event.new)
            elif isinstance(event, MemberMoved):
                log.info(
                    "%s moved from %s to %s",
                    event.nick,
                    format_address(event.old),
                    format_address(event.new),
                )
            elif isinstance(event, DatagramDropped):
                self._drops_since_report += 1
                log.debug(
                    "dropped a datagram from %s: %s", format_address(event.addr), event.reason
                )
        now = time.monotonic()
        if self._drops_since_report and now - self._last_drop_report >= 10:
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
    try:  # a Ctrl-C from here on is a goodbye, however early it comes
        server.start()
        log.info(
            "udpchat relay listening on %s%s", shown, " (room key set)" if options.key else ""
        )
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        log.info("shutting down: telling %d members", len(server.members()))
        server.stop()
    if server.failure is not None:
        log.error("the relay stopped serving: %s", server.failure)
        return 1
    return 0
