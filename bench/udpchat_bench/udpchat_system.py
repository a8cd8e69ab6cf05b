"""udpchat itself as a benchmarked system: the real relay shell and the real client shell.

The relay is `udpchat.relay_server.RelayServer` and each member a `udpchat.chat_client.ChatClient`,
exactly as ``udpchat relay`` and ``udpchat join`` run them; only their datagram transport is
wrapped, so that every datagram either one sends or receives (chat data, ACKs, PINGs,
handshakes, retransmissions) is reported to the benchmark's `SocketMeter`.

Payloads are bytes, chat text is a string: the benchmark's payloads are ASCII text
(`udpchat_bench.traffic`), so a payload is said as the string of its characters and each
character is one byte on the wire, as in every other system.

Options (``RelayArgs.options``/``MemberArgs.options``, the same dict for every process):

* ``"flood_control"`` (bool, default False): keep the relay's default per-member flood limit
  (burst 10, then 5 messages/s). The reference traffic sends 50 messages/s from one member,
  which that limit refuses by design, so benchmarks lift it unless asked not to.
* ``"key"`` (str): a room passphrase, mixed into the handshake; datagrams are then padded
  (every session is encrypted, key or not).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.client.config import QueueFull
from udpchat.endpoint import Address
from udpchat.events import ClientEvent, Closed, JoinRejected, MessageReceived, MessageRefused
from udpchat.impair import Impairment, ImpairmentConfig
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.transport import DatagramTransport
from udpchat_bench.accounting import SocketMeter
from udpchat_bench.systems import Delivery, MemberArgs, MemberLink, RelayArgs, UnsupportedOption

UNLIMITED = 1_000_000_000
"""Flood-control burst and rate that never refuse anything a benchmark sends."""
SEND_BLOCK_LIMIT_S = 30.0
"""Longest ``send`` waits for room in the client's queue before giving up (back-pressure)."""
SEND_RETRY_S = 0.001


# --- metering ---------------------------------------------------------------------------------


class MeteredTransport:
    """A `DatagramTransport` that reports every datagram to a `SocketMeter`.

    With ``loss_percent`` it also loses that share of the datagrams it *receives*, using
    udpchat's own seeded impairment model (`udpchat.impair`), before they are counted: the
    same contract as the baselines (each datagram crosses one receiver, so X% is X% a hop),
    and lost datagrams still count on the wire because their sender counted them. Inbound
    only, unlike `udpchat.impaired.ImpairedTransport`, which impairs both directions and
    would lose about 2X% a hop.
    """

    def __init__(
        self,
        inner: DatagramTransport,
        meter: SocketMeter,
        loss_percent: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0 <= loss_percent <= 100:
            raise UnsupportedOption("loss_percent must be within [0, 100]")
        self._inner = inner
        self._meter = meter
        self._loss: Impairment[Address] | None = None
        if loss_percent > 0:
            self._loss = Impairment(ImpairmentConfig(loss=loss_percent / 100, seed=seed))

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    def sendto(self, data: bytes, addr: Address) -> None:
        self._inner.sendto(data, addr)
        self._meter.datagram_sent(len(data))

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self._inner.recvfrom(timeout)
            if got is None:
                return None
            if self._loss is None or self._survives(got):
                self._meter.datagram_received(len(got[0]))
                return got
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())

    def _survives(self, got: tuple[bytes, Address]) -> bool:
        assert self._loss is not None
        now = time.monotonic()
        self._loss.submit(got[0], now, got[1])
        return bool(self._loss.due(now))  # no delay configured: passed means due at once

    def wake(self) -> None:
        self._inner.wake()

    def wake_at(self, when: float | None) -> None:
        """The inner transport's alarm (``UdpTransport.wake_at``), or a wake-up now."""
        wake_at = getattr(self._inner, "wake_at", None)
        if wake_at is not None:
            wake_at(when)
        elif when is not None:
            self._inner.wake()

    def close(self) -> None:
        self._inner.close()


# --- relay ------------------------------------------------------------------------------------


def _flood_control(options: Mapping[str, Any]) -> bool:
    value = options.get("flood_control", False)
    if not isinstance(value, bool):
        raise UnsupportedOption("udpchat option 'flood_control' must be a boolean")
    return value


def _key(options: Mapping[str, Any]) -> str | None:
    value = options.get("key")
    if value is not None and (not isinstance(value, str) or not value):
        raise UnsupportedOption("udpchat option 'key' must be a non-empty string")
    return value


def relay_config(options: Mapping[str, Any]) -> RelayConfig:
    """The relay's defaults, with flood control lifted unless ``options`` keep it."""
    config = RelayConfig()
    if _flood_control(options):
        return config
    return replace(config, flood_burst=UNLIMITED, flood_rate=float(UNLIMITED))


def _wrap_transport(
    owner: RelayServer | ChatClient, meter: SocketMeter, loss_percent: float, seed: int
) -> None:
    """Put a `MeteredTransport` around the transport ``owner`` built, before it starts.

    Neither shell takes a transport from outside; both keep theirs in ``_transport`` and only
    use it once started, so swapping it here is safe and leaves their code untouched.
    """
    owner._transport = MeteredTransport(owner._transport, meter, loss_percent, seed)


class UdpchatSystem:
    """udpchat's relay and client shells, metered at their transports."""

    name = "udpchat"
    supports_simulated_loss = True

    def run_relay(
        self,
        args: RelayArgs,
        meter: SocketMeter,
        ready: Callable[[Address], None],
        stop: threading.Event,
    ) -> None:
        options = RelayOptions(
            host=args.host, port=0, config=relay_config(args.options), key=_key(args.options)
        )
        server = RelayServer(options)
        _wrap_transport(server, meter, args.loss_percent, args.seed)
        server.start()
        try:
            ready(server.address)
            stop.wait()
        finally:
            # Members are gone by now: a goodbye would only retransmit SHUTDOWN into the void.
            server.stop(goodbye=False)

    def connect_member(self, args: MemberArgs, meter: SocketMeter) -> MemberLink:
        key = _key(args.options)

        link = _UdpchatLink()
        options = ClientOptions(
            nick=f"m{args.member}",
            server=args.relay,
            key=key,
            join_timeout=args.connect_timeout_s,
            pace=_flood_control(args.options),  # pace only where the relay limits us
        )
        client = ChatClient(options, on_event=link.on_event)
        _wrap_transport(client, meter, args.loss_percent, args.seed)
        link.client = client
        try:
            client.start()
            if not client.wait_joined(args.connect_timeout_s):
                raise TimeoutError(
                    f"udpchat relay did not welcome us within {args.connect_timeout_s} s"
                    f" ({link.trouble or client.state.name})"
                )
        except BaseException:
            client.close()
            raise
        return link


class _UdpchatLink:
    """A joined `ChatClient`: chat text in, other members' chat text out, as bytes (polled
    with ``recv``, or handed to the benchmark from the client's ``on_event``)."""

    def __init__(self) -> None:
        self.client: ChatClient | None = None
        self.trouble: str | None = None
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._callback: Delivery | None = None
        self._switch = threading.Lock()  # held while deliveries move from the queue to it

    def on_event(self, event: ClientEvent) -> None:
        """Called by the client from its threads, one at a time: keep other members' chat
        (for ``recv``, or straight to the benchmark's callback), note trouble."""
        if isinstance(event, MessageReceived):
            if not event.own:
                try:
                    payload = event.text.encode("ascii")
                except UnicodeEncodeError:
                    payload = b""  # logged as malformed by the benchmark
                callback = self._callback
                if callback is None:
                    with self._switch:
                        callback = self._callback
                        if callback is None:
                            self._inbox.put(payload)
                            return
                callback(payload, time.monotonic_ns())
        elif isinstance(event, MessageRefused):
            self.trouble = f"relay refused a message: {event.reason}"
        elif isinstance(event, (JoinRejected, Closed)):
            self.trouble = f"session ended: {event}"

    def send(self, payload: bytes) -> None:
        """Say ``payload``; while the client's queue is full, wait (bounded) like a blocked
        socket would, rather than drop."""
        assert self.client is not None
        text = payload.decode("ascii")
        deadline = time.monotonic() + SEND_BLOCK_LIMIT_S
        while True:
            try:
                self.client.say(text)
                return
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(SEND_RETRY_S)

    def recv(self, timeout: float) -> bytes | None:
        try:
            return self._inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def deliver_to(self, callback: Delivery) -> None:
        """Deliveries go to ``callback`` from the client's thread (``on_event``, where an
        application gets them), after those already queued for ``recv``."""
        with self._switch:
            while True:
                try:
                    payload = self._inbox.get_nowait()
                except queue.Empty:
                    break
                callback(payload, time.monotonic_ns())
            self._callback = callback

    def close(self) -> None:
        # Abrupt, like a closed socket: a QUIT would add LEFT notices and their retransmissions
        # to other members (already gone) to the traffic of the measured run.
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()


UDPCHAT = UdpchatSystem()
