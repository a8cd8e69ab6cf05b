"""Helpers for the end-to-end tests: real relays, real clients, real subprocesses.

Everything here waits for conditions with deadlines (never a bare sleep standing in for
synchronisation), talks only to loopback addresses, and cleans up what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from udpchat import events as ev
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.endpoint import Address
from udpchat.impair import ImpairmentConfig
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer

ROOT = Path(__file__).resolve().parent.parent
E = TypeVar("E")


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value.

    Only for state that offers no notification (a relay's member list, its counters)."""
    end = time.monotonic() + timeout
    while not condition():
        remaining = end - time.monotonic()
        if remaining <= 0:
            return condition()
        time.sleep(min(interval, remaining))  # polling, bounded by the deadline
    return True


# --- library clients ---------------------------------------------------------------------------


class Recorder:
    """An event callback for :class:`ChatClient` that keeps every event and can be waited on."""

    def __init__(self) -> None:
        self.events: list[ev.ClientEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: ev.ClientEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def snapshot(self) -> list[ev.ClientEvent]:
        with self._cond:
            return list(self.events)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.snapshot() if isinstance(e, kind)]

    def wait_for(self, condition: Callable[[list[ev.ClientEvent]], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not condition(self.events):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_event(
        self, kind: type[E], timeout: float, where: Callable[[E], bool] = lambda _: True
    ) -> E:
        """The first event of ``kind`` satisfying ``where``; AssertionError after ``timeout``."""
        found: list[E] = []

        def seen(events: list[ev.ClientEvent]) -> bool:
            found[:] = [e for e in events if isinstance(e, kind) and where(e)]
            return bool(found)

        assert self.wait_for(seen, timeout), (
            f"no {kind.__name__} within {timeout} s; saw {self.snapshot()!r}"
        )
        return found[0]

    def chat(self, history: bool | None = None) -> list[ev.MessageReceived]:
        """Room chat as this member saw it, own posted messages included."""
        return [e for e in self.of(ev.MessageReceived) if history is None or e.history == history]

    def texts(self) -> list[str]:
        return [e.text for e in self.chat()]


class Member:
    """A joined :class:`ChatClient` with its recorder."""

    def __init__(self, client: ChatClient, log: Recorder) -> None:
        self.client = client
        self.log = log

    @property
    def nick(self) -> str:
        return self.client.nick


def join(
    relay: Address,
    nick: str,
    *,
    impairment: ImpairmentConfig | None = None,
    wait: bool = True,
    timeout: float = 5.0,
) -> Member:
    log = Recorder()
    # running_relay() raises the relay's flood limits, so members need not pace themselves
    options = ClientOptions(
        nick=nick, server=relay, impairment=impairment, join_timeout=timeout, pace=False
    )
    client = ChatClient(options, log).start()
    member = Member(client, log)
    if wait:
        assert client.wait_joined(timeout), f"{nick} did not join: {log.snapshot()!r}"
    return member


@contextlib.contextmanager
def members(relay: Address, *nicks: str, **kwargs: Any) -> Iterator[list[Member]]:
    """Join ``nicks`` one after the other; close every client at the end, however it went."""
    joined: list[Member] = []
    try:
        for nick in nicks:
            joined.append(join(relay, nick, **kwargs))
        yield joined
    finally:
        for member in joined:
            member.client.close()


def relay_config(**overrides: Any) -> RelayConfig:
    """A relay configuration for tests: quick shutdown, flood limits out of the way."""
    values: dict[str, Any] = {
        "shutdown_grace": 0.5,
        "flood_burst": 10_000,
        "flood_rate": 10_000.0,
    }
    values.update(overrides)
    return RelayConfig(**values)


@contextlib.contextmanager
def running_relay(port: int = 0, **config: Any) -> Iterator[RelayServer]:
    server = RelayServer(
        RelayOptions(host="127.0.0.1", port=port, config=relay_config(**config))
    ).start()
    try:
        yield server
    finally:
        server.stop(goodbye=False)


def assert_one_room_order(logs: Sequence[Recorder], expected: int) -> list[tuple[int, str, str]]:
    """Every member saw the same ``expected`` chat messages, each once, in room order.

    Returns the room order as ``(seq, nick, text)``."""
    room: dict[int, tuple[str, str]] = {}
    for log in logs:
        seen = [(m.seq, m.nick, m.text) for m in log.chat(history=False)]
        seqs = [s for s, _, _ in seen]
        assert seqs == sorted(seqs), "a member saw room events out of order"
        assert len(seqs) == len(set(seqs)), "a member saw a room event twice"
        assert len(seen) == expected, f"saw {len(seen)} messages, expected {expected}"
        for seq, nick, text in seen:
            assert room.setdefault(seq, (nick, text)) == (nick, text), f"seq {seq} differs"
    order = sorted((seq, nick, text) for seq, (nick, text) in room.items())
    for log in logs:
        assert [(m.seq, m.nick, m.text) for m in log.chat(history=False)] == order
    return order


# --- a path that can be cut --------------------------------------------------------------------


class CutProxy:
    """A UDP forwarder between clients and a relay whose path can be cut and restored.

    Each client source gets its own upstream socket, like a NAT. While ``cut`` is set every
    datagram in both directions is dropped, as on a dead link."""

    def __init__(self, upstream: Address) -> None:
        self._upstream = upstream
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.setblocking(False)
        self.address: Address = self._listen.getsockname()[:2]
        self.cut = threading.Event()
        self.dropped = 0
        self._by_client: dict[Address, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cut-proxy", daemon=True)

    def __enter__(self) -> CutProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        self._wake_w.send(b"\0")
        self._thread.join(5)
        self._selector.close()
        for sock in [self._listen, self._wake_r, self._wake_w, *self._by_client.values()]:
            sock.close()

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    continue
                for _ in range(64):
                    try:
                        data, source = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    if self.cut.is_set():
                        self.dropped += 1
                        continue
                    with contextlib.suppress(OSError):
                        if sock is self._listen:
                            self._upstream_for(source[:2]).send(data)
                        else:
                            self._listen.sendto(data, key.data)

    def _upstream_for(self, client: Address) -> socket.socket:
        sock = self._by_client.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(self._upstream)
            sock.setblocking(False)
            self._by_client[client] = sock
            self._selector.register(sock, selectors.EVENT_READ, client)
        return sock


# --- subprocesses -----------------------------------------------------------------------------


def udpchat_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.pop("UDPCHAT_KEY", None)
    return env


class Process:
    """``python -m udpchat ...`` with piped stdio; output lines are collected by threads.

    ``prefix`` runs it through another command, e.g. ``ip netns exec NAME``."""

    def __init__(self, *args: str, prefix: Sequence[str] = ()) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "udpchat", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=udpchat_env(),
            cwd=ROOT,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()  # reentrant: records() may run under it
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._collect, args=(self.proc.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=self._collect, args=(self.proc.stderr, self.stderr), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(
        self, condition: Callable[[str], bool], timeout: float, *, stderr: bool = False
    ) -> str:
        """The first line (of stdout, or stderr) satisfying ``condition``."""
        lines = self.stderr if stderr else self.stdout
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in lines:
                    if condition(line):
                        return line
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching line within {timeout} s from {self.args}\n"
                        f"stdout: {self.stdout}\nstderr: {self.stderr}"
                    )
                self._cond.wait(remaining)

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: no goodbye of any kind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def cleanup(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        for reader in self._readers:
            reader.join(5)


class JsonProcess(Process):
    """``udpchat join --json``: stdout parsed into records."""

    def records(self) -> list[dict[str, Any]]:
        with self._cond:
            lines = list(self.stdout)
        return [json.loads(line) for line in lines]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["type"] == kind]

    def wait_record(
        self, kind: str, timeout: float, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        def matches(line: str) -> bool:
            record = json.loads(line)
            return bool(record["type"] == kind and where(record))

        return dict(json.loads(self.wait_line(matches, timeout)))

    def wait_records(self, kind: str, n: int, timeout: float) -> list[dict[str, Any]]:
        """The first ``n`` records of ``kind``, once there are that many."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(found := self.of(kind)) < n:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(found)} {kind!r} records, not {n}: {self.stdout}")
                self._cond.wait(remaining)
        return found[:n]


_LISTENING = re.compile(r"udpchat relay listening on (\S+):(\d+)")


class RelayProcess(Process):
    """``udpchat relay`` in a subprocess; ``address`` is parsed from its log on stderr."""

    def __init__(
        self, *args: str, port: int = 0, timeout: float = 15.0, prefix: Sequence[str] = ()
    ) -> None:
        super().__init__("relay", "--host", "127.0.0.1", "--port", str(port), *args, prefix=prefix)
        line = self.wait_line(lambda s: _LISTENING.search(s) is not None, timeout, stderr=True)
        found = _LISTENING.search(line)
        assert found is not None
        self.address: Address = (found.group(1), int(found.group(2)))


def join_process(nick: str, relay: Address, *args: str, json_output: bool = True) -> Process:
    flags = ["--json"] if json_output else []
    server = f"{relay[0]}:{relay[1]}"
    factory = JsonProcess if json_output else Process
    return factory("join", nick, "--server", server, *flags, *args)
