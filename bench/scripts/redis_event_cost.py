"""What one room event costs a relay on Redis, in CPU: the append, and the reading.

Starts a ``redis-server`` on a free loopback port (no persistence) and opens two relays'
``RedisSharedLog`` on one room of it, without their threads: this process plays both, one
call at a time, so that each call's CPU (``time.thread_time``) is its own. Per event:

- ``append``: relay A numbers a chat line (the Lua script's round trip, on the serving
  thread in a relay);
- ``read_foreign``: relay B's reader reads it (XREAD) and queues it for its core, one event
  per read, as at a chat rate;
- ``read_own``: relay A's reader reads its own entry (every relay reads the whole stream:
  a reader blocked in XREAD when the append ran is handed it), which it only checks off;
- ``take``: relay B's core takes what was queued (``arrived``).

Medians over ``--events``, in microseconds; wall time beside CPU for the append (a round trip
to Redis). Runs against whichever ``udpchat`` is on the path, so the same script measures two
checkouts (PYTHONPATH=...).

    python bench/scripts/redis_event_cost.py --events 2000

A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from udpchat import messages as m
from udpchat.stores import redis_runtime
from udpchat.stores.redis import RedisSharedLog
from udpchat_bench.redis_server import own_redis_server


def _read(store: RedisSharedLog) -> bool:
    """One pass of the store's reader: XREAD (not blocking: the entry is there) and queue."""
    reader = redis_runtime.Reader(store)
    read_once: Callable[[int], bool] | None = getattr(reader, "read_once", None)
    if read_once is not None:
        return read_once(1)
    view = store.view  # the reader's loop body, as it was before ``read_once``
    log_key = store.keys.log.encode()
    inbox_key = store.keys.inbox(store.relay_hex).encode()
    with view.lock:
        streams: dict[Any, Any] = {log_key: view.read_id, inbox_key: view.inbox_id}
    got: Any = store.reader_client.xread(streams, count=redis_runtime.READ_COUNT, block=1)
    queued = False
    with view.lock:
        for name, reply in got or []:
            entries = redis_runtime.entries_of(reply)
            if not entries:
                continue
            last = entries[-1][0]
            if name in (log_key, log_key.decode()):
                queued |= view.take_entries(entries)
                view.read_id = last.decode() if isinstance(last, bytes) else str(last)
    return queued


def run(events: int) -> dict[str, Any]:
    with own_redis_server() as server:
        url = server.url
        a = RedisSharedLog(url, "cost", 100, os.urandom)
        b = RedisSharedLog(url, "cost", 100, os.urandom)
        times: dict[str, list[float]] = {
            "append_cpu": [], "append_wall": [], "read_foreign": [], "read_own": [], "take": [],
        }
        text = "t" + "x" * 40
        for index in range(events + 50):
            c0, w0 = time.thread_time(), time.perf_counter()
            a.append(lambda seq: m.ChatMessage(seq, 1_700_000_000, "ann", text))
            c1, w1 = time.thread_time(), time.perf_counter()
            queued = _read(b)
            with a.view.lock:
                a.view.seen -= 1  # as when the reader was blocked in XREAD before the append
            c2 = time.thread_time()
            _read(a)
            c3 = time.thread_time()
            with a.view.lock:
                a.view.seen = max(a.view.seen, a.view.last_seq)
            taken = b.arrived()
            c4 = time.thread_time()
            assert queued and len(taken) == 1, (queued, taken)
            if index >= 50:  # the first ones warm caches and connections
                times["append_cpu"].append(c1 - c0)
                times["append_wall"].append(w1 - w0)
                times["read_foreign"].append(c2 - c1)
                times["read_own"].append(c3 - c2)
                times["take"].append(c4 - c3)
        a.close()
        b.close()
        return {
            name + "_us": round(1e6 * statistics.median(values), 1)
            for name, values in times.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(run(args.events)))


if __name__ == "__main__":
    main()
