"""Where a relay keeps its room log, chosen by a store URL (``udpchat relay --store URL``).

``memory:`` keeps the room in the relay process (it ends with it); ``sqlite:PATH`` keeps it
in one SQLite file, so that a restarted relay carries the room on (protocol.md 6.6);
``redis://HOST:PORT/DB`` (or ``rediss://`` for TLS) with a room name keeps it in Redis, where
several relays share it (protocol.md 6.8, docs/scaling.md; needs ``udpchat[redis]``). Other
URLs are refused in one line. The relay core sees only the ``RoomLog`` interface; this
package is the only place that knows how a store is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from udpchat.relay.room_log import MemoryRoomLog, RoomLog
from udpchat.stores.errors import StoreError

__all__ = [
    "DEFAULT_ROOM", "MEMORY", "Background", "StoreError", "StoreURL", "default_store_path",
    "open_store", "parse_store", "room_error",
]

MEMORY = "memory:"
SQLITE = "sqlite:"
REDIS_SCHEMES = ("redis", "rediss")
# The room of ``--store redis://...`` without ``--room``.
DEFAULT_ROOM = "main"
MAX_ROOM_LENGTH = 64
_ROOM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
REDIS_MISSING = (
    "--store redis:// needs the redis package: pip install 'udpchat[redis]' "
    "(or pip install redis)"
)


@dataclass(frozen=True, slots=True)
class StoreURL:
    kind: str  # "memory", "sqlite" or "redis"
    path: Path | None = None  # the file, for sqlite
    url: str = ""  # the server, for redis
    room: str = DEFAULT_ROOM  # the room's name on that server, for redis

    def __str__(self) -> str:
        if self.kind == "redis":
            from udpchat.stores.redis_runtime import redacted

            return f"{redacted(self.url)} room {self.room}"
        return MEMORY if self.path is None else f"{SQLITE}{self.path}"


@runtime_checkable
class Background(Protocol):
    """A store with threads of its own (Redis): the relay starts them once it serves, with
    what wakes its serving loop, and ``close`` stops them."""

    def start(self, wake: Callable[[], None]) -> None: ...

    def describe(self) -> str: ...


def room_error(room: str) -> str | None:
    """Why ``room`` cannot name a room on Redis, or None."""
    if not 1 <= len(room) <= MAX_ROOM_LENGTH:
        return f"--room: expected 1 to {MAX_ROOM_LENGTH} characters, got {len(room)}"
    if not set(room) <= _ROOM_CHARS:
        return f"--room: letters, digits, '.', '_' and '-' only, got {room!r}"
    return None


def _redis_url_error(url: str) -> str | None:
    """Why ``url`` does not name a Redis server and database, or None."""
    expected = "expected redis://HOST:PORT/DB (or rediss://)"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (it raises for a port that is not a number up to 65535)
    except ValueError:
        return f"--store: {expected}, got a bad port in {url!r}"
    if not parts.hostname:
        return f"--store: {expected}, got no host in {url!r}"
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        return f"--store: {expected}, got database {database!r} (a number)"
    return None


def parse_store(url: str, room: str | None = None) -> StoreURL:
    """Read a store URL (``room``: the room's name, for redis); ``StoreError`` (one line) for
    one this version cannot use."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if room is not None and scheme not in REDIS_SCHEMES:
        raise StoreError("--room names a room on Redis: it goes with --store redis://...")
    if scheme in REDIS_SCHEMES:
        problem = _redis_url_error(url) or room_error(room if room is not None else DEFAULT_ROOM)
        if problem is not None:
            raise StoreError(problem)
        return StoreURL("redis", url=url, room=room if room is not None else DEFAULT_ROOM)
    if url == MEMORY:
        return StoreURL("memory")
    if url.startswith(SQLITE):
        path = url[len(SQLITE) :]
        if path.startswith("//"):  # sqlite:///abs/path, as other tools write it
            path = path[2:]
        if not path:
            raise StoreError("--store sqlite: needs a file, e.g. sqlite:room.sqlite3")
        return StoreURL("sqlite", Path(path).expanduser())
    raise StoreError(
        f"--store: expected memory:, sqlite:PATH or redis://HOST:PORT/DB, got {url!r}"
    )


def default_store_path(host: str, port: int) -> Path:
    """The room store of ``udpchat relay --host HOST --port PORT`` in the state directory,
    beside its key: ``relay-127.0.0.1-9000.sqlite3``."""
    from udpchat.identity import default_key_path

    return default_key_path(host, port).with_suffix(".sqlite3")


def open_store(
    store: StoreURL, history: int, rng: Callable[[int], bytes], timeout: float | None = None
) -> RoomLog:
    """The room log kept in ``store``; ``StoreError`` if it cannot be used. ``timeout``: the
    relay's member timeout, which a shared store gives a dead relay's members to move."""
    if store.kind == "redis":
        try:
            from udpchat.stores.redis import RedisSharedLog
        except ModuleNotFoundError as error:
            if error.name is None or error.name.split(".")[0] != "redis":
                raise
            raise StoreError(REDIS_MISSING) from None
        if timeout is None:
            return RedisSharedLog(store.url, store.room, history, rng)
        return RedisSharedLog(store.url, store.room, history, rng, ttl=timeout)
    if store.path is None:
        return MemoryRoomLog(history, rng)
    from udpchat.stores.sqlite import SqliteRoomLog

    return SqliteRoomLog(store.path, history, rng)
