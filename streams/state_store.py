"""Versioned per-user state of one user shard, in SQLite beside Bytewax's recovery partitions.

Bytewax persists the whole state a key's ``snapshot`` returns, every epoch. A user shard's
state is every user's tokenizer, so a snapshot holding it would cost (pickling, writing, disk)
in proportion to all the users the shard has ever seen, even when a few of them were active.
Instead a snapshot writes the pickles of the users touched since the previous one here, under
a new *version*, and hands Bytewax only that version number (plus what is still owed to the
sinks). Resuming from a snapshot of version ``v`` reads each user's newest pickle at or below
``v`` and deletes everything above it (snapshots Bytewax never committed): the store then
holds exactly the state of the epoch Bytewax resumes from, whatever happened after it.

Old versions are collapsed every ``KEEP_VERSIONS`` snapshots: below ``newest - KEEP_VERSIONS``
only each user's newest pickle is kept. Bytewax resumes from the last epoch committed by every
worker, at most a few snapshots behind the newest one (workers advance epochs together through
the exchange between steps), so 32 snapshots of history is a wide margin.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

KEEP_VERSIONS = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT NOT NULL, version INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS state_key_version ON state (key, version);
"""  # a rowid table: pickles of a few KB would overflow a WITHOUT ROWID table's pages


class StateStore:
    """One shard's pickles by (key, version); one writer (the worker that owns the shard)."""

    def __init__(self, path: Path, keep_versions: int = KEEP_VERSIONS) -> None:
        if keep_versions < 1:
            raise ValueError("keep_versions must be >= 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.keep_versions = keep_versions
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # Bytewax commits the epoch right after
        self.db.executescript(_SCHEMA)

    def versions(self, version: int) -> dict[str, int]:
        """Forget versions above ``version`` (0: start empty); each key's newest version at
        or below it (the pickles are read when needed, with ``read``).
        """
        self.db.execute("DELETE FROM state WHERE version > ?", (version,))
        return dict(self.db.execute("SELECT key, MAX(version) FROM state GROUP BY key"))

    def resume(self, version: int) -> Iterator[tuple[str, bytes]]:
        """``versions``, then each key's newest pickle at or below ``version``."""
        for key in self.versions(version):
            blob = self.read(key)
            assert blob is not None
            yield key, blob

    def write(self, version: int, blobs: Mapping[str, bytes]) -> None:
        """Store ``blobs`` under ``version`` in one transaction (durable on return)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO state (key, version, blob) VALUES (?, ?, ?)",
                           ((key, version, blob) for key, blob in blobs.items()))
            if version % self.keep_versions == 0:
                self._collapse(version - self.keep_versions)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _collapse(self, below: int) -> None:
        """Below ``below``, keep only each key's newest pickle."""
        self.db.execute(
            "DELETE FROM state WHERE version < ? AND version < (SELECT MAX(version) FROM state "
            "AS newer WHERE newer.key = state.key AND newer.version < ?)", (below, below))

    def read(self, key: str) -> bytes | None:
        """``key``'s newest pickle."""
        row = self.db.execute("SELECT blob FROM state WHERE key = ? ORDER BY version DESC "
                              "LIMIT 1", (key,)).fetchone()
        return None if row is None else row[0]

    def rows(self) -> int:
        """How many pickles the store holds (all versions)."""
        return self.db.execute("SELECT COUNT(*) FROM state").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self.db.close()
