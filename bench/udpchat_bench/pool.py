"""Many real client sessions in one loop: what a room of a thousand members looks like to a
relay, from one process.

Each member is a sans-I/O :class:`~udpchat.client.session.ClientSession` (the terminal
client's core: handshake, rejoin with backoff, RESET, ledger, member list) on a UDP socket of
its own, so the relay sees a thousand addresses and each member's kernel drops are counted
separately. One thread drives them all: a selector over the sockets and a heap of the
sessions' timers (no polling). The mass-rejoin test and ``udpchat load --storm`` both use it.

A real member is a process of its own: its join never waits while a thousand others read
their fan-out. Here they share one thread, so a member still joining is served out of turn:
every few members read, timers run or sessions flushed, the pool starts the joins that are
due (``schedule_connect``) and reads and answers the joiners that have a datagram waiting
(a second selector holds only their sockets, so that look is one cheap system call).
A whole room rejoining after a restart is all joiners: then it is read in turn.

Invariants: a session is only touched by the loop's thread; a member's timer is in the heap
at most once per deadline (stale entries are skipped); every datagram read is handed to the
session whose socket read it; a member is in the joiners' selector from the first flush that
finds it not joined to its WELCOME.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence

from udpchat import events as ev
from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.transport import kernel_drops

Address = tuple[str, int]
# Datagrams read from one member's socket per turn before the others get theirs.
READ_BATCH = 64
# Members read, timers run or sessions flushed between two looks for joiners (see
# MemberPool._serve_joiners): each is tens of microseconds, a look a few.
JOINER_CHECK = 8


class Member:
    """One session, its socket, and what the pool watches of it."""

    __slots__ = (
        "accepted_at",
        "challenged_at",
        "events",
        "index",
        "joined_at",
        "lines",
        "scheduled",
        "session",
        "sock",
        "started_at",
    )

    def __init__(self, index: int, session: ClientSession, sock: socket.socket) -> None:
        self.index = index
        self.session = session
        self.sock = sock
        self.scheduled = math.inf
        self.started_at: float | None = None  # connect() called
        self.joined_at: float | None = None  # its latest Welcomed
        # its first CHALLENGE and ACCEPT read since connect() (a join's stages)
        self.challenged_at: float | None = None
        self.accepted_at: float | None = None
        self.events: list[ev.ClientEvent] = []
        self.lines: dict[str, int] = {}  # chat text -> times this member saw it


class MemberPool:
    """``nicks`` as members of the room at ``relay``; ``connect`` starts one joining.

    With ``keep_events`` every member keeps the events it emitted (tests read them); without,
    only the counts the pool keeps survive (a load benchmark keeps a thousand members lean).
    """

    def __init__(
        self,
        relay: Address,
        nicks: Sequence[str],
        now: float,
        *,
        keep_events: bool = False,
        receive_buffer: int = 0,
        config: Callable[[str], ClientConfig] | None = None,
    ) -> None:
        self.relay = relay
        self.keep_events = keep_events
        self.selector = selectors.DefaultSelector()
        self.members: list[Member] = []
        make = config or (lambda nick: ClientConfig(nick=nick, server=relay))
        for index, nick in enumerate(nicks):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)
            self.members.append(Member(index, ClientSession(make(nick), os.urandom, now), sock))
        self._timers: list[tuple[float, int, int]] = []
        self._order = 0
        self._dirty: set[int] = set()
        # the members joining (from their connect, or from losing their session, to their
        # WELCOME), and their sockets
        self._joiners: set[int] = set()
        self._joining = selectors.DefaultSelector()
        self._connects: deque[tuple[float, int]] = deque()  # (when, index), in time order
        self._serving = False  # in _serve_joiners (it flushes, and a flush looks for joiners)
        self.welcomed = 0  # Welcomed events, all members, all joins
        self.messages: dict[str, int] = {}  # chat text -> deliveries (history included)
        self.posted_at: dict[str, float] = {}  # chat text -> when its sender saw it posted
        self.timed_out: list[str] = []  # members announced as timed out
        self.lost: int = 0  # ConnectionLost events

    # --- acting on members ----------------------------------------------------------------------

    def connect(self, index: int, now: float) -> None:
        member = self.members[index]
        member.started_at = now
        member.joined_at = member.challenged_at = member.accepted_at = None
        member.session.connect(now)
        self._dirty.add(index)
        self._watch(member)

    def schedule_connect(self, index: int, when: float) -> None:
        """Start member ``index`` joining at ``when`` (``time.monotonic``), from within the
        loop's work if it is busy then; calls in order of ``when``."""
        self._connects.append((when, index))

    def say(self, index: int, text: str, now: float) -> None:
        self.members[index].session.say(text, now)
        self._dirty.add(index)

    def joined(self) -> int:
        return sum(m.session.state is SessionState.JOINED for m in self.members)

    def knows_room(self, member: Member, everyone: set[str]) -> bool:
        """Whether ``member`` knows the room right: its size, and nobody who is not in it (in
        a paged room it knows a subset of the names until it asks, protocol.md 6.7)."""
        session = member.session
        return session.room_size == len(everyone) and set(session.members) <= everyone

    def who(self, index: int, now: float) -> None:
        self.members[index].session.who(now)
        self._dirty.add(index)

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped for the members' sockets (0 where it does not say)."""
        return sum(kernel_drops(m.sock) or 0 for m in self.members)

    # --- the loop -------------------------------------------------------------------------------

    def step(self, now: float, max_wait: float) -> float:
        """Wait at most ``max_wait`` for a datagram or a timer, do what is due; the new now."""
        deadline = now + max_wait
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        if self._connects:
            deadline = min(deadline, self._connects[0][0])
        if not self._dirty:
            keys = self.selector.select(max(0.0, deadline - now))
            self._serve_joiners()
            ready = self._joiners_first([self.members[key.data] for key, _ in keys])
            for count, member in enumerate(ready, 1):
                self._read(member, time.monotonic())
                if count % JOINER_CHECK == 0:
                    self._serve_joiners()  # the others' fan-out does not hold a join up
        self._serve_joiners()
        now = time.monotonic()
        self._run_timers(now)
        self._flush(now)
        return now

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Step until ``done()`` or ``timeout`` seconds pass; whether it is done."""
        now = time.monotonic()
        end = now + timeout
        while not done():
            if now >= end:
                return False
            now = self.step(now, min(0.05, end - now))
        return True

    def _serve_joiners(self) -> None:
        """Start the joins that are due, then read and answer the joiners with a datagram
        waiting: out of turn, as if each were a process of its own."""
        if self._serving:
            return
        self._serving = True
        try:
            now = time.monotonic()
            connects = self._connects
            while connects and connects[0][0] <= now:
                self.connect(connects.popleft()[1], now)
            ready = [self.members[key.data] for key, _ in self._joining.select(0)]
            for member in ready:
                self._read(member, now)
            touched = self._dirty & self._joiners
            self._dirty -= touched
            for index in touched:
                self._flush_member(self.members[index], time.monotonic())
        finally:
            self._serving = False

    def _joiners_first(self, ready: list[Member]) -> list[Member]:
        """Read and answer the members in ``ready`` that are still joining; the others, to
        read next (a whole room rejoining after a restart is read this way)."""
        joining = [m for m in ready if m.session.state is not SessionState.JOINED]
        if not joining:
            return ready
        for member in joining:
            self._read(member, time.monotonic())
        self._flush(time.monotonic())
        return [m for m in ready if m.session.state is SessionState.JOINED]

    def _read(self, member: Member, now: float) -> None:
        session = member.session
        for _ in range(READ_BATCH):
            try:
                data, addr = member.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # an ICMP error from an earlier send: costs nothing here
            if member.index in self._joiners:
                kind = wire.datagram_type(data)
                if kind == wire.DatagramType.CHALLENGE and member.challenged_at is None:
                    member.challenged_at = now
                elif kind == wire.DatagramType.ACCEPT and member.accepted_at is None:
                    member.accepted_at = now
            session.receive_datagram(data, (addr[0], addr[1]), now)
        self._dirty.add(member.index)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        count = 0
        while timers and timers[0][0] <= now:
            deadline, _, index = heapq.heappop(timers)
            member = self.members[index]
            if member.scheduled != deadline:
                continue
            member.scheduled = math.inf
            member.session.handle_timer(now)
            self._dirty.add(index)
            count += 1
            if count % JOINER_CHECK == 0:
                self._serve_joiners()

    def _flush(self, now: float) -> None:
        count = 0
        while self._dirty:
            self._flush_member(self.members[self._dirty.pop()], now)
            count += 1
            if count % JOINER_CHECK == 0:
                self._serve_joiners()

    def _watch(self, member: Member) -> None:
        """Serve ``member`` out of turn until its WELCOME."""
        if member.index not in self._joiners:
            self._joiners.add(member.index)
            self._joining.register(member.sock, selectors.EVENT_READ, member.index)

    def _flush_member(self, member: Member, now: float) -> None:
        session = member.session
        if session.state is not SessionState.JOINED:
            self._watch(member)
        for data, addr in session.datagrams_to_send(now):
            with contextlib.suppress(OSError):
                member.sock.sendto(data, addr)
        for event in session.events():
            self._note(member, event, now)
        timer = session.next_timer()
        if timer is not None:
            timer = max(timer, now)
            if timer < member.scheduled:
                member.scheduled = timer
                self._order += 1
                heapq.heappush(self._timers, (timer, self._order, member.index))

    def _note(self, member: Member, event: ev.ClientEvent, now: float) -> None:
        if self.keep_events:
            member.events.append(event)
        if isinstance(event, ev.Welcomed):
            self.welcomed += 1
            member.joined_at = now
            if member.index in self._joiners:
                self._joiners.discard(member.index)
                self._joining.unregister(member.sock)
        elif isinstance(event, ev.MessageReceived):
            self.messages[event.text] = self.messages.get(event.text, 0) + 1
            member.lines[event.text] = member.lines.get(event.text, 0) + 1
            if event.own:
                self.posted_at.setdefault(event.text, now)
        elif isinstance(event, ev.MemberLeft) and event.reason == "timed out":
            self.timed_out.append(event.nick)
        elif isinstance(event, ev.ConnectionLost):
            self.lost += 1

    def missing(self, texts: Sequence[str]) -> int:
        """Lines not (yet) seen by a member that was in the room when they were posted: it
        was welcomed in an earlier turn than the one in which the sender saw the line posted
        (a member that rejoined later gets only the relay's join history, protocol.md 6.3).
        A line never posted counts once per member."""
        count = 0
        for text in texts:
            posted = self.posted_at.get(text)
            for member in self.members:
                there = posted is None or (
                    member.joined_at is not None and member.joined_at < posted
                )
                if there and not member.lines.get(text):
                    count += 1
        return count

    def duplicated(self, texts: Sequence[str]) -> int:
        """Deliveries of ``texts`` beyond the first, over all members."""
        return sum(max(0, m.lines.get(text, 0) - 1) for m in self.members for text in texts)

    def close(self) -> None:
        self._joining.close()
        self.selector.close()
        for member in self.members:
            member.sock.close()
