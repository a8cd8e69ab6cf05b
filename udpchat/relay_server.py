"""The relay's shell: one UDP socket and one thread moving bytes and time into ``RelayCore``.

All protocol decisions live in the core; this module only receives, asks the core what to
send, sends it, sleeps until the core's next timer, and logs what the core reports.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field

from udpchat.impair import ImpairmentConfig
from udpchat.memory import give_back_free_memory
from udpchat.relay_core import (
    Address,
    DatagramDropped,
    MemberJoined,
    MemberLeft,
    MemberMoved,
    MemberRenamed,
    RelayConfig,
    RelayCore,
    RelayEvent,
    RelayStats,
)
from udpchat.sanitize import safe_text
from udpchat.seal import Sealer, derive_room_key
from udpchat.signals import interrupt_on_signals
from udpchat.transport import DatagramTransport, ImpairedTransport, UdpTransport

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


class RelayServer:
    """A running relay. ``start()`` serves in a thread; ``stop()`` says goodbye to members."""

    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        transport: DatagramTransport = UdpTransport.bind(options.host, options.port)
        if options.impairment is not None and not options.impairment.is_noop:
            transport = ImpairedTransport(transport, options.impairment)
        self._transport = transport
        sealer = Sealer(derive_room_key(options.key), os.urandom) if options.key else None
        self._lock = threading.Lock()
        self._core = RelayCore(
            options.config,
            time.monotonic(),
            secrets.token_bytes,
            wall_offset=time.time() - time.monotonic(),
            sealer=sealer,
        )
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_report = time.monotonic()
        self._drops_since_report = 0

    @property
    def address(self) -> Address:
        return self._transport.local_address

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

    def serve_forever(self) -> None:
        """Serve until ``stop()``; then run the core's shutdown until members acknowledged."""
        try:
            self._serve()
        finally:
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
                timer = core.next_timer()
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
                    core.receive_datagram(got[0], got[1], now)
                    got = transport.recvfrom(0.0)
                if got is not None:
                    core.receive_datagram(got[0], got[1], now)
                timer = core.next_timer()
                if timer is not None and timer <= now:
                    core.handle_timer(now)
                out = core.datagrams_to_send(now, SEND_BATCH)
                events = core.events()
                give_back = core.receive_budget.take_released(GIVE_BACK_AFTER, GIVE_BACK_WHEN_EMPTY)
            while True:
                for data, addr in out:
                    transport.sendto(data, addr)
                if len(out) < SEND_BATCH:
                    break
                with self._lock:
                    out = core.datagrams_to_send(time.monotonic(), SEND_BATCH)
            self._log(events)
            if give_back:
                give_back_free_memory()
            if self._stopping.is_set() and not core.shutting_down:
                break  # stop() was asked not to say goodbye
        transport.close()

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
            if isinstance(event, MemberJoined):
                how = "rejoined" if event.resumed else "joined"
                log.info("%s %s from %s:%d", event.nick, how, *event.addr)
            elif isinstance(event, MemberLeft):
                # A quit message is a stranger's text: never raw on the operator's terminal.
                shown = event.text != event.reason  # a timeout's text repeats its reason
                text = f": {safe_text(event.text)}" if event.text and shown else ""
                log.info("%s left (%s)%s", event.nick, event.reason, text)
            elif isinstance(event, MemberRenamed):
                log.info("%s is now %s", event.old, event.new)
            elif isinstance(event, MemberMoved):
                log.info("%s moved from %s:%d to %s:%d", event.nick, *event.old, *event.new)
            elif isinstance(event, DatagramDropped):
                self._drops_since_report += 1
                log.debug("dropped a datagram from %s:%d: %s", *event.addr, event.reason)
        now = time.monotonic()
        if self._drops_since_report and now - self._last_drop_report >= 10:
            log.info(
                "dropped %d bad datagrams in the last %.0f s (see --verbose)",
                self._drops_since_report,
                now - self._last_drop_report,
            )
            self._drops_since_report = 0
            self._last_drop_report = now


def run_relay(options: RelayOptions, verbose: bool = False) -> int:
    """Serve in the foreground until Ctrl-C; the ``udpchat relay`` command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    interrupt_on_signals()
    server = RelayServer(options)
    host, port = server.address
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log.info("udpchat relay listening on %s%s", shown, " (room key set)" if options.key else "")
    server.start()
    try:
        while not server.wait(0.5):
            pass
    except KeyboardInterrupt:
        log.info("shutting down: telling %d members", len(server.members()))
        server.stop()
    return 0
