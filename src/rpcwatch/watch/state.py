"""Live mode's durable state in one SQLite database (standard library, WAL, full sync).

One transaction per delivered batch holds everything that must move together: the files'
checkpoints, the correlation state, the alerts a sink could not take (its spool) and what
the sinks need to recover after a crash (the file sink's committed size). A crash at any
moment leaves the state of the last committed batch, never half of one.

Tables:

* ``files``: one row per logical file, keyed by the fingerprint of its first bytes after
  decompression (``fp_length`` bytes hashed to ``fingerprint``), with ``offset`` in
  decompressed bytes of the data already turned into delivered or spooled alerts.
* ``spool``: documents not yet acknowledged by a sink, in the order they were made.
* ``sinks``: per sink, its recovery data (JSON).
* ``meta``: the correlation state blob, and the ids of correlation alerts already emitted.
* ``rejected``: documents a sink refused for good (a mapping error), kept with the reason.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    fp_length INTEGER NOT NULL,
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    format TEXT NOT NULL DEFAULT '',
    complete INTEGER NOT NULL DEFAULT 0,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_fingerprint ON files (fingerprint);
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_by_sink ON spool (sink, id);
CREATE TABLE IF NOT EXISTS sinks (name TEXT PRIMARY KEY, recovery TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS emitted (event_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    document TEXT NOT NULL,
    at REAL NOT NULL
);
"""
STATE_FILE = "state.sqlite"
CORRELATION_KEY = "correlation"
#: ids of emitted correlation alerts are kept this long: the correlation evaluator may
#: evaluate an episode again for as long as it keeps its events (one row per episode)
EMITTED_RETENTION = 366 * 86_400.0
#: a file not seen for this long is forgotten (a copy of it appearing later is read again)
FILE_RETENTION = 30 * 86_400.0


@dataclass
class FileRecord:
    """A logical file: the same content under any name, plain or compressed."""

    id: int
    fingerprint: str
    fp_length: int
    path: str
    offset: int
    #: decompressed size when last seen (what was there to read)
    size: int
    #: the reader's format name once sniffed; ``unsupported`` when no reader knows it
    format: str
    #: read once as a whole (EVTX, pcap) or a compressed file read to its end
    complete: bool
    last_seen: float


class StateInUse(Exception):
    """Another watcher holds the state directory."""


class StateStore:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        # one watcher per state directory: two would read the same lines twice
        self._lock = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise StateInUse(f"{directory} is in use by another rpcwatch watch") from None
        self.path = directory / STATE_FILE
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when COMMIT returns (NORMAL in WAL mode may lose the
        # last commits on power loss, which would replay delivered alerts)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)

    # -- transactions -------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return Transaction(self._db)

    # -- reads ---------------------------------------------------------------------------

    def files(self) -> list[FileRecord]:
        rows = self._db.execute("SELECT id, fingerprint, fp_length, path, offset, size, format, complete, "
                                "last_seen FROM files").fetchall()
        return [FileRecord(id_, fingerprint, fp_length, path, offset, size, format_, bool(complete), last_seen)
                for id_, fingerprint, fp_length, path, offset, size, format_, complete, last_seen in rows]

    def spooled(self, sink: str, limit: int) -> list[tuple[int, str]]:
        return self._db.execute("SELECT id, document FROM spool WHERE sink = ? ORDER BY id LIMIT ?",
                                (sink, limit)).fetchall()

    def spool_bytes(self, sink: str) -> int:
        return self._db.execute("SELECT COALESCE(SUM(LENGTH(document)), 0) FROM spool WHERE sink = ?",
                                (sink,)).fetchone()[0]

    def spool_count(self, sink: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM spool WHERE sink = ?", (sink,)).fetchone()[0]

    def recovery(self, sink: str) -> dict | None:
        row = self._db.execute("SELECT recovery FROM sinks WHERE name = ?", (sink,)).fetchone()
        return None if row is None else json.loads(row[0])

    def correlation_state(self) -> bytes | None:
        return self.meta(CORRELATION_KEY)

    def meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def emitted(self, event_ids: Iterable[str]) -> set[str]:
        ids = list(event_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            found.update(row[0] for row in self._db.execute(
                f"SELECT event_id FROM emitted WHERE event_id IN ({','.join('?' * len(part))})", part))
        return found

    def rejected(self, sink: str) -> list[tuple[str, dict]]:
        return [(reason, json.loads(document)) for reason, document in self._db.execute(
            "SELECT reason, document FROM rejected WHERE sink = ? ORDER BY id", (sink,))]


class Transaction:
    """``with store.transaction() as tx:`` commits on success, rolls back on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> Transaction:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._db.execute("ROLLBACK" if kind else "COMMIT")

    def add_file(self, fingerprint: str, fp_length: int, path: str, size: int) -> FileRecord:
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO files (fingerprint, fp_length, path, offset, size, last_seen) VALUES (?, ?, ?, 0, ?, ?)",
            (fingerprint, fp_length, path, size, now))
        assert cursor.lastrowid is not None, "an INSERT that succeeded has a row id"
        return FileRecord(cursor.lastrowid, fingerprint, fp_length, path, 0, size, "", False, now)

    def update_file(self, record: FileRecord) -> None:
        self._db.execute("UPDATE files SET fingerprint = ?, fp_length = ?, path = ?, offset = ?, size = ?, "
                         "format = ?, complete = ?, last_seen = ? WHERE id = ?",
                         (record.fingerprint, record.fp_length, record.path, record.offset, record.size,
                          record.format, int(record.complete), record.last_seen, record.id))

    def forget_files(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])

    def spool(self, sink: str, documents: Iterable[str]) -> None:
        self._db.executemany("INSERT INTO spool (sink, document) VALUES (?, ?)",
                             [(sink, document) for document in documents])

    def unspool(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])

    def set_recovery(self, sink: str, recovery: dict) -> None:
        self._db.execute("INSERT INTO sinks (name, recovery) VALUES (?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET recovery = excluded.recovery",
                         (sink, json.dumps(recovery)))

    def set_correlation_state(self, blob: bytes) -> None:
        self.set_meta(CORRELATION_KEY, blob)

    def set_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def mark_emitted(self, event_ids: Iterable[str]) -> None:
        now = time.time()
        self._db.executemany("INSERT OR IGNORE INTO emitted (event_id, at) VALUES (?, ?)",
                             [(i, now) for i in event_ids])
        self._db.execute("DELETE FROM emitted WHERE at < ?", (now - EMITTED_RETENTION,))

    def reject(self, sink: str, rejected: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        self._db.executemany("INSERT INTO rejected (sink, reason, document, at) VALUES (?, ?, ?, ?)",
                             [(sink, reason, document, now) for reason, document in rejected])

