"""The impairing proxy end to end: real sockets on loopback, an echo server behind it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from udpchat.impair import ImpairmentConfig
from udpchat.netem import NetemCounters, NetemProxy, format_counters
from udpchat.transport import Address, UdpTransport

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]

LOCAL = ("127.0.0.1", 0)


class EchoServer:
    """Echoes every datagram back, prefixed with the source port the server saw."""

    def __init__(self) -> None:
        self.transport = UdpTransport.bind("127.0.0.1")
        self.sources: set[Address] = set()
        self.received = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> Address:
        return self.transport.local_address

    def _run(self) -> None:
        while (got := self.transport.recvfrom(None)) is not None:
            data, source = got
            self.sources.add(source)
            self.received += 1
            self.transport.sendto(source[1].to_bytes(2, "big") + data, source)

    def close(self) -> None:
        self.transport.close()
        self._thread.join(5.0)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def clients() -> Iterator[list[UdpTransport]]:
    made = [UdpTransport.bind("127.0.0.1") for _ in range(2)]
    yield made
    for client in made:
        client.close()


def exchange(client: UdpTransport, proxy: NetemProxy, n: int, quiet: float = 0.3) -> list[bytes]:
    """Send n datagrams in small batches and collect the replies that make it back."""
    replies: list[bytes] = []
    for batch in range(0, n, 50):
        for i in range(batch, min(n, batch + 50)):
            client.sendto(i.to_bytes(4, "big"), proxy.address)
        for _ in range(200):
            got = client.recvfrom(quiet)
            if got is None:
                break
            assert got[1] == proxy.address
            replies.append(got[0])
    return replies


def settle(proxy: NetemProxy, seconds: float = 2.0) -> NetemCounters:
    """Counters once every datagram in flight has been released (bounded wait)."""
    end = time.monotonic() + seconds
    counters = proxy.counters
    while time.monotonic() < end:
        time.sleep(0.05)
        again = proxy.counters
        if again == counters:
            return again
        counters = again
    return counters


def test_pass_through_and_distinct_upstream_ports(
    echo: EchoServer, clients: list[UdpTransport]
) -> None:
    with NetemProxy(LOCAL, echo.address, ImpairmentConfig(seed=1)) as proxy:
        assert proxy.address[0] == "127.0.0.1" and proxy.address[1] > 0
        replies = [exchange(client, proxy, 100) for client in clients]
        counters = settle(proxy)
    for got in replies:
        assert [r[2:] for r in got] == [i.to_bytes(4, "big") for i in range(100)]
    ports = [{int.from_bytes(r[:2], "big") for r in got} for got in replies]
    assert all(len(p) == 1 for p in ports), "one upstream socket per client"
    assert ports[0] != ports[1], "the relay sees a distinct source per client"
    assert len(echo.sources) == 2
    assert {c.local_address[1] for c in clients}.isdisjoint(ports[0] | ports[1])
    assert counters.mappings_created == 2
    assert counters.upstream.passed == counters.downstream.passed == 200
    assert counters.upstream.dropped == counters.downstream.dropped == 0


def test_total_loss_drops_everything(echo: EchoServer, clients: list[UdpTransport]) -> None:
    with NetemProxy(LOCAL, echo.address, ImpairmentConfig(loss=1.0)) as proxy:
        assert exchange(clients[0], proxy, 100, quiet=0.1) == []
        counters = settle(proxy)
    assert echo.received == 0
    assert counters.upstream.dropped == 100 and counters.upstream.passed == 0


def test_counters_add_up_under_impairment(echo: EchoServer, clients: list[UdpTransport]) -> None:
    config = ImpairmentConfig(loss=0.2, duplicate=0.05, delay=0.005, jitter=0.003, seed=7)
    with NetemProxy(LOCAL, echo.address, config) as proxy:
        replies = exchange(clients[0], proxy, 500, quiet=0.15)
        counters = settle(proxy)
    up, down = counters.upstream, counters.downstream
    assert up.submitted == 500
    assert echo.received == up.passed + up.duplicated
    assert down.submitted == echo.received
    assert len(replies) == down.passed + down.duplicated
    assert counters.errors == 0
    assert up.dropped / 500 == pytest.approx(0.2, abs=0.06)
    assert len({r[2:] for r in replies}) < 500


def test_idle_mappings_expire_and_sockets_close(
    echo: EchoServer, clients: list[UdpTransport]
) -> None:
    with NetemProxy(LOCAL, echo.address, ImpairmentConfig(), idle_timeout=0.2) as proxy:
        clients[0].sendto(b"hi", proxy.address)
        assert clients[0].recvfrom(5.0) is not None
        sock = next(iter(proxy._mappings.values())).sock
        assert sock.fileno() != -1
        for _ in range(50):
            if proxy.counters.clients == 0:
                break
            time.sleep(0.05)
        counters = proxy.counters
        assert counters.clients == 0 and counters.mappings_expired == 1
        assert sock.fileno() == -1
        # The client comes back: a fresh mapping is made.
        clients[0].sendto(b"again", proxy.address)
        assert clients[0].recvfrom(5.0) is not None
        assert proxy.counters.mappings_created == 2


def test_mapping_limit_rejects_further_clients(
    echo: EchoServer, clients: list[UdpTransport]
) -> None:
    with NetemProxy(LOCAL, echo.address, ImpairmentConfig(), max_clients=1) as proxy:
        assert len(exchange(clients[0], proxy, 5)) == 5
        assert exchange(clients[1], proxy, 5, quiet=0.1) == []
        counters = settle(proxy)
    assert counters.rejected == 5 and counters.mappings_created == 1
    assert counters.upstream.submitted == 5


def open_fds() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


def test_stop_is_clean_and_idempotent(echo: EchoServer, clients: list[UdpTransport]) -> None:
    before = {t.name for t in threading.enumerate()}
    fds = open_fds()
    proxy = NetemProxy(LOCAL, echo.address, ImpairmentConfig(delay=1.0))
    proxy.start()
    clients[0].sendto(b"in flight", proxy.address)
    for _ in range(100):
        if proxy.counters.mappings_created:
            break
        time.sleep(0.01)
    sockets = [proxy._listen, *(m.sock for m in proxy._mappings.values())]
    assert len(sockets) == 2
    proxy.stop()
    proxy.stop()
    assert all(sock is not None and sock.fileno() == -1 for sock in sockets)
    assert not any(t.name == "netem-proxy" and t.is_alive() for t in threading.enumerate())
    assert {t.name for t in threading.enumerate() if t.is_alive()} <= before
    assert proxy.counters.clients == 0 and proxy.counters.mappings_created == 1
    assert echo.received == 0
    assert open_fds() == fds, "no leaked sockets"


def test_format_counters() -> None:
    text = format_counters(NetemCounters(clients=2, mappings_created=3))
    assert "clients 2" in text and "created 3" in text
    assert "upstream: passed 0, dropped 0" in text
    assert "downstream:" in text


def test_validation() -> None:
    with pytest.raises(ValueError):
        NetemProxy(LOCAL, LOCAL, ImpairmentConfig(), idle_timeout=0)
    with pytest.raises(RuntimeError):
        _ = NetemProxy(LOCAL, LOCAL, ImpairmentConfig()).address
