"""A standalone impairing UDP proxy to put between real clients and a real relay.

Each client gets its own upstream socket, so the relay sees one distinct source per client,
exactly as it would without the proxy. One I/O thread multiplexes every socket and
releases delayed datagrams on time; both directions cross a seeded :class:`Impairment`.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from types import TracebackType

from udpchat.endpoint import Address
from udpchat.impair import Impairment, ImpairmentConfig, ImpairmentCounters
from udpchat.transport import MAX_DATAGRAM, normalise, open_udp_socket, resolve

__all__ = [
    "READS_PER_WAKE", "NetemCounters", "NetemProxy", "describe", "format_counters",
    "format_progress",
]

READS_PER_WAKE = 64  # per socket per loop turn, so one busy client cannot starve the others


@dataclass
class NetemCounters:
    """Proxy bookkeeping plus what each direction's impairment did."""

    clients: int = 0
    mappings_created: int = 0
    mappings_expired: int = 0
    rejected: int = 0
    errors: int = 0
    upstream: ImpairmentCounters = field(default_factory=ImpairmentCounters)
    downstream: ImpairmentCounters = field(default_factory=ImpairmentCounters)


def format_counters(counters: NetemCounters) -> str:
    """Human-readable counters, e.g. for printing when the proxy exits."""
    lines = [
        f"clients {counters.clients} (created {counters.mappings_created}, "
        f"expired {counters.mappings_expired}, rejected datagrams {counters.rejected}, "
        f"socket errors {counters.errors})"
    ]
    for name in ("upstream", "downstream"):
        c: ImpairmentCounters = getattr(counters, name)
        parts = ", ".join(f"{f.name} {getattr(c, f.name)}" for f in fields(c))
        lines.append(f"{name}: {parts}")
    return "\n".join(lines)


def describe(config: ImpairmentConfig) -> str:
    """Every impairment in force, in words: what ``netem`` says when it starts."""
    loss = f"loss {config.mean_loss:.1%}"
    if config.p_good_to_bad > 0:
        loss += f" in bursts of {1 / config.p_bad_to_good:.3g} datagrams"
    parts = [loss, f"delay {config.delay * 1000:g} ms +/- {config.jitter * 1000:g} ms"]
    if config.duplicate:
        parts.append(f"duplicated {config.duplicate:.1%}")
    if config.reorder:
        parts.append(f"reordered {config.reorder:.1%}")
    parts.append(f"seed {config.seed}")
    return ", ".join(parts)


def format_progress(counters: NetemCounters, now: float | None = None) -> str:
    """One line of running totals, printed now and then while the proxy works."""
    stamp = time.strftime("%H:%M:%S ") if now is not None else ""

    def way(c: ImpairmentCounters) -> str:
        return f"{c.passed} passed, {c.dropped} lost"

    return (
        f"{stamp}clients {counters.clients}; to the relay {way(counters.upstream)}; "
        f"to clients {way(counters.downstream)}"
    )


@dataclass
class _Mapping:
    client: Address
    sock: socket.socket
    last_active: float


class NetemProxy:
    """Forwards ``listen`` <-> ``upstream`` through a simulated bad network."""

    def __init__(
        self,
        listen: Address,
        upstream: Address,
        config: ImpairmentConfig,
        idle_timeout: float = 60.0,
        max_clients: int = 1024,
    ) -> None:
        if idle_timeout <= 0 or max_clients < 1:
            raise ValueError("idle_timeout must be > 0 and max_clients >= 1")
        self._listen_at = listen
        self._upstream_at = upstream
        self._idle = idle_timeout
        self._max = max_clients
        self._up: Impairment[Address] = Impairment(config.derive("upstream"))
        self._down: Impairment[Address] = Impairment(config.derive("downstream"))
        self._mappings: OrderedDict[Address, _Mapping] = OrderedDict()  # least recent first
        self._counters = NetemCounters(upstream=self._up.counters, downstream=self._down.counters)
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listen: socket.socket | None = None
        self._address: Address | None = None

    @property
    def address(self) -> Address:
        """Where clients should send: the bound listen address (useful with port 0)."""
        if self._address is None:
            raise RuntimeError("proxy not started")
        return self._address

    @property
    def counters(self) -> NetemCounters:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counters
            return replace(
                c,
                clients=len(self._mappings),
                upstream=replace(c.upstream),
                downstream=replace(c.downstream),
            )

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._upstream_family, self._upstream = resolve(*self._upstream_at)
        self._listen = open_udp_socket(*self._listen_at)
        self._address = normalise(self._listen.getsockname())
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="netem-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the I/O thread and close every socket; datagrams in flight are lost."""
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join()
        with self._lock:
            for mapping in self._mappings.values():
                mapping.sock.close()
            self._mappings.clear()
        self._selector.close()
        for sock in (self._listen, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> NetemProxy:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping:
            events = self._selector.select(self._wait())
            with self._lock:
                now = time.monotonic()
                for key, _ in events:
                    if key.fileobj is self._listen:
                        self._from_clients(now)
                    elif isinstance(key.data, _Mapping):
                        self._from_upstream(key.data, now)
                self._release(now)
                self._expire(now)

    def _wait(self) -> float | None:
        """Seconds until something is due: a delayed datagram or an idle mapping's expiry."""
        times = [self._up.next_deadline(), self._down.next_deadline()]
        if self._mappings:
            times.append(next(iter(self._mappings.values())).last_active + self._idle)
        due = [t for t in times if t is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _from_clients(self, now: float) -> None:
        assert self._listen is not None
        for _ in range(READS_PER_WAKE):
            try:
                data, sockaddr = self._listen.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counters.errors += 1
                continue
            client = normalise(sockaddr)
            mapping = self._mappings.get(client)
            if mapping is None:
                mapping = self._open_mapping(client, now)
                if mapping is None:
                    self._counters.rejected += 1
                    continue
            self._touch(mapping, now)
            self._up.submit(data, now, client)

    def _from_upstream(self, mapping: _Mapping, now: float) -> None:
        for _ in range(READS_PER_WAKE):
            try:
                data = mapping.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable: the relay is not (yet) there
                self._counters.errors += 1
                continue
            self._touch(mapping, now)
            self._down.submit(data, now, mapping.client)

    def _open_mapping(self, client: Address, now: float) -> _Mapping | None:
        if len(self._mappings) >= self._max:
            return None
        sock = socket.socket(self._upstream_family, socket.SOCK_DGRAM)
        try:
            sock.connect(self._upstream)  # binds a fresh port; only the relay can answer it
            sock.setblocking(False)
        except OSError:
            sock.close()
            self._counters.errors += 1
            return None
        mapping = _Mapping(client, sock, now)
        self._mappings[client] = mapping
        self._selector.register(sock, selectors.EVENT_READ, mapping)
        self._counters.mappings_created += 1
        return mapping

    def _touch(self, mapping: _Mapping, now: float) -> None:
        mapping.last_active = now
        self._mappings.move_to_end(mapping.client)

    def _release(self, now: float) -> None:
        assert self._listen is not None
        for data, client in self._up.due(now):
            mapping = self._mappings.get(client)
            if mapping is None:
                continue  # it expired while the datagram was in flight
            try:
                mapping.sock.send(data)
            except OSError:  # a full buffer or an unreachable relay: the datagram is lost
                self._counters.errors += 1
        for data, client in self._down.due(now):
            try:
                self._listen.sendto(data, client)
            except OSError:
                self._counters.errors += 1

    def _expire(self, now: float) -> None:
        while self._mappings:
            mapping = next(iter(self._mappings.values()))
            if mapping.last_active + self._idle > now:
                return
            del self._mappings[mapping.client]
            self._selector.unregister(mapping.sock)
            mapping.sock.close()
            self._counters.mappings_expired += 1
