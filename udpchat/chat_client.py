"""The client's shell: ``ClientSession`` on a UDP socket, run by :class:`~udpchat.driver.Driver`.

The driver owns the loop, the lock and the thread; every user action is a ``Driver.call``,
which sends what it produced at once from the caller's thread. Events go to a callback or
into a queue for ``next_event``, in the order the session emitted them, from whichever thread
the driver hands them out on (its own, or a caller's: see :mod:`udpchat.driver`). What the
shell adds to the session is what only it can know: that nothing ever answered, that the
system refused our datagrams, that this process was paused.

Fail-over (protocol.md 6.9): with ``fallbacks``, the session decides when to move to another
relay and which; the shell follows it after every turn and call, before anything is sent:
the socket is connected to the new relay and the driver's ``peer`` filter with it, so
datagrams go there and only that relay is heard.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from udpchat.client.config import ClientConfig, Trust
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.driver import Driver
from udpchat.endpoint import Address
from udpchat.errors import UsageError
from udpchat.events import ClientEvent, Closed, ConnectionLost, RelayMoved, Welcomed
from udpchat.impair import ImpairmentConfig
from udpchat.impaired import ImpairedTransport
from udpchat.link import LinkConfig
from udpchat.seal import room_key
from udpchat.transport import (
    DatagramTransport,
    UdpTransport,
    format_address,
    resolve,
)

__all__ = ["PAUSE_BLAMED", "ChatClient", "ClientOptions"]

log = logging.getLogger("udpchat.client")

# A relay lost in the seconds after this process was paused (Ctrl-Z, a sleeping machine:
# see udpchat.driver.PAUSE_NOTICED) is lost because of the pause, not because of the relay.
PAUSE_BLAMED = 10.0
# The events ``_explained`` may complete; any other goes out as the session emitted it.
_EXPLAINED = frozenset({Welcomed, ConnectionLost, RelayMoved, Closed})


@dataclass(frozen=True)
class ClientOptions:
    """Everything ``udpchat join`` can be told, with the library's defaults."""

    nick: str
    server: Address = ("127.0.0.1", 9000)
    # The room's other relays, moved to in turn when the current one goes silent
    # (protocol.md 6.9); all of one address family with ``server``.
    fallbacks: tuple[Address, ...] = ()
    impairment: ImpairmentConfig | None = None
    key: str | None = None
    link: LinkConfig = field(default_factory=LinkConfig)
    reconnect: bool = True
    join_timeout: float = 10.0
    # Keep requests under the relay's default flood limits; off for rooms (demos,
    # benchmarks) whose relay was given higher limits.
    pace: bool = True
    # Checks the relay's static public key at each handshake: None to go on, or the refusal
    # to show (protocol.md 4). None here: every relay key is trusted. What `udpchat join`
    # does, trust on first use with the known_relays file, is
    # ``TrustStore().for_server(address)`` (udpchat.known_relays).
    trust: Trust | None = None
    # The check for the relay at an address, when each relay of a list has its own pinned
    # key (``TrustStore().for_server``); it takes the place of ``trust``.
    trust_for: Callable[[Address], Trust] | None = None


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
        # The addresses as resolved, each mapped to the one the user gave (its trust entry).
        self._given = {server: options.server}
        for given in options.fallbacks:
            other_family, other = resolve(*given)
            if other_family != family:
                raise UsageError(
                    f"{format_address(given)} and {format_address(options.server)} are of "
                    "different address families: list relays of one family (IPv4 or IPv6)"
                )
            self._given.setdefault(other, given)
        if len(self._given) != 1 + len(options.fallbacks):
            raise UsageError("a relay is listed twice (under two names)")
        bind_host = "::" if family.name == "AF_INET6" else "0.0.0.0"
        hosts = {address[0] for address in self._given}
        if len(hosts) == 1 and server[0] in ("127.0.0.1", "::1", "localhost"):
            bind_host = server[0]
        udp = UdpTransport.bind(bind_host, 0)
        try:
            udp.connect(server)
        except OSError:
            udp.close()
            raise
        self._udp = udp
        self._label = ", ".join(
            format_address(given) for given in (options.server, *options.fallbacks)
        )
        transport: DatagramTransport = udp
        if options.impairment is not None and not options.impairment.is_noop:
            transport = ImpairedTransport(transport, options.impairment)
        config = ClientConfig(
            nick=options.nick,
            server=server,
            fallbacks=tuple(self._given)[1:],
            link=options.link,
            reconnect=options.reconnect,
            join_timeout=options.join_timeout,
            pace_rate=ClientConfig.pace_rate if options.pace else 0.0,
        )
        self._session = ClientSession(
            config,
            secrets.token_bytes,
            time.monotonic(),
            key,
            wall_offset=time.time() - time.monotonic(),
            trust=options.trust,
            trust_for=self._trust_for if options.trust_for is not None else None,
        )
        self._driver: Driver[ClientEvent] = Driver(
            self._session,
            transport,
            label="ClientSession",
            log=log,
            name="udpchat-client",
            take=self._take,
            deliver=self._deliver,
            finished=lambda: self._session.state is SessionState.CLOSED,
            on_exit=self._ended,
            peer=server,  # nobody else speaks for the relay
        )
        self._on_event = on_event
        # For ``next_event``: put from the driver's threads, got by the user's (in C, unlike
        # queue.Queue: no Python-level lock and condition per event).
        self._queue: queue.SimpleQueue[ClientEvent] = queue.SimpleQueue()
        # What the shell knows and the session cannot: whether the system refused our
        # datagrams, whether anything was ever welcomed, whether we are leaving.
        self._refused_seen = 0
        self._ever_welcomed = False
        self._quitting = False

    @property
    def _transport(self) -> DatagramTransport:
        return self._driver.transport

    @_transport.setter
    def _transport(self, transport: DatagramTransport) -> None:
        """Wrap the transport (to watch the traffic) before the client starts."""
        self._driver.transport = transport

    @property
    def internal_errors(self) -> int:
        """Exceptions a session call raised and the client survived (see udpchat.faults)."""
        return self._driver.internal_errors

    @property
    def send_errors_by_errno(self) -> dict[int, int]:
        """Sends the transport refused, by errno: each lost one datagram, nothing more."""
        return self._driver.send_errors_by_errno

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> ChatClient:
        self._driver.call(self._session.connect)
        self._driver.start()
        return self

    def __enter__(self) -> ChatClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop at once, without saying goodbye (``quit`` is the polite way)."""
        self._driver.stop()
        self._driver.join()
        self._transport.close()

    @property
    def local_address(self) -> Address:
        return self._transport.local_address

    @property
    def state(self) -> SessionState:
        with self._driver.lock:
            return self._session.state

    @property
    def nick(self) -> str:
        with self._driver.lock:
            return self._session.nick

    @property
    def members(self) -> tuple[str, ...]:
        with self._driver.lock:
            return self._session.members

    @property
    def room_size(self) -> int:
        """How many are in the room, exact even before a paged list is all known."""
        with self._driver.lock:
            return self._session.room_size

    # --- what the user does -----------------------------------------------------------------

    def say(self, text: str) -> int:
        return self._driver.call(lambda now: self._session.say(text, now))

    def action(self, text: str) -> int:
        return self._driver.call(lambda now: self._session.action(text, now))

    def private(self, to: str, text: str) -> int:
        return self._driver.call(lambda now: self._session.private(to, text, now))

    def change_nick(self, nick: str) -> int:
        return self._driver.call(lambda now: self._session.change_nick(nick, now))

    def who(self) -> int:
        return self._driver.call(self._session.who)

    def stats(self) -> dict[str, float | int]:
        with self._driver.lock:
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
            "relay_moves": s.moves,
            "bad_datagrams_dropped": s.malformed + s.wrong_session + s.replays + s.unexpected,
        }

    def quit(self, reason: str = "", timeout: float | None = None) -> None:
        """Leave politely: returns once the relay has the QUIT, or after the quit timeout."""
        self._quitting = True
        self._driver.call(lambda now: self._session.quit(reason, now))
        limit = timeout if timeout is not None else self._session.config.quit_timeout + 1
        self.wait_closed(limit)
        self.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything sent has been acknowledged (and the session is joined)."""
        return self._driver.wait_for(lambda: self._session.idle, timeout)

    def wait_closed(self, timeout: float) -> bool:
        return self._driver.wait_for(lambda: self._session.state is SessionState.CLOSED, timeout)

    def wait_joined(self, timeout: float) -> bool:
        return self._driver.wait_for(lambda: self._session.state is SessionState.JOINED, timeout)

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

    # --- the driver's hooks -----------------------------------------------------------------

    def _take(self, now: float) -> list[ClientEvent]:
        """The session's events, each completed with what only the shell knows (called
        locked, after every turn of the driver and every call)."""
        if self._udp.refused != self._refused_seen:
            self._notice_refusals(now)
        session = self._session
        if session.server != self._server:
            self._follow(session.server)
        events = session.events()
        for i, event in enumerate(events):  # most events need nothing: no list is rebuilt
            if type(event) in _EXPLAINED:
                events[i] = self._explained(event)
        return events

    def _follow(self, relay: Address) -> None:
        """The session moved to ``relay`` (protocol.md 6.9): talk to it only, from now on
        (called locked, before this turn's datagrams are sent)."""
        if relay == self._server:
            return
        self._server = relay
        try:
            self._udp.connect(relay)
        except OSError as error:  # the datagrams to it will fail and be counted
            log.warning("cannot address relay %s: %s", format_address(relay), error)
        self._driver.peer = relay
        self._refused_seen = self._udp.refused  # refusals so far were the old relay's

    def _trust_for(self, address: Address) -> Trust:
        """The trust check of the relay at ``address``, under the name the user gave it."""
        trust_for = self.options.trust_for
        assert trust_for is not None
        return trust_for(self._given.get(address, address))

    def _deliver(self, events: list[ClientEvent]) -> None:
        on_event = self._on_event
        if on_event is None:
            for event in events:
                self._queue.put(event)
            return
        for event in events:
            on_event(event)

    def _ended(self, error: BaseException | None) -> None:
        """Should the driver's loop ever end with an exception, the session ends with a
        Closed event that says why, so that a front end does not wait on a dead client."""
        if error is None:
            return
        reason = f"the client stopped receiving: {type(error).__name__}: {error}"
        with contextlib.suppress(Exception):  # the callback itself may be what failed
            self._driver.post([Closed(reason)])

    def _explained(self, event: ClientEvent) -> ClientEvent:
        """``event``, its reason completed with what only the shell knows (called locked)."""
        if isinstance(event, Welcomed):
            self._ever_welcomed = True
        elif isinstance(event, (ConnectionLost, RelayMoved)) and self._driver.pause is not None:
            resumed, paused = self._driver.pause
            if time.monotonic() - resumed < PAUSE_BLAMED:
                reason = f"this client was paused for {paused:.0f} s; {event.reason}"
                return replace(event, reason=reason)
        elif (
            isinstance(event, Closed)
            and not self._ever_welcomed
            and not self._quitting
            and self._driver.received == 0
            and self._refused_seen == 0
        ):
            keyed = " with this room key" if self.options.key else ""
            return Closed(
                f"nothing answered at {self._label} in {self.options.join_timeout:g} s: "
                f"is a relay{keyed} running there?"
            )
        return event

    def _notice_refusals(self, now: float) -> None:
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
        self._driver.guard("unreachable", lambda: self._session.unreachable(reason, now))
