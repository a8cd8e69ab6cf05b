"""The room log in one SQLite file: the room survives a restart of its relay (protocol.md 6.6).

One file holds one room: its epoch and newest seq, the newest ``history`` events (encoded as
members receive them), the message ids of recent posts, and the members that may resume.
Reads come from memory (the kept events are loaded at open), so the relay's hot path never
queries the file; writes are queued and written by ``commit`` in one transaction, which the
relay calls once per serving-loop turn, before that turn's datagrams are sent.

The file is opened in WAL mode with ``synchronous=NORMAL``: a committed transaction survives
the relay's crash (``kill -9``); only a power loss or OS crash can take back the last commits.
A file is recognised by its ``application_id``; ``user_version`` is the schema version. Any
other file (not SQLite, another application's database, another schema version, failing
``quick_check``) is refused with ``StoreError`` and never written to.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from udpchat import wire
from udpchat.relay.room_log import (
    EventBuilder,
    KeptMember,
    LoggedEvent,
    MemoryRoomLog,
)
from udpchat.stores.errors import StoreError

__all__ = ["APPLICATION_ID", "ID_RING", "SCHEMA_VERSION", "SqliteRoomLog"]

# 'udpc': what PRAGMA application_id says of a udpchat room store.
APPLICATION_ID = 0x75647063
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE room (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BLOB NOT NULL
);
CREATE TABLE events (
    slot INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    chat INTEGER NOT NULL,
    msgid BLOB NOT NULL,
    data BLOB
);
CREATE TABLE members (
    token BLOB PRIMARY KEY,
    nick TEXT NOT NULL,
    resume_secret BLOB NOT NULL
);
"""
TABLES = frozenset({"room", "events", "members"})
# With no history, the file still keeps the newest events' numbers and message ids (no
# text): the sequence, and posts resent after a restart, must still be recognised.
ID_RING = 64


class SqliteRoomLog(MemoryRoomLog):
    """A ``RoomLog`` kept in ``path``; created (with a fresh epoch from ``rng``) if missing.

    The events table is a ring of ``history`` rows (``ID_RING`` without history): an event
    goes to slot ``seq % ring``, replacing the one ``ring`` events older, so that retention
    costs no DELETE and a commit usually writes one page of the file. What the room reads is
    the memory log's (restored from the file when it opens); this class adds the writing."""

    def __init__(self, path: Path, history: int, rng: Callable[[int], bytes]) -> None:
        if history < 0:  # before the file is touched (MemoryRoomLog checks it again later)
            raise ValueError("history cannot be negative")
        self.path = path
        self._history = history
        self._ring = history or ID_RING
        self._db = _open(path)
        try:
            epoch = self._load_epoch(rng)
            rows = self._load_ring()
            members = self._db.execute("SELECT token, nick, resume_secret FROM members").fetchall()
        except (sqlite3.DatabaseError, ValueError, TypeError) as error:
            self._db.close()
            raise StoreError(f"{path}: the room store is damaged ({error})") from None
        super().__init__(history, rng, epoch)
        self._last_seq = rows[-1][0] if rows else 0
        for seq, chat, _, data in rows if history else []:  # the ring holds ``history``
            if data is not None:  # written while the room kept no history
                self._keep(LoggedEvent(seq, bool(chat), bytes(data)))
        self._ids.extend((bytes(msgid), seq) for seq, _, msgid, _ in rows if msgid)
        for token, nick, secret in members:
            self._members[bytes(token)] = KeptMember(bytes(token), nick, bytes(secret))
        # Changes since the last commit: ring rows to write, member rows to set or delete.
        self._new_rows: list[tuple[int, int, bool, bytes, bytes | None]] = []
        self._member_changes: dict[bytes, KeptMember | None] = {}
        self._closed = False

    def _load_epoch(self, rng: Callable[[int], bytes]) -> bytes:
        row = self._db.execute("SELECT epoch FROM room WHERE id = 1").fetchone()
        if row is None:
            epoch = rng(wire.EPOCH_SIZE)
            with self._db:
                self._db.execute("INSERT INTO room VALUES (1, ?)", (epoch,))
            return epoch
        epoch = bytes(row[0])
        if len(epoch) != wire.EPOCH_SIZE:
            raise ValueError("a bad epoch")
        return epoch

    def _load_ring(self) -> list[tuple[int, int, bytes, bytes | None]]:
        """(seq, chat, msgid, data) of the ring's events, oldest first; a ring of another
        size (the history was changed) is rewritten to this one's, in one transaction."""
        ring = self._ring
        rows = self._db.execute(
            "SELECT slot, seq, chat, msgid, data FROM events ORDER BY seq"
        ).fetchall()
        seqs = [row[1] for row in rows]
        if len(set(seqs)) != len(seqs) or any(seq < 1 for seq in seqs):
            raise ValueError("events numbered twice or below 1")
        events = [(seq, chat, msgid, data) for _, seq, chat, msgid, data in rows]
        if len(rows) > ring or any(slot != seq % ring for slot, seq, *_ in rows):
            events = events[-ring:]
            if not self._history:
                events = [(seq, chat, msgid, None) for seq, chat, msgid, _ in events]
            with self._db:
                self._db.execute("DELETE FROM events")
                self._db.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                    [(seq % ring, seq, chat, msgid, data) for seq, chat, msgid, data in events],
                )
        return events

    # --- RoomLog: what the memory log does, and the rows to write -----------------------------

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        logged = super().append(event, msgid)
        data = logged.data if self._history else None
        self._new_rows.append((logged.seq % self._ring, logged.seq, logged.chat, msgid, data))
        return logged

    def keep_member(self, member: KeptMember) -> None:
        super().keep_member(member)
        self._member_changes[member.token] = member

    def forget_member(self, token: bytes) -> None:
        if token in self._members:
            self._member_changes[token] = None
        super().forget_member(token)

    def commit(self) -> None:
        """Write what changed since the last commit in one transaction (nothing if nothing
        did). On failure the changes stay queued and the next commit tries again."""
        if not self._new_rows and not self._member_changes:
            return
        if self._closed:
            raise StoreError(f"{self.path}: the room store was closed with changes to write")
        db = self._db
        with db:  # one transaction; rolled back if anything in it fails
            if self._new_rows:
                db.executemany(
                    "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?)", self._new_rows
                )
            for token, member in self._member_changes.items():
                if member is None:
                    db.execute("DELETE FROM members WHERE token = ?", (token,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO members VALUES (?, ?, ?)",
                        (token, member.nick, member.resume_secret),
                    )
        self._new_rows.clear()
        self._member_changes.clear()

    def close(self) -> None:
        """Commit what is queued and close the file (once; later calls do nothing)."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._db.close()


def _open(path: Path) -> sqlite3.Connection:
    """Open (or create) a room store; ``StoreError`` for anything that is not one."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        head = None
    except OSError as error:
        raise StoreError(f"cannot read the room store {path}: {error.strerror or error}") from None
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a udpchat room store (not an SQLite database)")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if head is None:  # it holds resume secrets: nobody else's to read (SQLite gives
            # its -wal and -shm files the database's mode)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # The relay's serving thread and the thread that stops it both use the log, one at
        # a time (under the driver's lock, or after serving ended). A file another process
        # holds is refused at once, not waited for.
        db = sqlite3.connect(path, timeout=0.1, check_same_thread=False)
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"cannot open the room store {path}: {error}") from None
    try:
        # One process owns the file while it runs: a second relay on it is refused (two
        # would number events twice), and without a shared-memory index for other readers
        # a commit costs half as much (measured: 10 us instead of 23 us).
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        _check(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN EXCLUSIVE")  # take the lock now, not at the first commit
        db.execute("COMMIT")
    except StoreError:
        db.close()
        raise
    except sqlite3.OperationalError as error:
        db.close()
        if "locked" in str(error):
            raise StoreError(
                f"{path}: the room store is in use by another process (another relay?)"
            ) from None
        raise StoreError(f"{path}: the room store is damaged ({error})") from None
    except sqlite3.DatabaseError as error:
        db.close()
        raise StoreError(f"{path}: the room store is damaged ({error})") from None
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Recognise a udpchat room store, or make an empty database one."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if app_id == 0 and version == 0 and not tables:
        db.executescript(
            f"BEGIN; PRAGMA application_id={APPLICATION_ID}; "
            f"PRAGMA user_version={SCHEMA_VERSION}; {SCHEMA} COMMIT;"
        )
        return
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is not a udpchat room store (another application's database)")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path} is a udpchat room store of schema version {version}; "
            f"this udpchat reads version {SCHEMA_VERSION}"
        )
    problem = db.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok" or not tables >= TABLES:
        raise StoreError(f"{path}: the room store is damaged ({problem})")
