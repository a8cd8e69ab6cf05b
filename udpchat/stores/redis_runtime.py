"""The threads of the Redis room store: the reader, the housekeeper, and whether Redis is up.

The reader follows the room's stream and this relay's inbox with one XREAD BLOCK (at most one
housekeeping period, so that a stop is noticed) and queues what it reads for the core. The
housekeeper runs one script per period (udpchat.stores.redis_scripts.HOUSEKEEP) that keeps
this relay's key and every nickname its members hold alive in one round trip, whatever the
number of members, and hands the relays that died to exactly one survivor.

Both threads hold the store's ``lock`` only to filter what they read into its queue, never
during a Redis call, and call ``wake`` after releasing it: the driver's lock is never taken
while the store's is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from udpchat import faults
from udpchat.relay.shared_log import LogUnavailable, RelayLost
from udpchat.stores.redis_view import Entries

if TYPE_CHECKING:
    from udpchat.stores.redis import RedisSharedLog

__all__ = [
    "READ_COUNT", "Health", "Housekeeper", "Line", "Reader", "entries_of", "redacted",
    "wants_resp3",
]

log = logging.getLogger("udpchat.relay.redis")

# Stream entries read per XREAD: the reader hands them to the core in batches this large.
READ_COUNT = 512
# Query parameters of a Redis URL that are credentials (redis-py reads them there too).
_SECRET_PARAMETERS = frozenset({"password", "username"})

def redacted(url: str) -> str:
    """``url`` without its credentials (in the user part or the query, where redis-py also
    takes them), for logs and the start line."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = parts.query
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        query = urlencode(
            [(key, "***" if key.lower() in _SECRET_PARAMETERS else value) for key, value in pairs],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def wants_resp3(url: str) -> bool:
    """Whether the URL asks for RESP3, whose replies (a dict for XREAD) the store does not
    read."""
    return any(value.strip() == "3" for value in parse_qs(urlsplit(url).query).get("protocol", []))


def entries_of(reply: Any) -> Entries:
    """Stream entries as (id, fields), from redis-py's parsed XREAD/XRANGE or a script's
    raw reply ([id, [field, value, ...]])."""
    entries: Entries = []
    for entry_id, fields in reply or []:
        if isinstance(fields, dict):
            entries.append((entry_id, fields))
        else:
            entries.append((entry_id, dict(zip(fields[::2], fields[1::2], strict=True))))
    return entries


class Line:
    """A connection of ``client`` kept for one kind of call on the room's hot path (the
    reader's XREAD, the append script): the command is written and its answer read on it
    directly, without redis-py's per-command layers (the pool's checkout and release, the
    retry wrapper, the event hooks), which cost about twice the CPU of the call itself: per
    XREAD of one entry, 141 against 47 µs (bench/scripts/redis_event_cost.py).

    Same settings as the client (its URL's password, TLS, db and time-outs: the connection
    is made by its pool, and connects, or connects again after a failure, at its next
    call); no retries, as the client is set. The answers are raw: in the protocol redis-py
    speaks by default (RESP3 from redis-py 8 on, RESP2 before), which the callers read in
    either shape. Errors are redis-py's: a connection that failed is closed by redis-py, so
    the next call starts afresh. Calls are serialized."""

    def __init__(self, client: redis.Redis) -> None:
        self._connection: Any = client.connection_pool.make_connection()
        self._lock = threading.Lock()

    def call(self, *args: Any) -> Any:
        with self._lock:
            connection = self._ready()
            connection.send_command(*args, check_health=False)
            return connection.read_response()

    def _ready(self) -> Any:
        """The connection, closed first if Redis closed it meanwhile (called locked)."""
        connection = self._connection
        # As the pool checks a connection it hands out: one with something to read between
        # calls was closed by Redis (a restart, an idle time-out): open another before
        # sending, rather than fail the call on the old one (can_read connects one that is
        # not connected yet).
        try:
            stale = connection.can_read(timeout=0)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            connection.disconnect()
        return connection

    def bind(self, script: Any) -> Callable[..., Any]:
        """A registered script (redis-py's ``Script``) run on this line, called as the script
        is (``keys=``, ``args=``): by its digest; by its text (which loads it) if this Redis
        does not have it (restarted, flushed, SCRIPT FLUSH)."""

        def run(keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
            try:
                return self.call("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return self.call("EVAL", script.script, len(keys), *keys, *args)

        return run

    def bind_many(self, script: Any) -> Callable[[list[list[Any]], tuple[Any, ...]], list[Any]]:
        """A registered script run once for each list of arguments (no keys), then the
        command ``then``, all sent in one write and answered in order: the answers, where
        an error (a script Redis refused, or the connection failing before that answer)
        stands in for the answer it replaced. ``RedisError`` if nothing could be sent."""

        def run(
            calls: list[list[Any]], then: tuple[Any, ...], loaded: bool = False
        ) -> list[Any]:
            commands = [("EVALSHA", script.sha, 0, *args) for args in calls]
            commands.append(then)
            with self._lock:
                connection = self._ready()
                connection.send_packed_command(
                    connection.pack_commands(commands), check_health=False
                )
                answers: list[Any] = []
                try:
                    for _ in commands:
                        try:
                            answers.append(connection.read_response())
                        except redis.ResponseError as error:
                            answers.append(error)
                except redis.RedisError as error:  # the rest will not be answered
                    answers += [error] * (len(commands) - len(answers))
            missing = redis.exceptions.NoScriptError
            if not loaded and all(isinstance(a, missing) for a in answers[:-1]):
                # None of them ran (this Redis does not have the script): load it, again.
                self.call("SCRIPT", "LOAD", script.script)
                return run(calls, then, loaded=True)
            return answers

        return run

    def close(self) -> None:
        # Not under the lock: a reader still blocked in XREAD (its thread did not stop in
        # time) is woken by its socket closing, as with the client's own close.
        self._connection.disconnect()


class Health:
    """Whether Redis answers; an outage is logged once when it starts and once when it ends.

    An error reply (``ResponseError``: a script or command Redis refused) is not an outage:
    Redis answered. It is counted in ``errors`` and logged at ERROR the first time."""

    def __init__(self, where: str, log: logging.Logger) -> None:
        self.where = where
        self.down = False
        self.errors = 0
        self.outages = 0  # counts outages begun: a call answered says nothing of a later one
        self._log = log
        self._lock = threading.Lock()

    def failed(self, error: Exception) -> LogUnavailable:
        """Note a failed call; the error for the caller to raise."""
        if isinstance(error, redis.ResponseError):
            with self._lock:
                self.errors += 1
                first = self.errors == 1
            if first:
                self._log.error(
                    "the room's Redis at %s refused a command (%s): the call is refused; "
                    "later refusals are counted, not logged", self.where, error,
                )
            return LogUnavailable(f"the room's Redis at {self.where} refused a command")
        with self._lock:
            started, self.down = not self.down, True
            self.outages += started
        if started:
            self._log.warning(
                "the room's Redis at %s is out of reach (%s): posts are refused until it is back",
                self.where,
                error,
            )
        return LogUnavailable(f"the room's Redis at {self.where} is out of reach")

    def ok(self, since: int | None = None) -> None:
        """A call was answered; ``since``: the ``outages`` count when it was sent (an
        outage noticed while it was under way, a blocked XREAD, is not ended by it)."""
        if not self.down:
            return
        with self._lock:
            if since is not None and since != self.outages:
                return
            ended, self.down = self.down, False
        if ended:
            self._log.warning("the room's Redis at %s is back", self.where)


class Reader:
    """Follows the room's stream and this relay's inbox until the store closes."""

    def __init__(self, store: RedisSharedLog) -> None:
        self._store = store

    def run(self) -> None:
        store = self._store
        while not store.stopping.is_set():
            try:
                self._follow()
            except Exception as error:  # a bug must not stop the room's arrivals for good
                faults.report("RedisSharedLog.reader", error, log)  # re-raises in strict mode
                store.stopping.wait(store.period)  # not a busy loop if it fails each time

    def _follow(self) -> None:
        store = self._store
        block = max(1, round(store.period * 1000))
        while not store.stopping.is_set():
            try:
                queued = self.read_once(block)
            except redis.RedisError as error:
                store.health.failed(error)
                store.stopping.wait(store.period)
                continue
            if queued:
                store.wake()

    def read_once(self, block: int) -> bool:
        """One XREAD of the stream and the inbox (waiting up to ``block`` ms), filtered into
        the queue; True if something was queued. ``RedisError`` if Redis did not answer."""
        store = self._store
        log_key, inbox_key = store.keys.log.encode(), store.keys.inbox(store.relay_hex).encode()
        view = store.view
        with view.lock:
            generation = view.generation
            if int(view.read_id.split("-")[0]) < view.seen:
                view.read_id = f"{view.seen}-0"  # appends here read those already
            read_id, inbox_id = view.read_id, view.inbox_id
        outages = store.health.outages
        got = store.reader_line.call(
            "XREAD", "COUNT", READ_COUNT, "BLOCK", block, "STREAMS", log_key, inbox_key,
            read_id, inbox_id,
        )
        if isinstance(got, dict):
            got = list(got.items())  # RESP3 answers a map: stream -> entries
        elif got is not None and not isinstance(got, list):
            raise TypeError(f"XREAD answered a {type(got).__name__}, not a list")
        store.health.ok(outages)
        queued = False
        with view.lock:
            if generation != view.generation:
                return False  # read from the stream of an epoch that has ended
            replies: list[Any] = list(got or [])
            for name, reply in replies:
                entries = entries_of(reply)
                if not entries:
                    continue
                last = entries[-1][0]
                last_id = last.decode() if isinstance(last, bytes) else str(last)
                if name in (log_key, log_key.decode()):
                    queued |= view.take_entries(entries)
                    view.read_id = last_id
                else:
                    queued |= view.take_inbox(entries, store.moved_away)
                    view.inbox_id = last_id
        return queued


class Housekeeper:
    """Once a period: this relay alive, its claims held, dead relays noticed."""

    def __init__(self, store: RedisSharedLog) -> None:
        self._store = store
        self._first = True
        # The lost relays (hex) of lost:THIS_RELAY already queued for the core: each round
        # returns all of lost:THIS_RELAY, and only what is not here yet is queued.
        self._queued: set[str] = set()
        # When the last round was answered (time.monotonic()), None after one that was not:
        # a relay judges whether the others are alive only on a round that follows an
        # answered one closely, never on the first after an outage (the others' keys may
        # have expired meanwhile, and they get a period to renew them).
        self._answered_at: float | None = None
        # Rounds Redis ran in time and answered (what a wait for "a few periods" counts).
        self.rounds = 0

    def run(self) -> None:
        store = self._store
        while not store.stopping.wait(store.period):
            try:
                self.run_once()
            except redis.RedisError as error:
                self._answered_at = None
                store.health.failed(error)
            except Exception as error:  # a bug must not let this relay's key expire
                faults.report("RedisSharedLog.housekeeper", error, log)

    def run_once(self) -> None:
        """One round; ``RedisError`` if Redis did not answer."""
        store = self._store
        keys = store.keys
        with store.view.lock:  # one epoch's (not under claims_lock: a new epoch takes it)
            fresh, known, seen = store.view.fresh, store.view.epoch, store.view.seen
        started = time.monotonic()
        last = self._answered_at
        steady = last is not None and started - last <= 2 * store.period + store.timeout
        with store.claims_lock:
            held = list(store.claims.items())
            sent = time.time()
            deadline = sent * 1000 + store.clock_offset_ms + store.timeout * 500
            epoch, revived, lost, dead, clock, late = store.housekeep_script(
                keys=[keys.nick(key) for key, _ in held],
                args=[
                    keys.prefix, store.relay_hex, store.ttl_ms, fresh, known, seen,
                    *(value for _, value in held),
                    int(deadline), "1" if steady else "0",
                ],
            )
            answered = time.time()
            # A round Redis ran too late did nothing (and read nothing): the next one is
            # not steady either.
            self._answered_at = None if late else time.monotonic()
            taken = 0
            for index in lost:
                key, value = held[int(index) - 1]
                if store.claims.get(key) == value:
                    del store.claims[key]
                    taken += 1
        if taken:
            # A session that moved to another relay (its MemberLeftForRelay is on its way),
            # or, after this relay was out of reach for longer than its ttl, a member of
            # another relay took the nickname meanwhile: two members share it until one of
            # them leaves or changes it.
            level = logging.WARNING if revived else logging.DEBUG
            log.log(level, "room %r: %d nickname claims of this relay are held elsewhere now",
                    store.room, taken)
        store.health.ok()
        # Redis's clock when it ran the script, against this machine's halfway through.
        redis_ms = int(clock[0]) * 1000 + int(clock[1]) / 1000
        store.clock_offset_ms = redis_ms - (sent + answered) * 500
        if late:  # nothing was done, nothing read: nothing to learn from its answer
            return
        self.rounds += 1
        first, self._first = self._first, False
        queued = renewed = False
        owed = {gone[0].decode(): gone[1:] for gone in dead}
        self._queued.intersection_update(owed)  # the rest was cleared, or went with an old epoch
        with store.view.lock:
            if not first and epoch != store.view.epoch:
                store.view.adopt(epoch)
                queued = renewed = True
            for relay, nicks in owed.items():
                if relay in self._queued:
                    continue
                self._queued.add(relay)
                store.view.queue.append(
                    RelayLost(bytes.fromhex(relay), tuple(nick.decode() for nick in nicks))
                )
                queued = True
        if revived and not first and not renewed:  # a new epoch says more than this
            log.warning(
                "room %r: this relay was out of reach of Redis for longer than its ttl; the "
                "other relays may have announced its members as left", store.room
            )
        announced = store.announced[:]
        if announced:  # the core has them: no other relay need announce them now
            store.client.hdel(keys.lost(store.relay_hex), *announced)
            del store.announced[: len(announced)]
        if revived and not first and not renewed:
            # The other relays may have removed this relay's members: they are here still.
            members = list(store.members.values())
            if members:
                pipe = store.client.pipeline(transaction=False)
                for member in members:
                    record = f"{store.relay_hex} {member.resume_secret.hex()} {member.nick}"
                    pipe.hset(keys.members, member.token.hex(), record)
                pipe.execute()
        if queued:
            store.wake()
