"""The connector's local durable spool: every event is written here before it is published.

SQLite in WAL mode with `synchronous=NORMAL`: a committed append survives a crash of the
connector process (the guarantee the spool exists for); only a power loss of the host could
lose the last commits. Rows are deleted once JetStream has acknowledged them, and everything
still here at start is sent again: `Nats-Msg-Id` makes the resend of an already stored event a
duplicate JetStream drops, and the backend's inbox drops any that outlive the duplicate window.

It also remembers, for a day, the commands the upstream did (`done`): a command comes again when its answer
was late (a connector reconnecting, a long batch) and must not be done twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

Row = tuple[int, str, str, bytes]  # seq, NATS subject, Nats-Msg-Id, body
DONE_KEPT_S = 86_400.0  # longer than a command's every attempt, with the relay's backoff
_PRUNE_EVERY = 1000  # commands remembered between prunes, besides the one at each start


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: each statement below is its own transaction unless wrapped explicitly
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # AUTOINCREMENT: sequence numbers never go back, even after the spool empties
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL,"
            " msg_id TEXT NOT NULL, body BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS done (command_id TEXT PRIMARY KEY, at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS done_by_age ON done (at)")  # a prune reads only the old
        self._remembered = 0
        self._forget_old()  # a connector restarted often may never reach a thousand commands in one run

    def append(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Store events durably, in order, in one transaction."""
        with self._db:  # BEGIN … COMMIT
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO spool (subject, msg_id, body) VALUES (?, ?, ?)", rows)

    def read_after(self, seq: int, limit: int) -> list[Row]:
        return self._db.execute(
            "SELECT seq, subject, msg_id, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()

    def confirm_through(self, seq: int) -> None:
        """Forget every event up to `seq`: all of them are acknowledged by JetStream."""
        self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def was_done(self, command_id: str) -> bool:
        found = self._db.execute("SELECT 1 FROM done WHERE command_id = ?", (command_id,)).fetchone()
        return found is not None

    def remember_done(self, command_id: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO done (command_id, at) VALUES (?, ?)",
                         (command_id, time.time()))
        self._remembered += 1
        if self._remembered % _PRUNE_EVERY == 0:
            self._forget_old()

    def _forget_old(self) -> None:
        self._db.execute("DELETE FROM done WHERE at < ?", (time.time() - DONE_KEPT_S,))

    def pending(self) -> int:
        return self._db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def close(self) -> None:
        self._db.close()
