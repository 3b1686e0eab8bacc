"""An online store that cannot be reached fails with its name, address and the fix: a closed
loopback port, a real Redis stopped under an open writer, a SQLite file locked by another
writer. No mocks: real sockets, a real ``redis-server``, a real SQLite lock.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from feature_repo.reach import OnlineStoreUnreachable
from feature_repo.store import FeatureWriter, open_store, user_row
from streams.contract.tokens import Token
from streams.launch import free_port

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (make system-deps)")


def a_row(user: str = "u1") -> dict:
    return user_row(user, [Token(user, T0, "m1", 2, 3, 2, 1, 4, 2, 5, 1)], T0)


def test_a_closed_redis_port_fails_when_the_writer_opens(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/2"  # nothing listens there
    store = open_store(online="redis", data_dir=tmp_path, redis_url=url)
    with pytest.raises(OnlineStoreUnreachable) as err:
        FeatureWriter(store)
    message = str(err.value)
    assert message.startswith(f"Redis at {url} refused the connection")
    assert "start redis-server" in message and "MARQUEE_REDIS_URL" in message


@needs_redis
def test_a_redis_that_stops_under_the_writer_fails_the_write_named(tmp_path):
    from feature_repo.store import read_users
    from infra.redis_server import RedisServer

    with RedisServer(tmp_path / "redis") as server:
        store = open_store(online="redis", data_dir=tmp_path, redis_url=server.url)
        writer = FeatureWriter(store)
        writer.write_users([a_row("u1")])
        assert read_users(store, ["u1"])["u1"]["item_seq"] == [2]
        server.stop()
        with pytest.raises(OnlineStoreUnreachable) as err:
            writer.write_users([a_row("u2"), a_row("u3")])
    message = str(err.value)
    assert message.startswith(f"Redis at {server.url} refused the connection while writing "
                              "2 user_tokens rows")
    assert "MARQUEE_REDIS_URL" in message


def test_a_locked_sqlite_file_fails_the_write_named(tmp_path):
    store = open_store(online="sqlite", data_dir=tmp_path)
    writer = FeatureWriter(store)
    path = store.config.online_store.path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(OnlineStoreUnreachable) as err:
            writer.write_users([a_row()])
    finally:
        other.execute("ROLLBACK")
        other.close()
    message = str(err.value)
    assert message.startswith(f"SQLite at {path} could not be used while writing 1 "
                              "user_tokens rows (database is locked)")
    assert "no other process holds the database locked" in message
    writer.write_users([a_row()])  # the lock released, the same writer writes again
