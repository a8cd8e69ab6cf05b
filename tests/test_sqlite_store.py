"""The room log in a SQLite file (udpchat.stores.sqlite): what it keeps across a reopen, what
it enforces in the file, and the files it refuses; and store URLs (udpchat.stores)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from udpchat import messages as m
from udpchat import wire
from udpchat.relay.room_log import EventBuilder, KeptMember, MemoryRoomLog
from udpchat.stores import StoreError, StoreURL, default_store_path, open_store, parse_store
from udpchat.stores.sqlite import APPLICATION_ID, ID_RING, SCHEMA_VERSION, SqliteRoomLog

pytestmark = pytest.mark.unit


def rng(seed: int = 1) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def chat(text: str) -> EventBuilder:
    return lambda seq: m.ChatMessage(seq, 1_700_000_000, "alice", text)


def joined(nick: str) -> EventBuilder:
    return lambda seq: m.Joined(seq, 1_700_000_000, nick)


def texts(data: list[bytes]) -> list[str]:
    return [
        getattr(m.decode_message(d), "text", "") or getattr(m.decode_message(d), "nick", "")
        for d in data
    ]


def crash(log: SqliteRoomLog) -> None:
    """What ``kill -9`` leaves: the file as last committed, and its lock released."""
    log._db.close()


def rows(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_new_file_gets_a_fresh_epoch_and_numbers_from_one(tmp_path: Path) -> None:
    log = SqliteRoomLog(tmp_path / "room.sqlite3", 10, rng(3))
    assert log.epoch == random.Random(3).randbytes(wire.EPOCH_SIZE)
    assert (log.last_seq, log.first_seq) == (0, 1)
    assert log.append(chat("hi")).seq == 1
    assert log.append(joined("bob"), b"").seq == 2
    assert texts(log.replay(0)) == ["hi", "bob"]


def test_events_epoch_ids_and_members_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 10, rng(3))
    log.append(joined("alice"))
    log.append(chat("one"), b"id-one")
    log.keep_member(KeptMember(b"t" * 8, "alice", b"s" * 32))
    log.keep_member(KeptMember(b"u" * 8, "bob", b"v" * 32))
    log.forget_member(b"u" * 8)
    log.commit()
    log.append(chat("two"), b"id-two")
    log.close()
    again = SqliteRoomLog(path, 10, rng(4))  # another random source: the epoch is the file's
    assert again.epoch == log.epoch and again.last_seq == 3 and again.first_seq == 1
    assert texts(again.replay(1)) == ["one", "two"]
    assert texts(again.recent_chats(1)) == ["two"]
    assert again.posted_ids(10) == [(b"id-one", 2), (b"id-two", 3)]
    assert again.kept_members() == [KeptMember(b"t" * 8, "alice", b"s" * 32)]
    assert again.append(chat("three")).seq == 4  # the sequence continues


def test_what_was_not_committed_is_not_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 10, rng())
    log.append(chat("kept"))
    log.commit()
    log.append(chat("lost in a crash"))  # no commit: the process dies here
    crash(log)
    crashed = SqliteRoomLog(path, 10, rng())
    assert crashed.last_seq == 1 and texts(crashed.replay(0)) == ["kept"]


def test_retention_is_enforced_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 3, rng())
    for i in range(10):
        log.append(chat(f"m{i}"), f"id{i}".encode())
        log.commit()
    assert (log.first_seq, texts(log.replay(0))) == (8, ["m7", "m8", "m9"])
    log.close()
    assert rows(path, "events") == 3
    again = SqliteRoomLog(path, 3, rng())
    assert (again.first_seq, again.last_seq, texts(again.replay(0))) == (8, 10, ["m7", "m8", "m9"])
    # Across a restart, posts are recognised as far as the history reaches.
    assert again.posted_ids(2000) == [(b"id7", 8), (b"id8", 9), (b"id9", 10)]


def test_history_zero_keeps_no_text_but_the_sequence_and_recent_ids(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 0, rng())
    log.append(chat("a"), b"id-a")
    for i in range(ID_RING + 1):
        log.append(chat("b"), f"id{i}".encode())
    log.close()
    again = SqliteRoomLog(path, 0, rng())
    assert (again.last_seq, again.first_seq, again.replay(0)) == (ID_RING + 2, ID_RING + 3, [])
    again.close()
    assert rows(path, "events") == ID_RING
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM events WHERE data IS NOT NULL").fetchone() == (0,)
    ids = again.posted_ids(1000)
    assert len(ids) == ID_RING and ids[-1] == (f"id{ID_RING}".encode(), ID_RING + 2)


def test_a_smaller_history_on_reopen_loads_only_that_much(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 10, rng())
    for i in range(6):
        log.append(chat(f"m{i}"))
    log.close()
    again = SqliteRoomLog(path, 2, rng())
    assert texts(again.replay(0)) == ["m4", "m5"]
    crash(again)
    assert rows(path, "events") == 2  # the file was cut to the new history at once
    again = SqliteRoomLog(path, 2, rng())
    again.append(chat("m6"))
    again.close()
    assert rows(path, "events") == 2
    bigger = SqliteRoomLog(path, 50, rng())
    assert texts(bigger.replay(0)) == ["m5", "m6"] and bigger.last_seq == 7
    bigger.append(chat("m7"))
    bigger.close()
    assert texts(SqliteRoomLog(path, 50, rng()).replay(0)) == ["m5", "m6", "m7"]


def test_it_behaves_as_the_memory_log(tmp_path: Path) -> None:
    """The same calls give the same answers on both stores (within one process)."""
    memory = MemoryRoomLog(4, rng(5))
    sqlite = SqliteRoomLog(tmp_path / "room.sqlite3", 4, rng(5))
    for i in range(9):
        build = chat(f"m{i}") if i % 3 else joined(f"n{i}")
        msgid = f"i{i}".encode() if i % 3 else b""
        a, b = memory.append(build, msgid), sqlite.append(build, msgid)
        assert a == b
        sqlite.commit()
    assert memory.epoch == sqlite.epoch
    for after in range(0, 10):
        assert memory.replay(after) == sqlite.replay(after)
    assert memory.recent_chats(3) == sqlite.recent_chats(3)
    assert memory.posted_ids(4) == sqlite.posted_ids(4)
    assert (memory.first_seq, memory.last_seq) == (sqlite.first_seq, sqlite.last_seq)


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my shopping list\n" * 100)
    with pytest.raises(StoreError, match=r"not a udpchat room store \(not an SQLite database\)"):
        SqliteRoomLog(path, 10, rng())
    assert path.read_bytes() == b"my shopping list\n" * 100


def test_another_applications_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE accounts (id INTEGER, balance INTEGER)")
        db.execute("INSERT INTO accounts VALUES (1, 100)")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another application's database"):
        SqliteRoomLog(path, 10, rng())
    assert path.read_bytes() == before


def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    SqliteRoomLog(path, 10, rng()).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}; this udpchat"):
        SqliteRoomLog(path, 10, rng())


def test_a_damaged_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    log = SqliteRoomLog(path, 50, rng())
    for i in range(40):
        log.append(chat(f"message number {i} " * 20))
    log.close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    assert int.from_bytes(data[68:72], "big") == APPLICATION_ID
    for i in range(4096 + 16, len(data), 7):  # every page after the first, scrambled
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        SqliteRoomLog(path, 50, rng())
    assert path.read_bytes() == bytes(data)


def test_a_file_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    first = SqliteRoomLog(path, 10, rng())
    first.append(chat("mine"))
    first.commit()
    with pytest.raises(StoreError, match="in use by another process"):
        SqliteRoomLog(path, 10, rng())
    first.close()
    assert texts(SqliteRoomLog(path, 10, rng()).replay(0)) == ["mine"]


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "room.sqlite3"
    SqliteRoomLog(path, 10, rng()).close()
    assert path.stat().st_mode & 0o777 == 0o600


# --- store URLs ---------------------------------------------------------------------------------


def test_store_urls() -> None:
    assert parse_store("memory:") == StoreURL("memory")
    assert parse_store("sqlite:room.db") == StoreURL("sqlite", Path("room.db"))
    assert parse_store("sqlite:///var/x.db") == StoreURL("sqlite", Path("/var/x.db"))
    assert str(parse_store("sqlite:/var/x.db")) == "sqlite:/var/x.db"
    assert parse_store("redis://localhost:6379/0", "lobby") == StoreURL(
        "redis", url="redis://localhost:6379/0", room="lobby"
    )
    assert parse_store("rediss://localhost/1").room == "main"
    for bad in ("sqlite:", "postgres://x", "room.db", "", "redis://", "redis://h/db"):
        with pytest.raises(StoreError):
            parse_store(bad)


def test_the_default_store_is_named_after_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_store_path("::1", 9000) == tmp_path / "udpchat" / "relay-__1-9000.sqlite3"


def test_open_store_gives_each_kind(tmp_path: Path) -> None:
    assert isinstance(open_store(parse_store("memory:"), 5, rng()), MemoryRoomLog)
    log = open_store(parse_store(f"sqlite:{tmp_path}/r.db"), 5, rng())
    assert isinstance(log, SqliteRoomLog)
