"""Switching the online store to WAL waits for a peer that holds the database, instead of
failing with "database is locked" (two flow processes opening one fresh store at once)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from feature_repo.online_rows import wal_mode


def held_database(path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x)")
    setup.execute("INSERT INTO t VALUES (1)")
    setup.commit()
    peer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    peer.execute("BEGIN")
    peer.execute("SELECT * FROM t").fetchall()  # a read transaction: the switch must wait
    return setup, peer


def test_the_switch_waits_for_the_peer_to_let_go(tmp_path) -> None:
    _, peer = held_database(tmp_path / "s.db")
    ours = sqlite3.connect(tmp_path / "s.db", timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ours.execute("PRAGMA journal_mode=WAL")  # what a bare switch does meanwhile
    threading.Timer(0.3, lambda: peer.execute("COMMIT")).start()
    start = time.monotonic()
    wal_mode(ours)
    assert 0.2 < time.monotonic() - start < 5
    assert ours.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_peer_that_never_lets_go_fails_after_the_timeout(tmp_path) -> None:
    _, peer = held_database(tmp_path / "s.db")
    ours = sqlite3.connect(tmp_path / "s.db", timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        wal_mode(ours, timeout_s=0.2)
    peer.execute("COMMIT")
