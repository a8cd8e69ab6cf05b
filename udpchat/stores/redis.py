"""The room on Redis: several relays, one room (protocol.md 6.8; docs/scaling.md).

``RedisSharedLog`` is one relay's ``SharedLog`` over a Redis server (redis-py's blocking
client, with its C parser hiredis where installed: ``udpchat[redis]`` installs it). Every
event of the room is numbered by one Lua script (udpchat.stores.redis_scripts) that INCRs
the room's seq and XADDs the event to the room's stream with the id ``seq-0``, so the room
has one total order whichever relay appends.

Invariants:

- An event reaches the core once, in seq order, never one of this relay's own: what the
  append script returns (the entries between the last seq this relay had seen and the new
  one) and what the reader thread reads with XREAD go through one filter, ``_seen``, under
  one lock. So when ``append`` returns seq S, ``arrived()`` already holds every foreign event
  below S, as the contract asks, without waiting for the reader.
- The stream holds each event encoded with seq 0 (the relay that appends does not know its
  number before the script ran); whoever reads it writes the number in.
- A store that lost the room (flushed, a new instance) has no epoch key: the first script to
  notice starts a new epoch, atomically with emptying the room's other keys, and every relay
  reports ``EpochChanged`` once it sees the new epoch (at an append or within a
  housekeeping period). So does a store whose seq is behind what a relay has seen, or behind
  its stream (restored from an older copy, its seq key evicted): numbers are never reused.
- An append's own entry read by the reader while the append is under way is held back: the
  append returns it, or, if it fails, it is queued in seq order (it is in the room).
- Redis out of reach: every call raises ``LogUnavailable`` and changes nothing here; calls
  made while it is known to be down fail at once, without waiting for a socket timeout. The
  reader and the housekeeper keep trying, and the first success ends the outage. The outage
  is logged once at WARNING when it starts and once when it ends. A command Redis refuses
  (``ResponseError``) is not an outage: it is counted and logged once at ERROR.

The reader and the housekeeper are threads of this object (``start``/``close``); what they
find is queued for the core and ``wake`` is called so that the relay's driver takes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from udpchat import messages as m
from udpchat.names import nick_key
from udpchat.relay.room_log import (
    MIN_KEPT_IDS,
    EventBuilder,
    KeptMember,
    LoggedEvent,
    events_after,
    newest_chats,
)
from udpchat.relay.shared_log import (
    RELAY_ID_SIZE,
    Arrival,
    LogUnavailable,
    RelayLost,
)
from udpchat.stores import redis_scripts as lua
from udpchat.stores.errors import StoreError
from udpchat.stores.redis_runtime import (
    Health,
    Housekeeper,
    Line,
    Reader,
    entries_of,
    redacted,
    wants_resp3,
)
from udpchat.stores.redis_view import RoomView, is_chat, seq_of

__all__ = ["DEFAULT_PERIOD", "DEFAULT_TTL", "MIN_STREAM", "RedisSharedLog"]

log = logging.getLogger("udpchat.relay.redis")

# A relay is presumed dead this long after it last refreshed its key; its members' nicknames
# are held as long. Refreshed every DEFAULT_PERIOD, so several refreshes may fail in a row.
# The relay sets it to its member timeout (udpchat.stores.open_store): a member of a relay
# that died has as long to move to another relay as any member has to come back before it
# is announced as gone (protocol.md 6.8).
DEFAULT_TTL = 10.0
DEFAULT_PERIOD = 1.0
# A relay that stops cleanly lets its key live this much longer (seconds), at most its ttl:
# its members, told it is going (SHUTDOWN), move meanwhile, and are not announced as left.
CLOSE_GRACE = 3.0
# Seconds a command may take before Redis counts as out of reach.
DEFAULT_TIMEOUT = 0.5
# The stream keeps at least this many events whatever --history says: it is also how the
# other relays learn of each event, and a relay that falls further behind misses events.
MIN_STREAM = 10_000


class RedisSharedLog:
    """One relay's view of room ``room`` on the Redis at ``url`` (a ``SharedLog``).

    Opening connects, registers the relay and reads the room (``StoreError`` if Redis cannot
    be reached then); ``start(wake)`` starts the reader and the housekeeper; ``close`` stops
    them and lets the room notice this relay is gone (its key is deleted)."""

    def __init__(
        self,
        url: str,
        room: str,
        history: int,
        rng: Callable[[int], bytes],
        *,
        ttl: float = DEFAULT_TTL,
        period: float = DEFAULT_PERIOD,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if history < 0:
            raise ValueError("history cannot be negative")
        if not 0 < period < ttl:
            raise ValueError("the housekeeping period must be shorter than the relay's ttl")
        self.url = url
        self.room = room
        self._history = history
        self._rng = rng
        self.ttl_ms = max(1, round(ttl * 1000))
        self._timeout = timeout
        self.timeout = timeout  # a call's socket timeout, seconds
        # Redis's clock minus this machine's, in ms (measured each housekeeping round): an
        # append carries a deadline on Redis's clock.
        self.clock_offset_ms = 0.0
        self._appends = itertools.count(1)
        self.period = period
        self._id = rng(RELAY_ID_SIZE)
        self.relay_hex = self._id.hex()
        self.keys = lua.Keys(room)
        self._stream_cap = max(history, MIN_STREAM)
        self._id_cap = max(history, MIN_KEPT_IDS)
        self.health = Health(redacted(url), log)
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if wants_resp3(url):
            raise StoreError(
                f"--store {redacted(url)}: protocol=3 (RESP3) is not supported; leave it out"
            )
        try:
            self.client = redis.Redis.from_url(url, **options)
            # XREAD blocks up to one period: its socket waits that long and more.
            options["socket_timeout"] = period + timeout
            self.reader_client = redis.Redis.from_url(url, **options)
        except ValueError as error:
            raise StoreError(f"--store {redacted(url)}: {error}") from None
        # The hot path's two calls, each on a connection of its own (redis_runtime.Line).
        self.reader_line = Line(self.reader_client)
        self.append_line = Line(self.client)
        register = self.client.register_script
        script = register(lua.APPEND)
        self._append = self.append_line.bind(script)
        self._append_pipeline = self.append_line.bind_many(script)
        self._claim = register(lua.CLAIM)
        self._release = register(lua.RELEASE)
        self._move = register(lua.MOVE)
        self._private = register(lua.PRIVATE)
        self._forget = register(lua.FORGET)
        self.housekeep_script = register(lua.HOUSEKEEP)
        # Shared by the driver's thread, the reader and the housekeeper, under its lock.
        self.view = RoomView(room, self.relay_hex, history, rng)
        self.view.renewed = self._forget_all
        # This relay's members and the nicknames its sessions hold (nick key -> claim value).
        self.members: dict[bytes, KeptMember] = {}
        self.claims: dict[str, str] = {}
        self.claims_lock = threading.Lock()  # a claim changes, or the housekeeper refreshes
        self.announced: list[str] = []  # lost relays handed to the core (list: thread-safe)
        self.wake: Callable[[], None] = lambda: None
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.housekeeper = Housekeeper(self)
        try:
            self.housekeeper.run_once()
            self._roster: list[str] | None = self._open_room()
        except redis.RedisError as error:
            self._close_clients()
            raise StoreError(f"cannot use Redis at {redacted(url)}: {error}") from None

    def _open_room(self) -> list[str]:
        """Read the room as of one seq: its epoch, number, members and recent history."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.epoch)
        pipe.get(self.keys.seq)
        pipe.hvals(self.keys.members)
        pipe.xrevrange(self.keys.log, "+", "-", count=max(self._history, 1))
        epoch, seq, records, newest = pipe.execute()
        with self.view.lock:
            self.view.start_at(epoch or self.view.epoch, int(seq or 0), entries_of(newest))
        return sorted(_nick_of(record) for record in records)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def relay_id(self) -> bytes:
        return self._id

    def describe(self) -> str:
        """Where the room is, for the relay's start line."""
        return f"room {self.room!r} on Redis at {redacted(self.url)} (relay id {self.relay_hex})"

    def start(self, wake: Callable[[], None]) -> None:
        """Start the reader and the housekeeper; ``wake()`` is called (from their threads)
        whenever something was queued for ``arrived()``."""
        self.wake = wake
        for name, target in (
            ("udpchat-redis-reader", Reader(self).run),
            ("udpchat-redis-housekeeper", self.housekeeper.run),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads and let this relay's key expire in CLOSE_GRACE, so that the other
        relays notice soon that it is gone (its members that do not move are then announced
        as left), but not before the members it told it was going (SHUTDOWN) have moved."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for thread in self._threads:
            thread.join(self.period + 2)
        with contextlib.suppress(redis.RedisError):  # otherwise its key expires by itself
            grace = min(self.ttl_ms, round(CLOSE_GRACE * 1000))
            self.client.pexpire(self.keys.relay(self.relay_hex), grace)
        self._close_clients()

    def _close_clients(self) -> None:
        self.append_line.close()
        self.reader_line.close()
        self.client.close()
        self.reader_client.close()

    # --- RoomLog --------------------------------------------------------------------------------

    @property
    def epoch(self) -> bytes:
        return self.view.epoch

    @property
    def last_seq(self) -> int:
        return self.view.last_seq

    @property
    def first_seq(self) -> int:
        return self.view.first_seq

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        result = self.append_many([(event, msgid)])[0]
        if isinstance(result, LogUnavailable):
            raise result
        return result

    def append_many(
        self, events: list[tuple[EventBuilder, bytes]]
    ) -> list[LoggedEvent | LogUnavailable]:
        """Each event appended by its own script, all sent in one write and answered in
        order (a pipeline: one round trip for a serving turn's posts). Each result is what
        ``append`` would return or raise for it alone: the scripts run one after the other,
        each atomic; should the connection fail, the ones not answered are failed appends
        (the reader brings those Redis ran after all)."""
        if not events:
            return []
        built = [(event(0), msgid) for event, msgid in events]
        try:
            self._check_up()
        except LogUnavailable as error:
            return [error] * len(built)
        view = self.view
        numbers = [str(next(self._appends)).encode() for _ in built]
        with view.lock:
            epoch, seen, fresh = view.epoch, view.seen, view.fresh
            for number in numbers:
                view.in_flight[number] = None  # the reader holds its entry back until answered
        # Half the time-out: a script Redis runs after this appends nothing, and one that
        # ran before it has half the time-out for its answer to come back.
        deadline = int(time.time() * 1000 + self.clock_offset_ms + self._timeout * 500)
        calls = [
            [
                self.keys.prefix, epoch, fresh, seen, msgid, self.relay_hex,
                m.encode_message(event), self._stream_cap, self._id_cap, number, deadline,
            ]
            for (event, msgid), number in zip(built, numbers, strict=True)
        ]
        try:
            if len(calls) == 1:
                answers: list[Any] = [self._append(args=calls[0])]
            else:
                # Each script leaves out the entries in between ('0'); one XRANGE after the
                # last reads them all: each answer would repeat its predecessors' otherwise.
                for call in calls:
                    call.append("0")
                log_key = self.keys.log
                *answers, between = self._append_pipeline(
                    calls, ("XRANGE", log_key, f"{seen + 1}-0", "+")
                )
                if isinstance(between, redis.RedisError):
                    # Without them, none of these can be given to the core before the
                    # events numbered below it: they are appends whose answer was lost
                    # (the reader brings those Redis ran, in order).
                    answers = [between] * len(answers)
                else:
                    with view.lock:
                        if view.epoch == epoch:
                            view.take_entries(entries_of(between))
        except redis.RedisError as error:  # nothing was answered
            answers = [error] * len(calls)
        return [
            self._appended(answer, epoch, number, event)
            for answer, number, (event, _) in zip(answers, numbers, built, strict=True)
        ]

    def _appended(
        self, answer: Any, epoch: bytes, number: bytes, built: m.RoomEvent
    ) -> LoggedEvent | LogUnavailable:
        """One append's answer, as the event logged (or why it was not)."""
        if isinstance(answer, redis.RedisError):
            with self.view.lock:  # if it was appended after all, it reaches the core as well
                self.view.failed(number)
            return self.health.failed(answer)
        self.health.ok()
        now_epoch, seq, new, entries = answer
        view = self.view
        with view.lock:
            view.in_flight.pop(number, None)
            if view.epoch != epoch:
                # The housekeeper adopted another epoch meanwhile: what the script answered
                # is of a room this relay has left (and it must not go back to it).
                return LogUnavailable("the room's epoch changed during the append")
            if now_epoch != epoch:
                view.adopt(now_epoch)
            if not seq:  # the room was lost: nothing appended until the core restarts it
                return LogUnavailable("the room's store lost the room: a new epoch")
            if seq < 0:
                return LogUnavailable("the room's store answered too late: nothing appended")
            if not new:
                earlier = [view.foreign(seq_of(i), f) for i, f in entries_of(entries)]
                if earlier and earlier[0] is not None:
                    found = earlier[0]
                    return LoggedEvent(seq, is_chat(found.event), found.data, new=False)
                return LoggedEvent(seq, False, b"", new=False)  # trimmed from the stream
            view.take_entries(entries_of(entries))
            view.seen = max(view.seen, seq)
            final = dataclasses.replace(built, seq=seq)
            logged = LoggedEvent(seq, is_chat(final), m.encode_message(final))
            view.record(logged)
        return logged

    def replay(self, after: int) -> list[bytes]:
        with self.view.lock:
            return events_after(self.view.kept, after)

    def recent_chats(self, count: int) -> list[bytes]:
        if not count or not self._history:
            return []
        with self.view.lock:
            return newest_chats(self.view.kept, count)

    def posted_ids(self, count: int) -> list[tuple[bytes, int]]:
        """None: ``append`` recognises a resent post in Redis itself, across relays."""
        return []

    def keep_member(self, member: KeptMember) -> None:
        record = f"{self.relay_hex} {member.resume_secret.hex()} {member.nick}"
        self._command(lambda: self.client.hset(self.keys.members, member.token.hex(), record))
        self.members[member.token] = member

    def forget_member(self, token: bytes) -> None:
        self._check_up()
        try:
            self._forget(keys=[self.keys.members], args=[token.hex(), self.relay_hex])
        except redis.RedisError as error:
            raise self.health.failed(error) from None
        self.members.pop(token, None)

    def kept_members(self) -> list[KeptMember]:
        """This relay's own members (none when it has just connected)."""
        return list(self.members.values())

    def commit(self) -> None:
        """Nothing to do: every change is written to Redis as it is made."""

    # --- SharedLog ------------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self.view.queue)

    def arrived(self) -> list[Arrival]:
        with self.view.lock:
            taken = self.view.take()
        # Lost relays the core now announces: the housekeeper clears them in Redis.
        self.announced.extend(item.relay.hex() for item in taken if isinstance(item, RelayLost))
        return taken

    def roster(self) -> list[str]:
        """The room's nicknames: as of ``last_seq`` the first time (read with it when the
        log was opened); later (after an epoch change), as Redis has them then."""
        if self._roster is not None:
            roster, self._roster = self._roster, None
            return roster
        records = self._command(lambda: self.client.hvals(self.keys.members))
        return sorted(_nick_of(record) for record in records)

    def claim_nick(self, nick: str, token: bytes) -> bool:
        key = nick_key(nick)
        value = f"{self.relay_hex} {token.hex()}"
        self._check_up()
        with self.claims_lock:
            try:
                held = self._claim(
                    keys=[self.keys.nick(key)], args=[self.keys.prefix, value, self.ttl_ms]
                )
            except redis.RedisError as error:
                raise self.health.failed(error) from None
            if held:
                self.claims[key] = value
        return bool(held)

    def release_nick(self, nick: str, token: bytes) -> None:
        key = nick_key(nick)
        self._check_up()
        with self.claims_lock:
            try:
                self._release(keys=[self.keys.nick(key)], args=[token.hex()])
            except redis.RedisError as error:
                raise self.health.failed(error) from None
            if self.claims.get(key, "").endswith(token.hex()):
                del self.claims[key]

    def find_member(self, token: bytes) -> KeptMember | None:
        record = self._command(lambda: self.client.hget(self.keys.members, token.hex()))
        if record is None:
            return None
        _, secret, nick = record.decode().split(" ", 2)
        return KeptMember(token, nick, bytes.fromhex(secret))

    def move_member(self, old_token: bytes, member: KeptMember) -> bool:
        old = self.find_member(old_token)  # its nickname's claim is one to let go
        old_hex = old_token.hex()
        value = f"{self.relay_hex} {member.token.hex()}"
        new_key = nick_key(member.nick)
        with self.claims_lock:
            held = {key for key, claim in self.claims.items() if claim.endswith(old_hex)}
            if old is not None:
                held.add(nick_key(old.nick))
            held.discard(new_key)
            record = f"{self.relay_hex} {member.resume_secret.hex()} {member.nick}"
            args: list[bytes | str | int] = [
                self.keys.prefix, self.relay_hex, old_hex, member.token.hex(), record, value,
                self.ttl_ms,
            ]
            keys = [self.keys.members, self.keys.nick(new_key)]
            keys += [self.keys.nick(key) for key in sorted(held)]
            try:
                # the old record as MOVE found it (not as read above: the relay that
                # noticed a lost relay may have removed it since)
                found, _ = self._move(keys=keys, args=args)
            except redis.RedisError as error:
                raise self.health.failed(error) from None
            self.health.ok()
            for key in held:
                self.claims.pop(key, None)
            self.claims[new_key] = value
        self.members.pop(old_token, None)
        self.members[member.token] = member
        return bool(found)

    def send_private(self, to: str, data: bytes) -> bool:
        """Hand ``data`` to the relay of ``to``; False if no member of another live relay
        holds that nickname (this relay's own members are found without the store)."""
        self._check_up()
        try:
            sent = self._private(
                keys=[self.keys.nick(nick_key(to))],
                args=[self.keys.prefix, self.relay_hex, to, data],
            )
        except redis.RedisError as error:
            raise self.health.failed(error) from None
        return int(sent) == 2

    # --- Redis calls ----------------------------------------------------------------------------

    def _check_up(self) -> None:
        """Fail at once while Redis is known to be out of reach (the threads probe it)."""
        if self.health.down:
            raise LogUnavailable(f"the room's Redis at {self.health.where} is out of reach")

    def _command(self, call: Callable[[], Any]) -> Any:
        self._check_up()
        try:
            result = call()
        except redis.RedisError as error:
            raise self.health.failed(error) from None
        self.health.ok()
        return result

    def _forget_all(self) -> None:
        """A new epoch: the core resets every session of this relay (they rejoin)."""
        self.members.clear()
        with self.claims_lock:
            self.claims.clear()

    def moved_away(self, token: bytes) -> None:
        """Session ``token`` of this relay resumed on another: it holds nothing here now."""
        self.members.pop(token, None)
        with self.claims_lock:
            for key in [k for k, v in self.claims.items() if v.endswith(token.hex())]:
                del self.claims[key]


def _nick_of(record: bytes) -> str:
    return record.decode().split(" ", 2)[2]
