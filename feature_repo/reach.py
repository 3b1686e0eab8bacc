"""Name the online store that failed, where it is and the fix, instead of a driver's error.

A sink that cannot reach Redis otherwise dies inside Bytewax (``error writing output batch``)
with a redis-py error that names a socket, not Redis or the setting to change. ``preflight``
runs when a writer opens (the flow's start); ``named_failures`` wraps every write, so a store
that goes away later fails with the same kind of message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

PREFLIGHT_TIMEOUT_S = 2.0
REDIS_FIX = ("start redis-server there, or set MARQUEE_REDIS_URL to a running Redis "
             "(or MARQUEE_ONLINE_STORE=sqlite, which needs no server)")
SQLITE_FIX = ("check that the data folder exists, is writable and has free space, and that "
              "no other process holds the database locked")


class OnlineStoreUnreachable(RuntimeError):
    """The online store cannot be reached or written; the message says which, where, and
    what to do.
    """


@dataclass(frozen=True)
class StoreAddress:
    """Which online store a Feast config points at, and where."""

    kind: str  # "Redis" | "SQLite" | Feast's type name for any other
    where: str  # redis://host:port/db, or the SQLite file
    host: str = ""
    port: int = 0
    db: int = 0

    def failure(self, what: str, exc: BaseException | None = None) -> OnlineStoreUnreachable:
        """The error for ``what`` went wrong here (``what``: "refused the connection", ...)."""
        fix = {"Redis": REDIS_FIX, "SQLite": SQLITE_FIX}.get(self.kind, "check its settings")
        detail = f" ({exc})" if exc is not None else ""
        return OnlineStoreUnreachable(f"{self.kind} at {self.where} {what}{detail}: {fix}")


def address_of(store: Any) -> StoreAddress:
    """Where ``store``'s online store is (a ``feast.FeatureStore``)."""
    online = store.config.online_store
    kind = getattr(online, "type", "")
    if kind == "redis":
        hostport, *options = online.connection_string.split(",")
        host, _, port = hostport.rpartition(":")
        db = next((int(o.split("=", 1)[1]) for o in options if o.startswith("db=")), 0)
        return StoreAddress("Redis", f"redis://{host}:{port}/{db}", host, int(port), db)
    if kind == "sqlite":
        return StoreAddress("SQLite", str(online.path))
    return StoreAddress(str(kind), "(see feature_store.yaml)")


def preflight(store: Any) -> None:
    """Fail now, naming the store and the fix, if its online store does not answer: a Redis
    PING, or opening the SQLite file for reading and writing (both within 2 s).
    """
    address = address_of(store)
    if address.kind == "Redis":
        import redis

        client = redis.Redis(host=address.host, port=address.port, db=address.db,
                             socket_connect_timeout=PREFLIGHT_TIMEOUT_S,
                             socket_timeout=PREFLIGHT_TIMEOUT_S)
        with _redis_failures(address):
            client.ping()
        client.close()
    elif address.kind == "SQLite":
        with _sqlite_failures(address):
            conn = sqlite3.connect(f"file:{address.where}?mode=rw", uri=True,
                                   timeout=PREFLIGHT_TIMEOUT_S)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()


@contextmanager
def named_failures(store: Any, what: str) -> Iterator[None]:
    """Turn a Redis or SQLite error inside the block (a write of ``what``) into
    ``OnlineStoreUnreachable`` naming the store, its address and the fix.
    """
    address = address_of(store)
    wrap = _redis_failures if address.kind == "Redis" else _sqlite_failures
    with wrap(address, f" while writing {what}"):
        yield


@contextmanager
def _redis_failures(address: StoreAddress, doing: str = "") -> Iterator[None]:
    import redis

    try:
        yield
    except redis.ConnectionError as exc:
        what = ("refused the connection" if "refused" in str(exc).lower()
                else "could not be reached")
        raise address.failure(what + doing, exc) from exc
    except redis.TimeoutError as exc:
        raise address.failure(f"did not answer in time{doing}", exc) from exc
    except redis.RedisError as exc:
        raise address.failure(f"answered with an error{doing}", exc) from exc


@contextmanager
def _sqlite_failures(address: StoreAddress, doing: str = "") -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise address.failure(f"could not be used{doing}", exc) from exc
