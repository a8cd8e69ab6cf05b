"""A relay whose timed posts are stamped at each hop of their way (cluster_load.py --hops).

    python bench/scripts/cluster_hops.py OUT.json relay ARGS...   # as ``udpchat relay ARGS``

Runs ``udpchat relay`` in this process with stamps added around the room store (nothing of
the relay is changed otherwise) and writes them to OUT.json when the relay stops. A timed
post's text is ``t<time.monotonic() when its member sent it>`` (cluster_load.py), and
``time.monotonic()`` is one clock for every process of the machine, so the hops of one post
line up across the relays:

- ``own``: for each timed post this relay numbered, (sent, append started, append done): the
  way from the member to the relay's core, then the store's append (for Redis, the script's
  round trip, on the serving thread).
- ``foreign``: for each timed post of another relay that this relay's reader thread brought
  (XREAD), (sent, XREAD returned, the driver's lock taken, fanned out and sent): the way
  through Redis to this relay's reader, the wait for the serving thread's lock, the fan-out.

``summarize`` lines the relays' files up into percentiles of each hop. Environment:
``UDPCHAT_BENCH_SWITCH_INTERVAL`` (seconds) sets the relay's ``sys.setswitchinterval``
(CPython's GIL hand-over interval, 5 ms by default) to measure what it does.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _posted_at(message: object) -> float | None:
    text = getattr(message, "text", "")
    if isinstance(text, str) and text.startswith("t"):
        try:
            return float(text[1:])
        except ValueError:
            return None
    return None


def _stamp(out: Path) -> None:
    """Wrap the store's append, the reader's XREAD and Driver.call with stamps."""
    from udpchat import messages as m
    from udpchat.driver import Driver
    from udpchat.relay.room_log import MemoryRoomLog
    from udpchat.stores.redis import RedisSharedLog

    own: list[tuple[float, float, float]] = []
    foreign: list[tuple[float, float, float, float]] = []
    local = threading.local()

    def wrap_append(cls: Any) -> None:
        original = cls.append

        def append(self: Any, event: Callable[[int], Any], msgid: bytes = b"") -> Any:
            built: list[Any] = []

            def builder(seq: int) -> Any:
                built.append(event(seq))
                return built[-1]

            start = time.monotonic()
            logged = original(self, builder, msgid)
            end = time.monotonic()
            sent = _posted_at(built[0]) if built else None
            if sent is not None:
                own.append((sent, start, end))
            return logged

        cls.append = append

    wrap_append(MemoryRoomLog)
    wrap_append(RedisSharedLog)
    if hasattr(RedisSharedLog, "append_many"):  # a serving turn's posts, numbered together
        original_many = RedisSharedLog.append_many

        def append_many(self: Any, events: list[tuple[Any, bytes]]) -> Any:
            built: list[Any] = []

            def stamped(event: Callable[[int], Any]) -> Callable[[int], Any]:
                def builder(seq: int) -> Any:
                    built.append(event(seq))
                    return built[-1]

                return builder

            start = time.monotonic()
            results = original_many(self, [(stamped(e), msgid) for e, msgid in events])
            end = time.monotonic()
            for message in built:
                sent = _posted_at(message)
                if sent is not None:
                    own.append((sent, start, end))
            return results

        RedisSharedLog.append_many = append_many  # type: ignore[method-assign]

    original_start = RedisSharedLog.start

    def start(self: RedisSharedLog, wake: Callable[[], None]) -> None:
        # The reader's XREAD: on its own connection (redis_runtime.Line) where there is one,
        # else through the client.
        line = getattr(self, "reader_line", None)
        target: Any = line if line is not None else self.reader_client
        name = "call" if line is not None else "xread"
        original_read = getattr(target, name)

        def xread(*args: Any, **kwargs: Any) -> Any:
            got = original_read(*args, **kwargs)
            read = time.monotonic()
            posts: list[float] = []
            replies = list(got.items()) if isinstance(got, dict) else got or []
            for _name, entries in replies:
                for _id, fields in entries:
                    if not isinstance(fields, dict):
                        fields = dict(zip(fields[::2], fields[1::2], strict=True))
                    data = fields.get(b"e")
                    if data:
                        sent = _posted_at(m.decode_message(data))
                        if sent is not None:
                            posts.append(sent)
            local.batch = (read, posts)
            return got

        setattr(target, name, xread)

        def stamped_wake() -> None:
            batch = getattr(local, "batch", None)
            local.batch = None
            local.locked = math.nan
            wake()
            done = time.monotonic()
            if batch is not None:
                foreign.extend((sent, batch[0], local.locked, done) for sent in batch[1])

        original_start(self, stamped_wake)

    RedisSharedLog.start = start  # type: ignore[method-assign]

    original_call = Driver.call

    def call(self: Any, action: Callable[[float], Any]) -> Any:
        def stamped(now: float) -> Any:
            local.locked = time.monotonic()
            return action(now)

        return original_call(self, stamped)

    Driver.call = call  # type: ignore[method-assign]

    def write() -> None:
        out.write_text(json.dumps({"own": own, "foreign": foreign}))

    atexit.register(write)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summarize(files: list[Path]) -> dict[str, object]:
    """p50/p99 (ms) of each hop, over every relay's stamps."""
    own: dict[float, tuple[float, float]] = {}
    foreign: list[tuple[float, float, float, float]] = []
    for path in files:
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for sent, start, end in data["own"]:
            own[sent] = (start, end)
        foreign.extend(tuple(row) for row in data["foreign"])
    hops: dict[str, list[float]] = {
        "to_core": [start - sent for sent, (start, _) in own.items()],
        "append": [end - start for start, end in own.values()],
        "append_to_read": [],
        "read_to_lock": [],
        "lock_to_sent": [],
        "sent_to_sent_foreign": [],
    }
    for sent, read, locked, done in foreign:
        if sent in own:
            hops["append_to_read"].append(read - own[sent][0])
        if not math.isnan(locked):
            hops["read_to_lock"].append(locked - read)
            hops["lock_to_sent"].append(done - locked)
        hops["sent_to_sent_foreign"].append(done - sent)
    return {
        name: {"n": len(values), "p50": _pct(values, 0.5), "p99": _pct(values, 0.99)}
        for name, values in hops.items()
    }


USAGE = "usage: python bench/scripts/cluster_hops.py OUT.json relay ARGS..."


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1].startswith("-") or sys.argv[2] != "relay":
        # a stray `--help` would otherwise become the output file's name
        sys.exit(f"{USAGE}\n(runs `udpchat relay ARGS` with its hops stamped into OUT.json)")
    out = Path(sys.argv[1])
    interval = os.environ.get("UDPCHAT_BENCH_SWITCH_INTERVAL")
    if interval:
        sys.setswitchinterval(float(interval))
    _stamp(out)
    from udpchat.cli import main as udpchat_main

    sys.argv = ["udpchat", *sys.argv[2:]]
    udpchat_main()


if __name__ == "__main__":
    main()
