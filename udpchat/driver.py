"""One serving loop for any sans-I/O endpoint: a datagram transport, a thread and a lock.

The relay and the client are both shells around an :class:`~udpchat.endpoint.Endpoint`, and
both need the same loop: sleep until a datagram arrives or the endpoint's next timer is due,
read what is queued into an inbox (``udpchat.inbox``: bounded, urgent datagrams first), take
a bounded batch from it (so that replies to many inputs leave together and one busy peer
cannot starve the timers), run the timers, send what the endpoint wants to send, and hand
out what the shell drains from it (events). This module is that loop, once.

Large output (a relay's fan-out to a thousand members) leaves in slices; between slices the
loop reads the socket into the inbox again, so that the kernel's buffer does not overflow
while it encodes, and when an urgent datagram (a joiner's handshake) is waiting it stops
sending to handle it first and goes on with the rest of the output in the next turn.

Threads. The endpoint is not thread-safe. Its own thread (``start``) is the only one that
receives; any other thread that acts on the endpoint goes through :meth:`Driver.call`, which
holds the driver's lock around the call and then, on the calling thread, sends what the call
produced and hands out what it emitted. Sending from the caller spares every user action a
thread hand-off (a wake-up costs tens of microseconds in Python, and shows in latency). A
call that moved the endpoint's next timer earlier than the driver's current sleep has the
transport end that sleep at the new timer (``wake_at``, an alarm: the answer to what the
call sent usually wakes the loop well before it), or now (``wake()``) on a transport without.
A reader holds ``lock`` (never to change the endpoint: that is what ``call`` is for).

Handing out. Both threads drain the endpoint (``take``, under the lock, in the order things
happened) into one backlog, and one thread at a time hands it out (``deliver``, without the
lock, so that a callback may call back into the driver): a thread that finds another one
handing out leaves its items to it. Items are therefore handed out in order, exactly once,
and a call's own items before the call returns unless another thread is handing out then.

Faults. A core call that raises must not end a room: every call into the endpoint is
guarded here, in one place; the exception is reported through :mod:`udpchat.faults` (logged
once, counted in ``internal_errors``; re-raised in strict mode, which ends the loop with a
``failure``), and the datagram, timer run or output of that call is lost. A send the system
refuses is one lost datagram, counted by errno.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast

from udpchat import faults
from udpchat.endpoint import Address, Endpoint
from udpchat.inbox import Inbox
from udpchat.transport import DatagramTransport, ErrorLog

__all__ = [
    "IDLE_WAIT", "MAX_BATCH", "PAUSE_NOTICED", "READ_AHEAD", "READ_AHEAD_BYTES", "STOP_TIMEOUT",
    "BatchingEndpoint", "Driver",
]

# Queued datagrams of each kind (urgent, others) taken in per turn before timers run and
# output is flushed: under load, replies to many inputs leave together and the link bundles
# messages into fewer datagrams.
MAX_BATCH = 64
# What the inbox may hold, and the most datagrams read into it at a time: about as much as
# the relay's socket buffer (relay_server.SOCKET_BUFFER), so that a burst the kernel would
# have kept is kept here instead, where handshakes can be taken out of turn. Not more: what
# waits long is answered late, and late acknowledgements only cause retransmissions.
READ_AHEAD_BYTES = 1024 * 1024
READ_AHEAD = 1024
# Longest sleep without a timer, so that a stop request is never missed for long.
IDLE_WAIT = 0.5
# What ``join`` waits for the loop to notice a stop by default.
STOP_TIMEOUT = 2 * IDLE_WAIT + 1
# A driver thread that wakes this much later than it asked to was not running: the process
# was stopped (Ctrl-Z) or the machine slept.
PAUSE_NOTICED = 3.0

T = TypeVar("T")
Item = TypeVar("Item")


class BatchingEndpoint(Endpoint, Protocol):
    """An endpoint that can hand out its output in slices (the relay, for a large fan-out)."""

    def datagrams_to_send(
        self, now: float, limit: int | None = None
    ) -> list[tuple[bytes, Address]]: ...


class Driver(Generic[Item]):
    """Runs ``endpoint`` on ``transport`` in one thread until stopped or ``finished()``.

    ``label`` names the endpoint in fault reports (``RelayCore.receive_datagram``). ``take(now)``
    is called under the lock after every turn and every ``call`` and returns what to hand out;
    ``deliver(items)`` gets them, never an empty list (a shell with work of its own to do
    off the lock returns an item that says so).
    ``on_exit(error)`` runs on the loop's thread when it ends, with the exception that ended
    it, if any. With ``send_batch``, the endpoint is a :class:`BatchingEndpoint` and output is
    fetched and sent that many datagrams at a time. With ``peer``, only datagrams from that
    address reach the endpoint (a client talks to its relay alone); the shell may change
    ``peer`` under the lock (a client moving to another relay). With ``urgent``, the
    queued datagrams for which it holds are handed to the endpoint before the others (the
    relay: handshakes ahead of session traffic), and a sliced output stops for them.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        transport: DatagramTransport,
        *,
        label: str,
        log: logging.Logger,
        name: str,
        take: Callable[[float], list[Item]],
        deliver: Callable[[list[Item]], None],
        finished: Callable[[], bool] = lambda: False,
        on_exit: Callable[[BaseException | None], None] | None = None,
        send_batch: int | None = None,
        peer: Address | None = None,
        urgent: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Replaceable until ``start`` (tests and benchmarks wrap it to watch the traffic).
        self.transport = transport
        self._label = label
        self._log = log
        self._name = name
        self._take = take
        self._deliver = deliver
        self._finished = finished
        self._on_exit = on_exit
        self._send_batch = send_batch
        self.peer = peer
        self._inbox = Inbox(READ_AHEAD_BYTES, urgent)
        self.lock = threading.Lock()
        # Notified under ``lock`` whenever the endpoint may have changed; see ``wait_for``.
        self.changed = threading.Condition(self.lock)
        self._waiters = 0  # threads in ``wait_for``: a turn notifies only when there are
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._done = False
        self._sleeping_until = 0.0  # when the loop's current wait ends; 0 while it works
        self._alarm_set = False  # a call asked the transport to end that wait early
        self._backlog: list[Item] = []
        self._handing_out = False
        self._last_look = 0.0
        # (resumed at, seconds) of the last time this process was found to have been paused.
        self.pause: tuple[float, float] | None = None
        # Datagrams handed to the endpoint.
        self.received = 0
        # Times reading stopped at a full inbox: the endpoint was behind (a load signal).
        self.inbox_full = 0
        # Exceptions an endpoint call raised and the loop survived (see udpchat.faults).
        self.internal_errors = 0
        # Sends the transport refused, by errno: each lost one datagram, nothing more.
        self.send_errors_by_errno: dict[int, int] = {}
        self._send_errors = ErrorLog("sendto", self.send_errors_by_errno)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Run the loop in a daemon thread of its own."""
        self._thread = threading.Thread(target=self.run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end now (it sends what is ready first); returns at once."""
        with self.lock:
            self._stopping = True
            self.changed.notify_all()
        self.transport.wake()

    def join(self, timeout: float | None = STOP_TIMEOUT) -> None:
        """Wait for the loop's thread to end (not when called from that thread)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self) -> None:
        """The loop, in the calling thread: until ``stop()`` or ``finished()``."""
        error: BaseException | None = None
        try:
            self._serve()
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self.lock:
                self._done = True
                self.changed.notify_all()
            if self._on_exit is not None:
                self._on_exit(error)

    # --- other threads ------------------------------------------------------------------------

    def call(self, action: Callable[[float], T]) -> T:
        """``action(now)`` under the lock; then send what it produced and hand out what it
        emitted, on this thread. Its exception, if any, is the caller's."""
        with self.lock:
            now = time.monotonic()
            result = action(now)
            out = self._output(now)
            mine = self._collect(now)
            # The loop sleeps until ``_sleeping_until`` (0: it is awake and looks again):
            # wake it if that is now too late, or if the call finished the endpoint.
            timer = self._next_timer()
            sleeping = self._sleeping_until
            wake = sleeping > 0 and self._finished()
            alarm: float | None = None
            if not wake and timer is not None and timer < sleeping:
                # The answer to what the call sends usually comes before that timer and
                # wakes the loop anyway: where the transport can, it ends the wait at the
                # timer instead of now (a turn now would only compute the wait again). A
                # timer already due (ASAP: work the call left for after its datagrams have
                # gone) wakes the loop.
                if timer > now and hasattr(self.transport, "wake_at"):
                    alarm = self._sleeping_until = timer
                    self._alarm_set = True
                else:
                    wake = True
            if wake:
                self._sleeping_until = 0.0  # one wake-up per sleep is enough
            if self._waiters:
                self.changed.notify_all()
        try:
            self._send(out)  # first: the alarm is not on the datagrams' way
        finally:  # whatever a wrapped transport raised, the loop's wait is kept right
            if wake:
                self.transport.wake()
            elif alarm is not None:
                with self.lock:
                    # Unless the loop has looked at the timers again since, or another call
                    # asked for an earlier time (its own to set): never replaced by a later.
                    if self._alarm_set and self._sleeping_until == alarm:
                        self.transport.wake_at(alarm)  # type: ignore[attr-defined]
        if mine is not None:
            self._hand_out(mine)
        return result

    def post(self, items: list[Item]) -> None:
        """Hand out ``items`` after whatever is waiting, as if ``take`` had returned them."""
        with self.lock:
            self._backlog.extend(items)
            mine = self._claim()
        if mine is not None:
            self._hand_out(mine)

    def guard(self, call: str, action: Callable[[], T]) -> T | None:
        """``action()``, an endpoint call the shell makes itself (holding the lock); None if
        it raised, which is reported like any other endpoint fault."""
        try:
            return action()
        except Exception as error:
            self._fault(call, error)
            return None

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` (checked under the lock) holds; False after ``timeout``,
        or at once when the loop ended or was stopped, or the endpoint finished."""
        end = time.monotonic() + timeout
        with self.changed:
            self._waiters += 1
            try:
                while not condition():
                    remaining = end - time.monotonic()
                    if remaining <= 0 or self._stopping or self._done or self._finished():
                        return condition()
                    self.changed.wait(min(remaining, IDLE_WAIT))
                return True
            finally:
                self._waiters -= 1

    # --- the loop -----------------------------------------------------------------------------

    def _serve(self) -> None:
        self._last_look = time.monotonic()
        while True:
            with self.lock:
                if self._stopping or self._finished():
                    break
                timer = self._next_timer()
                now = self._look(0.0)
                wait = IDLE_WAIT if timer is None else min(max(timer - now, 0.0), IDLE_WAIT)
                if self._inbox:
                    wait = 0.0  # read, then take what waits
                self._sleeping_until = now + wait
                if self._alarm_set:  # ``timer`` includes what it was set for
                    self._alarm_set = False
                    self.transport.wake_at(None)  # type: ignore[attr-defined]
            self._turn(self.transport.recvfrom(wait), wait, timer)
        with self.lock:  # a last flush: what the final turn or a call left behind
            now = time.monotonic()
            out = self._output(now)
            mine = self._collect(now)
        self._send(out)
        if mine is not None:
            self._hand_out(mine)

    def _read_ahead(self, got: tuple[bytes, Address] | None) -> None:
        """Read ``got`` and what else the socket holds into the inbox (called locked)."""
        # ``peer`` as it is now: the shell may move it between turns (it does so locked).
        if not self._inbox.fill(got, self.transport.recvfrom, self.peer, READ_AHEAD):
            self.inbox_full += 1

    def _turn(self, got: tuple[bytes, Address] | None, slept: float, timer: float | None) -> None:
        """Read ``got`` and what else is queued into the inbox, take a batch from it
        (urgent datagrams first), run due timers, flush.

        ``timer`` is the endpoint's next timer as the loop read it before sleeping: the
        timers run if it is due. The endpoint's timer is read once a turn (it costs a walk
        over the endpoint's state): one that the batch made due runs at the next turn, which
        the loop then starts without sleeping; output the batch made due goes out now.

        A datagram that came alone (``_read``) skips the inbox, and a turn takes the lock
        once unless urgent answers leave first: a quiet endpoint's every turn is that one."""
        early: list[tuple[bytes, Address]] = []
        with self.lock:
            now = self._look(slept)
            self._sleeping_until = 0.0
            batch = self._read(got)
            if batch is None:
                # Joiners first: their answers leave before the session traffic is even
                # looked at; what is beyond a batch waits for the next turn: timers and
                # output first.
                urgent, batch = self._inbox.take(MAX_BATCH)
                if urgent:
                    self._receive(urgent, now)
                    # Their answers (an ACCEPT, then its WELCOME: about two datagrams each)
                    # leave before the rest of the output is even encoded, and before timers.
                    early = self._output(now, 2 * len(urgent))
            if not early:  # the common case: the whole turn under one hold of the lock
                out, mine = self._rest_of_turn(batch, timer, now)
        if early:
            self._send(early, whole=False)  # one slice: the rest after the batch
            with self.lock:
                out, mine = self._rest_of_turn(batch, timer, now)
        self._send(out, reading=True)
        if mine is not None:
            self._hand_out(mine)

    def _rest_of_turn(
        self, batch: list[tuple[bytes, Address]], timer: float | None, now: float
    ) -> tuple[list[tuple[bytes, Address]], list[Item] | None]:
        """Hand ``batch`` to the endpoint, run its timers if due, and return the output to
        send and the items to hand out (called locked)."""
        if batch:
            self._receive(batch, now)
        if timer is not None and timer <= now:
            try:
                self.endpoint.handle_timer(now)
            except Exception as error:
                self._fault("handle_timer", error)
        out = self._output(now)
        mine = self._collect(now)
        if self._waiters:
            self.changed.notify_all()
        return out, mine

    def _read(self, got: tuple[bytes, Address] | None) -> list[tuple[bytes, Address]] | None:
        """Read ``got`` and what else the socket holds. A datagram that came alone, the
        common case of a quiet endpoint (nothing waiting in the inbox, nothing behind it in
        the socket, and not urgent: it needs no turn ahead of others), is the batch as it
        is: ``[got]``, or [] if it is not from ``peer``. Otherwise None: what was read is in
        the inbox (called locked)."""
        inbox = self._inbox
        if got is None or inbox:
            if got is not None or not inbox.full:
                self._read_ahead(got)
            return None
        is_urgent = inbox.is_urgent
        if is_urgent is not None and is_urgent(got[0]):
            self._read_ahead(got)
            return None
        following = self.transport.recvfrom(0.0)
        peer = self.peer
        mine = peer is None or got[1] == peer
        if following is None:
            return [got] if mine else []
        if mine:
            inbox.put(*got)
        # the rest of what is queued: ``got`` was the first of READ_AHEAD
        if not inbox.fill(following, self.transport.recvfrom, peer, READ_AHEAD - 1):
            self.inbox_full += 1
        return None

    def _receive(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Hand ``batch`` to the endpoint (called locked)."""
        endpoint = self.endpoint
        for data, addr in batch:
            self.received += 1
            try:
                endpoint.receive_datagram(data, addr, now)
            except Exception as error:
                self._fault("receive_datagram", error)

    def _look(self, slept: float) -> float:
        """The time now; a jump of more than PAUSE_NOTICED since the loop last looked, beyond
        the ``slept`` it asked for, means the process was stopped (Ctrl-Z, a closed laptop
        lid), wherever the stop caught it (called locked)."""
        now = time.monotonic()
        stopped = now - self._last_look - slept
        if stopped > PAUSE_NOTICED:
            self.pause = (now, stopped + slept)
        self._last_look = now
        return now

    # --- endpoint calls, guarded (called locked) -----------------------------------------------

    def _next_timer(self) -> float | None:
        try:
            return self.endpoint.next_timer()
        except Exception as error:
            self._fault("next_timer", error)
            return None

    def _output(self, now: float, limit: int | None = None) -> list[tuple[bytes, Address]]:
        """The endpoint's output: one slice of at most ``limit`` (or ``send_batch``)
        datagrams from a batching endpoint, everything from another."""
        try:
            if self._send_batch is None:
                return self.endpoint.datagrams_to_send(now)
            batching = cast(BatchingEndpoint, self.endpoint)
            return batching.datagrams_to_send(now, min(limit or self._send_batch, self._send_batch))
        except Exception as error:
            self._fault("datagrams_to_send", error)
            return []

    def _fault(self, call: str, error: Exception) -> None:
        self.internal_errors += 1
        faults.report(f"{self._label}.{call}", error, self._log)  # re-raises in strict mode

    # --- output and handing out -----------------------------------------------------------------

    def _send(
        self, out: list[tuple[bytes, Address]], reading: bool = False, whole: bool = True
    ) -> None:
        """Send ``out``; a full slice means more is waiting: fetch and send the next one
        (unless not ``whole``: then ``out`` alone). ``reading`` (the loop's own thread):
        between slices, read the socket into the inbox, and leave the rest of the output to
        the next turn when an urgent datagram waits (the endpoint's timer says output is
        pending, so that turn comes at once).

        A send that fails loses that datagram and nothing else (the link resends it)."""
        transport = self.transport
        while True:
            for data, addr in out:
                try:
                    transport.sendto(data, addr)
                except OSError as error:
                    self._send_errors.failed(error, time.monotonic())
            if not whole or self._send_batch is None or len(out) < self._send_batch:
                return
            with self.lock:
                if reading:
                    if not self._inbox.full:
                        self._read_ahead(None)
                    if self._inbox.urgent_waiting:
                        return
                out = self._output(time.monotonic())

    def _collect(self, now: float) -> list[Item] | None:
        """Move what the shell takes into the backlog; when no other thread is handing it
        out, make this one do it and return the items to deliver (called locked)."""
        self._backlog.extend(self._take(now))
        return self._claim()

    def _claim(self) -> list[Item] | None:
        """The backlog, if this thread is now the one handing out (called locked)."""
        if self._handing_out:
            return None  # that thread delivers ours too, after its own
        if not self._backlog:
            return None  # nothing to hand out: most turns
        self._handing_out = True
        items, self._backlog = self._backlog, []
        return items

    def _hand_out(self, items: list[Item]) -> None:
        """Deliver ``items``, then the backlog until it is empty (called unlocked)."""
        try:
            while True:
                self._deliver(items)
                with self.lock:
                    items, self._backlog = self._backlog, []
                    if not items:
                        self._handing_out = False
                        return
        except BaseException:
            with self.lock:
                self._handing_out = False
            raise
