"""The durable experiment counts: one SQLite table in the data folder
(``DataLayout.experiments``), written by the flow and read by ``marquee experiment report``.

A row is one user shard's absolute counts for one (experiment, variant), replaced on every
write: a flow that restarts from a snapshot writes its shards' counts again, lower for a moment
and then the same as before the crash, never added twice. The totals are the sums over
shards. Every worker process of a flow on the machine writes to the same file (WAL, a
connection per process, writers wait for each other).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streams.outcomes import COUNT_FIELDS, Counts

INTEGER_FIELDS = frozenset(f.name for f in fields(Counts) if f.type in ("int", int))

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS experiment_counts (
    shard TEXT NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL, mode TEXT NOT NULL,
    {", ".join(f"{f} REAL NOT NULL" for f in COUNT_FIELDS)},
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (shard, experiment, variant))
"""
_UPSERT = (f"INSERT OR REPLACE INTO experiment_counts (shard, experiment, variant, mode, "
           f"{', '.join(COUNT_FIELDS)}, updated_ms) VALUES "
           f"({', '.join('?' * (len(COUNT_FIELDS) + 5))})")
_LOCK = threading.Lock()
_CONNECTIONS: dict[str, sqlite3.Connection] = {}


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the table's file (created with its table if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    for name in set(COUNT_FIELDS) - _columns(conn):  # a table an older flow created
        conn.execute(f"ALTER TABLE experiment_counts ADD COLUMN {name} REAL NOT NULL DEFAULT 0")
    return conn


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(experiment_counts)")}


def write_rows(path: Path, shard_rows: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> int:
    """Replace the rows ``(experiment, variant, mode, *counts)`` of each shard, in one
    transaction; how many rows were written.
    """
    now = int(time.time() * 1000)
    values = [(shard, *row, now) for shard, rows in shard_rows for row in rows]
    if not values:
        return 0
    key = str(path.resolve())
    with _LOCK:
        conn = _CONNECTIONS.get(key)
        if conn is None or not path.exists():  # a deleted file is a new table
            if conn is not None:
                conn.close()
            conn = _CONNECTIONS[key] = connect(path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, values)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(values)


@dataclass
class ExperimentTotals:
    """One experiment's counts summed over shards: per variant, and its own row (``ALL``)."""

    name: str
    mode: str
    variants: dict[str, Counts] = field(default_factory=dict)
    overall: Counts = field(default_factory=Counts)
    updated_ms: int = 0


def read_totals(path: Path) -> dict[str, ExperimentTotals]:
    """Every experiment's totals (empty when the flow has written none yet)."""
    from streams.outcomes import ALL

    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("PRAGMA query_only=1")
        have = _columns(conn)  # a table an older flow wrote lacks the newer counts: 0
        sums = ", ".join(f"SUM({f})" if f in have else "0" for f in COUNT_FIELDS)
        try:
            rows = conn.execute(
                f"SELECT experiment, variant, MAX(mode), {sums}, MAX(updated_ms) "
                f"FROM experiment_counts GROUP BY experiment, variant "
                f"ORDER BY experiment, variant").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise
    finally:
        conn.close()
    out: dict[str, ExperimentTotals] = {}
    for experiment, variant, mode, *counts, updated in rows:
        totals = out.setdefault(experiment, ExperimentTotals(experiment, mode or ""))
        totals.mode = totals.mode or mode or ""
        totals.updated_ms = max(totals.updated_ms, updated or 0)
        values = Counts(*(int(v) if f in INTEGER_FIELDS else float(v)
                          for f, v in zip(COUNT_FIELDS, counts, strict=True)))
        if variant == ALL:
            totals.overall = values
        else:
            totals.variants[variant] = values
    return out
