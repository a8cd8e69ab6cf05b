"""The client's shell: a UDP socket, a receiver thread, and a lock around ``ClientSession``.

The session core is not thread-safe; every call into it, from the receiver thread or from
the user's thread, holds one lock and is followed by a flush of what it wants to send. Events
go to a callback (called from the receiver thread) or into a queue for ``next_event``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from udpchat import faults
from udpchat.client_core import ClientConfig, ClientSession, SessionState, Trust
from udpchat.endpoint import Address
from udpchat.events import ClientEvent, Closed, ConnectionLost, Welcomed
from udpchat.impair import ImpairmentConfig
from udpchat.link import LinkConfig
from udpchat.seal import room_key
from udpchat.transport import (
    DatagramTransport,
    ErrorLog,
    ImpairedTransport,
    UdpTransport,
    format_address,
    resolve,
)

T = TypeVar("T")
log = logging.getLogger("udpchat.client")

# Longest the receiver sleeps without a timer, so that closing is never missed for long.
IDLE_WAIT = 0.5
# Datagrams taken in per wake-up before the session gets to answer.
MAX_BATCH = 64
# A receiver that wakes this much later than it asked to was not running: the process was
# stopped (Ctrl-Z) or the machine slept. A relay lost in the seconds after that is lost
# because of the pause, not because of the relay.
PAUSE_NOTICED = 3.0
PAUSE_BLAMED = 10.0


@dataclass(frozen=True)
class ClientOptions:
    """Everything ``udpchat join`` can be told, with the library's defaults."""

    nick: str
    server: Address = ("127.0.0.1", 9000)
    impairment: ImpairmentConfig | None = None
    key: str | None = None
    link: LinkConfig = field(default_factory=LinkConfig)
    reconnect: bool = True
    join_timeout: float = 10.0
    # Keep requests under the relay's default flood limits; off for rooms (demos,
    # benchmarks) whose relay was given higher limits.
    pace: bool = True
    # Checks the relay's static public key at each handshake: None to go on, or the refusal
    # to show (protocol.md 4). None here: every relay key is trusted.
    trust: Trust | None = None


class ChatClient:
    """A chat member: ``start()`` joins in the background; methods send; events come back."""

    def __init__(
        self, options: ClientOptions, on_event: Callable[[ClientEvent], None] | None = None
    ) -> None:
        self.options = options
        # The psk itself is derived at the relay's CHALLENGE, which carries its key.
        key = room_key(options.key) if options.key else None
        family, server = resolve(*options.server)
        self._server = server
        bind_host = "::" if family.name == "AF_INET6" else "0.0.0.0"
        if server[0] in ("127.0.0.1", "::1", "localhost"):
            bind_host = server[0]
        udp = UdpTransport.bind(bind_host, 0)
        try:
            udp.connect(server)
        except OSError:
            udp.close()
            raise
        self._udp = udp
        self._label = format_address(options.server)
        transport: DatagramTransport = udp
        if options.impairment is not None and not options.impairment.is_noop:
            transport = ImpairedTransport(transport, options.impairment)
        self._transport = transport
        config = ClientConfig(
            nick=options.nick,
            link=options.link,
            reconnect=options.reconnect,
            join_timeout=options.join_timeout,
            pace_rate=ClientConfig.pace_rate if options.pace else 0.0,
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._session = ClientSession(
            config,
            secrets.token_bytes,
            time.monotonic(),
            key,
            wall_offset=time.time() - time.monotonic(),
            trust=options.trust,
        )
        self._on_event = on_event
        self._queue: queue.Queue[ClientEvent] = queue.Queue()
        # Events wait here, in the order the session emitted them, for the one thread at a
        # time that hands them out (both threads flush: each must not overtake the other).
        self._backlog: list[ClientEvent] = []
        self._dispatching = False
        self._thread: threading.Thread | None = None
        self._sleeping_until = 0.0
        self._last_look = 0.0
        self._closed = threading.Event()
        # What the shell knows and the session cannot: whether anything came back at all,
        # whether the system refused our datagrams, whether this process was paused.
        self._heard = 0
        self._refused_seen = 0
        self._ever_welcomed = False
        self._quitting = False
        self._pause: tuple[float, float] | None = None  # (resumed at, seconds paused)
        # Exceptions a session call raised and the shell survived (see udpchat.faults).
        self.internal_errors = 0
        # Sends the transport refused, by errno: each lost one datagram, nothing more.
        self.send_errors_by_errno: dict[int, int] = {}
        self._send_errors = ErrorLog("sendto", self.send_errors_by_errno)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> ChatClient:
        with self._lock:
            self._session.connect(time.monotonic())
        self._thread = threading.Thread(
            target=self._receive_loop, name="udpchat-client", daemon=True
        )
        self._thread.start()
        self._flush()
        return self

    def __enter__(self) -> ChatClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop at once, without saying goodbye (``quit`` is the polite way)."""
        self._closed.set()
        self._transport.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * IDLE_WAIT + 1)
        self._transport.close()

    @property
    def local_address(self) -> Address:
        return self._transport.local_address

    @property
    def state(self) -> SessionState:
        with self._lock:
            return self._session.state

    @property
    def nick(self) -> str:
        with self._lock:
            return self._session.nick

    @property
    def members(self) -> tuple[str, ...]:
        with self._lock:
            return self._session.members

    # --- what the user does -----------------------------------------------------------------

    def _call(self, action: Callable[[float], T]) -> T:
        with self._lock:
            result = action(time.monotonic())
        self._flush()
        return result

    def say(self, text: str) -> int:
        return self._call(lambda now: self._session.say(text, now))

    def action(self, text: str) -> int:
        return self._call(lambda now: self._session.action(text, now))

    def private(self, to: str, text: str) -> int:
        return self._call(lambda now: self._session.private(to, text, now))

    def change_nick(self, nick: str) -> int:
        return self._call(lambda now: self._session.change_nick(nick, now))

    def who(self) -> int:
        return self._call(lambda now: self._session.who(now))

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            s = self._session.stats
        link = s.link
        return {
            "srtt_ms": round(link.srtt * 1000, 2),
            "rto_ms": round(link.rto * 1000, 2),
            "datagrams_sent": link.datagrams_sent,
            "datagrams_received": link.datagrams_received,
            "retransmissions": link.retransmissions,
            "loss_estimate": round(link.loss_estimate, 4),
            "duplicates_dropped": link.duplicates,
            "messages_delivered": link.messages_delivered,
            "reconnects": s.reconnects,
            "bad_datagrams_dropped": s.malformed + s.wrong_session + s.replays + s.unexpected,
        }

    def quit(self, reason: str = "", timeout: float | None = None) -> None:
        """Leave politely: returns once the relay has the QUIT, or after the quit timeout."""
        self._quitting = True
        self._call(lambda now: self._session.quit(reason, now))
        limit = timeout if timeout is not None else self._session.config.quit_timeout + 1
        self.wait_closed(limit)
        self.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything sent has been acknowledged (and the session is joined)."""
        return self._wait(lambda: self._session.idle, timeout)

    def wait_closed(self, timeout: float) -> bool:
        return self._wait(lambda: self._session.state is SessionState.CLOSED, timeout)

    def wait_joined(self, timeout: float) -> bool:
        return self._wait(lambda: self._session.state is SessionState.JOINED, timeout)

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = end - time.monotonic()
                over = self._closed.is_set() or self._session.state is SessionState.CLOSED
                if remaining <= 0 or over:
                    return condition()
                self._changed.wait(min(remaining, IDLE_WAIT))
            return True

    # --- events -----------------------------------------------------------------------------

    def next_event(self, timeout: float | None = None) -> ClientEvent | None:
        """The next event (when no callback was given), or None after ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def iter_events(self, timeout: float) -> Iterator[ClientEvent]:
        """Events until none arrives for ``timeout`` seconds or the session closes."""
        while (event := self.next_event(timeout)) is not None:
            yield event
            if isinstance(event, Closed):
                return

    # --- the receiver thread ----------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the session wants to send and hand out its events; wake the receiver
        if the session's next timer is now earlier than the receiver's sleep."""
        with self._lock:
            now = time.monotonic()
            out = self._guarded("datagrams_to_send", lambda: self._session.datagrams_to_send(now))
            self._backlog.extend(self._explained(e) for e in self._session.events())
            timer = self._guarded("next_timer", self._session.next_timer)
            self._changed.notify_all()
        for data in out or ():
            try:
                self._transport.sendto(data, self._server)
            except OSError as error:  # this datagram is lost; the link will resend it
                self._send_errors.failed(error, time.monotonic())
        self._dispatch()
        if timer is not None and timer < self._sleeping_until:
            self._transport.wake()

    def _explained(self, event: ClientEvent) -> ClientEvent:
        """``event``, its reason completed with what only the shell knows (called locked)."""
        if isinstance(event, Welcomed):
            self._ever_welcomed = True
        elif isinstance(event, ConnectionLost) and self._pause is not None:
            resumed, paused = self._pause
            if time.monotonic() - resumed < PAUSE_BLAMED:
                return ConnectionLost(f"this client was paused for {paused:.0f} s; {event.reason}")
        elif (
            isinstance(event, Closed)
            and not self._ever_welcomed
            and not self._quitting
            and self._heard == 0
            and self._refused_seen == 0
        ):
            keyed = " with this room key" if self.options.key else ""
            return Closed(
                f"nothing answered at {self._label} in {self.options.join_timeout:g} s: "
                f"is a relay{keyed} running there?"
            )
        return event

    def _dispatch(self) -> None:
        """Hand out the backlog in order; if another thread is at it, it takes ours too."""
        while True:
            with self._lock:
                if self._dispatching or not self._backlog:
                    return
                self._dispatching = True
                events, self._backlog = self._backlog, []
            try:
                for event in events:
                    if self._on_event is not None:
                        self._on_event(event)
                    else:
                        self._queue.put(event)
            finally:
                with self._lock:
                    self._dispatching = False

    def _guarded(self, call: str, action: Callable[[], T]) -> T | None:
        """``action()``, a call into the session; None if it raised, which is reported.

        One datagram must never end the receiver: a session call that raises loses what
        it was doing (the datagram, this turn's timers or output), and the client goes on.
        """
        try:
            return action()
        except Exception as error:
            self._internal_error(call, error)
            return None

    def _internal_error(self, call: str, error: Exception) -> None:
        self.internal_errors += 1
        faults.report(f"ClientSession.{call}", error, log)  # re-raises in strict mode

    def _receive_loop(self) -> None:
        """The receiver thread. Should it ever end with an exception, the session ends with
        a Closed event that says why, so that a front end does not wait on a dead client."""
        try:
            self._receive_until_closed()
        except BaseException as error:
            self._receiver_failed(error)
            raise

    def _receiver_failed(self, error: BaseException) -> None:
        reason = f"the client stopped receiving: {type(error).__name__}: {error}"
        with self._lock:
            self._backlog.append(Closed(reason))
        self._closed.set()
        with self._changed:
            self._changed.notify_all()
        with contextlib.suppress(Exception):  # the callback itself may be what failed
            self._dispatch()

    def _receive_until_closed(self) -> None:
        session, transport = self._session, self._transport
        self._last_look = time.monotonic()
        while not self._closed.is_set():
            with self._lock:
                timer = self._guarded("next_timer", session.next_timer)
                if session.state is SessionState.CLOSED:
                    break
                now = self._look(0.0)
                wait = IDLE_WAIT if timer is None else min(max(timer - now, 0.0), IDLE_WAIT)
                self._sleeping_until = now + wait
            got = transport.recvfrom(wait)
            with self._lock:
                now = self._look(wait)
                self._sleeping_until = 0.0
                for _ in range(MAX_BATCH):
                    if got is None:
                        break
                    self._receive(got, now)
                    got = transport.recvfrom(0.0)
                if got is not None:
                    self._receive(got, now)
                self._notice_refusals()
                timer = self._guarded("next_timer", session.next_timer)
                if timer is not None and timer <= now:
                    self._guarded("handle_timer", functools.partial(session.handle_timer, now))
            self._flush()
            with self._lock:
                self._look(0.0)
        self._flush()
        with self._lock:
            self._changed.notify_all()

    def _look(self, slept: float) -> float:
        """The time now; a jump of more than PAUSE_NOTICED since the receiver last looked,
        beyond the ``slept`` it asked for, means this process was stopped (Ctrl-Z, a closed
        laptop lid), wherever the stop caught it (called locked)."""
        now = time.monotonic()
        stopped = now - self._last_look - slept
        if stopped > PAUSE_NOTICED:
            self._pause = (now, stopped + slept)
        self._last_look = now
        return now

    def _notice_refusals(self) -> None:
        """The system refused datagrams to the relay (ICMP port unreachable): during the first
        join, nothing listens there and the session ends now rather than after the timeout."""
        refused = self._udp.refused
        if refused == self._refused_seen:
            return
        self._refused_seen = refused
        reason = (
            f"nothing is listening at {self._label} (connection refused): "
            "is the relay running, on that port?"
        )
        self._guarded("unreachable", lambda: self._session.unreachable(reason))

    def _receive(self, got: tuple[bytes, Address], now: float) -> None:
        """Take in one datagram if it comes from the relay: nobody else speaks for it."""
        if got[1] != self._server:
            return
        self._heard += 1
        try:
            self._session.receive_datagram(got[0], now)
        except Exception as error:
            self._internal_error("receive_datagram", error)


def run_client(options: ClientOptions, json_output: bool = False) -> int:
    """The ``udpchat join`` command: hand a client to the terminal front end."""
    from udpchat.signals import interrupt_on_signals
    from udpchat.ui import choose_mode, run_ui

    interrupt_on_signals()
    mode = choose_mode(json_output=json_output, stdin=sys.stdin, stdout=sys.stdout)

    def start(on_event: Callable[[ClientEvent], None]) -> ChatClient:
        client = ChatClient(options, on_event)
        try:
            return client.start()
        except KeyboardInterrupt:  # Ctrl-C just as the join went out: leave, do not vanish
            client.quit("")
            raise

    return run_ui(start, mode, server=format_address(options.server))
