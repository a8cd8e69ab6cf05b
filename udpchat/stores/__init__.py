"""Where a relay keeps its room log, chosen by a store URL (``udpchat relay --store URL``).

``memory:`` keeps the room in the relay process (it ends with it); ``sqlite:PATH`` keeps it
in one SQLite file, so that a restarted relay carries the room on (protocol.md 6.6). Other
URLs are refused in one line. The relay core sees only the ``RoomLog`` interface; this
package is the only place that knows how a store is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from udpchat.relay.room_log import MemoryRoomLog, RoomLog
from udpchat.stores.errors import StoreError

__all__ = ["MEMORY", "StoreError", "StoreURL", "default_store_path", "open_store", "parse_store"]

MEMORY = "memory:"
SQLITE = "sqlite:"


@dataclass(frozen=True, slots=True)
class StoreURL:
    kind: str  # "memory" or "sqlite"
    path: Path | None = None  # the file, for sqlite

    def __str__(self) -> str:
        return MEMORY if self.path is None else f"{SQLITE}{self.path}"


def parse_store(url: str) -> StoreURL:
    """Read a store URL; ``StoreError`` (one line) for one this version cannot use."""
    if url == MEMORY:
        return StoreURL("memory")
    if url.startswith(SQLITE):
        path = url[len(SQLITE) :]
        if path.startswith("//"):  # sqlite:///abs/path, as other tools write it
            path = path[2:]
        if not path:
            raise StoreError("--store sqlite: needs a file, e.g. sqlite:room.sqlite3")
        return StoreURL("sqlite", Path(path).expanduser())
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme in ("redis", "rediss"):
        raise StoreError(f"--store {scheme}:// is not supported by this version of udpchat")
    raise StoreError(f"--store: expected memory: or sqlite:PATH, got {url!r}")


def default_store_path(host: str, port: int) -> Path:
    """The room store of ``udpchat relay --host HOST --port PORT`` in the state directory,
    beside its key: ``relay-127.0.0.1-9000.sqlite3``."""
    from udpchat.identity import default_key_path

    return default_key_path(host, port).with_suffix(".sqlite3")


def open_store(store: StoreURL, history: int, rng: Callable[[int], bytes]) -> RoomLog:
    """The room log kept in ``store``; ``StoreError`` if it cannot be used."""
    if store.path is None:
        return MemoryRoomLog(history, rng)
    from udpchat.stores.sqlite import SqliteRoomLog

    return SqliteRoomLog(store.path, history, rng)
