"""Feast's online rows written in bulk: the SQLite and Redis layouts of Feast's own online
stores, from rows whose values are encoded by hand (``feature_repo.value_bytes``).
``feature_repo.store.FeatureWriter`` picks the writer for the configured store.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from datetime import UTC, datetime
from typing import Any

from feature_repo.value_bytes import int64_list_bytes, proto_value, scalar_bytes, varint

_U32 = struct.Struct("<I")
_STRING = 2  # Feast's ValueType.STRING


def plain_sqlite(store: Any) -> bool:
    """The SQLite online store without the options that change its rows (vectors, value_num,
    view versioning): the layout ``SqliteRows`` writes.
    """
    online = store.config.online_store
    return (getattr(online, "type", "") == "sqlite"
            and not getattr(online, "vector_enabled", False)
            and not getattr(online, "enable_openai_compatible_store", False)
            and not getattr(store.config.registry, "enable_online_feature_view_versioning",
                            False))


def wal_mode(conn: sqlite3.Connection, timeout_s: float = 10.0) -> None:
    """Switch ``conn``'s database to WAL. The switch needs the database alone and SQLite does
    not wait for it (no busy handler): two flow processes opening one fresh store at once got
    "database is locked" in about 1 start of 20, which ended the whole cluster. Tried again
    until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteRows:
    """Feast's SQLite online rows (``entity_key, feature_name, value, value_text, event_ts,
    created_ts``), written in bulk. Mirrors ``SqliteOnlineStore.online_write_batch``.
    """

    def __init__(self, store: Any, provider: Any) -> None:
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        self.config = store.config
        self.online = provider.online_store
        self.table_name = lambda view: _quote_id(_table_id(self.config.project, view, False))
        self.entity_key = EntityKeys(self.config.entity_key_serialization_version)
        self.statements: dict[tuple[str, tuple[str, ...], tuple[bool, ...]], str] = {}
        # A commit in the default rollback-journal mode waits for several fsyncs (tens of ms
        # here), on the flow's thread. WAL with synchronous=NORMAL commits without one;
        # a process crash loses nothing (the flow replays anyway), a power cut may lose the
        # last commits, which the flow's at-least-once replay from its snapshot rewrites.
        conn = self.online._get_conn(self.config)
        wal_mode(conn)
        conn.execute("PRAGMA synchronous=NORMAL")

    def write(self, view: Any, key: str, rows: list[dict[str, Any]],
              features: list[str]) -> None:
        """Upsert ``rows`` (keyed by ``key``) of ``view`` in one transaction: one statement
        per row, its entity key and time bound once for all its features.
        """
        from feast.infra.online_stores.helpers import extract_text_and_num

        table = self.table_name(view)
        runs: list[tuple[str, list[tuple[Any, ...]]]] = []  # consecutive rows of one statement
        for row in rows:
            # What Feast's registered sqlite3 adapter stores for the naive UTC datetime
            # (``int(val.timestamp())``), computed once per row instead of per value.
            when = int(datetime.fromtimestamp(row["event_timestamp"] / 1000, tz=UTC).replace(
                tzinfo=None).timestamp())
            params: list[Any] = [bytearray(self.entity_key(key, row[key])), when]
            texts: list[bool] = []
            for name in features:
                value = row[name]
                if isinstance(value, list):
                    params.append(bytearray(int64_list_bytes(value)))
                    texts.append(False)
                    continue
                blob = scalar_bytes(value)
                if blob is None:
                    val = proto_value(value)
                    blob, text = val.SerializeToString(), extract_text_and_num(val, False)[0]
                else:
                    text = value if isinstance(value, str) else str(value)
                params += (bytearray(blob), text)
                texts.append(True)
            sql = self.statement(table, features, tuple(texts))
            if not runs or runs[-1][0] != sql:
                runs.append((sql, []))
            runs[-1][1].append(tuple(params))
        conn = self.online._get_conn(self.config)
        with conn:
            for sql, batch in runs:
                conn.executemany(sql, batch)

    def statement(self, table: str, features: list[str], texts: tuple[bool, ...]) -> str:
        """The upsert of one entity's ``features`` (``texts``: which have a ``value_text``;
        the others store NULL there, as Feast does for lists), cached.

        Parameters: ``?1`` the entity key, ``?2`` the time, then each feature's value (and
        text). Feature names and NULLs are literals, and blobs are bound as ``bytearray``:
        Python's sqlite3 binds int, str and bytearray directly but runs ``bytes`` and None
        through its adapter lookup (about 1 us each, more than SQLite's own work per value).
        """
        cache_key = (table, tuple(features), texts)
        sql = self.statements.get(cache_key)
        if sql is None:
            values, n = [], 3
            for name, text in zip(features, texts, strict=True):
                literal = "'" + name.replace("'", "''") + "'"
                values.append(f"(?1, {literal}, ?{n}, {f'?{n + 1}' if text else 'NULL'}, "
                              "?2, NULL)")
                n += 2 if text else 1
            sql = self.statements[cache_key] = (
                f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, "
                f"created_ts) VALUES {', '.join(values)} ON CONFLICT(entity_key, feature_name) "
                "DO UPDATE SET value = excluded.value, value_text = excluded.value_text, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts;")
        return sql


def plain_redis(store: Any) -> bool:
    """Feast's Redis online store on one server (or a sentinel's master), without view
    versioning (which renames the hash fields): a cluster spreads keys over nodes, which
    ``RedisRows``'s single connection does not.
    """
    online = store.config.online_store
    return (getattr(online, "type", "") == "redis"
            and getattr(online, "redis_type", "redis") != "redis_cluster"  # a str enum
            and not getattr(store.config.registry, "enable_online_feature_view_versioning",
                            False))


class RedisRows:
    """The hashes Feast's ``RedisOnlineStore.online_write_batch`` writes, field for field and
    byte for byte (``tests/feature_repo/test_redis_rows.py`` compares them), from the rows'
    values encoded by hand instead of one ``ValueProto`` per feature value (~8x the Redis
    server's own cost per 200-token row, ``marquee bench redis``). Like Feast it reads the
    stored timestamps first and skips a row no newer than the one stored, so an old write
    replayed after a crash never overwrites a newer row; it goes through Feast's own client.

    The commands are packed here (``HSET key field value ...`` in the protocol's bytes, the
    field names' parts built once) and sent in one write on a connection of the client's
    pool: redis-py's pipeline packs every argument in Python, which cost more than encoding
    the values.
    """

    def __init__(self, store: Any, provider: Any) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self.config = store.config
        self.online = provider.online_store
        self.project = self.config.project.encode()
        self.mmh3 = _mmh3
        self.fields: dict[tuple[str, str], bytes] = {}
        self.keys = EntityKeys(self.config.entity_key_serialization_version)

    def field(self, view: str, feature: str) -> bytes:
        """The hash field Feast names ``view:feature`` (murmur3, cached)."""
        got = self.fields.get((view, feature))
        if got is None:
            got = self.fields[(view, feature)] = self.mmh3(f"{view}:{feature}")
        return got

    def write(self, view: Any, key: str, rows: list[dict[str, Any]],
              features: list[str]) -> None:
        """Write ``rows`` (keyed by ``key``) of ``view``: one round trip, two when the stored
        times are read first (Feast's dedupe, off in Marquee's config).
        """
        cfg = self.config.online_store
        client = self.online._get_client(cfg)
        ts_key = f"_ts:{view.name}".encode()
        fields = [(name, _bulk(self.field(view.name, name))) for name in features]
        redis_keys = [self.keys(key, row[key]) + self.project for row in rows]
        stored: list[bytes | None] = [None] * len(rows)
        if not cfg.skip_dedup:
            with client.pipeline(transaction=False) as pipe:
                for redis_key in redis_keys:
                    pipe.hmget(redis_key, ts_key)
                stored = [got[0] for got in pipe.execute()]
        commands: list[bytes] = []
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fields) + 1))
        ts_field = _bulk(ts_key)
        latest: dict[bytes, int] = {}
        for redis_key, before, row in zip(redis_keys, stored, rows, strict=True):
            ts_bytes, nanos = _timestamp(row["event_timestamp"])
            if not cfg.skip_dedup:
                seen = latest.get(redis_key, 0)
                if before:
                    seen = max(seen, _nanos(before))
                if seen and nanos <= seen:
                    continue  # Feast skips a row no newer than the stored one
                latest[redis_key] = nanos
            parts = [head, _bulk(redis_key), ts_field, _bulk(ts_bytes)]
            for name, field in fields:
                value = row[name]
                if isinstance(value, list):
                    blob = int64_list_bytes(value)
                else:
                    blob = scalar_bytes(value) or proto_value(value).SerializeToString()
                parts += (field, b"$%d\r\n" % len(blob), blob, b"\r\n")
            commands.append(b"".join(parts))
            if cfg.key_ttl_seconds:
                commands.append(_command(b"EXPIRE", redis_key, b"%d" % cfg.key_ttl_seconds))
        if commands:
            _send(client, commands)


def _bulk(data: bytes) -> bytes:
    """One argument of a command in the protocol's bytes: its length, then the data."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(map(_bulk, args))


def _send(client: Any, commands: list[bytes]) -> None:
    """Send packed ``commands`` in one write and read every reply (an error reply raises, as
    a pipeline does), with the connection's retries; a connection left with unread replies is
    dropped, not returned to the pool.
    """
    pool = client.connection_pool
    conn = pool.get_connection()
    data = b"".join(commands)

    def round_trip() -> None:
        conn.send_packed_command([data])
        for _ in commands:
            conn.read_response()

    try:
        conn.retry.call_with_retry(round_trip, lambda _error: conn.disconnect())
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _timestamp(ms: int) -> tuple[bytes, int]:
    """Feast's row time (``Timestamp.FromDatetime`` of ``ms``) serialized, and in nanoseconds.

    Proto3 leaves zero fields out: ``seconds`` is field 1 and ``nanos`` field 2, varints.
    A time before 1970 goes through protobuf.
    """
    if ms < 0:
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.FromDatetime(datetime.fromtimestamp(ms / 1000, tz=UTC))
        return ts.SerializeToString(), ts.seconds * 1_000_000_000 + ts.nanos
    seconds, millis = divmod(ms, 1000)
    out = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(millis * 1_000_000) if millis else b"")
    return out, ms * 1_000_000


def _nanos(serialized: bytes) -> int:
    """A stored ``Timestamp``'s time in nanoseconds."""
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.ParseFromString(serialized)
    return ts.seconds * 1_000_000_000 + ts.nanos


class EntityKeys:
    """Serialized entity keys (Feast's ``serialize_entity_key``) of one string join key.

    Version 3 of the layout is ``<I count, then per key <I type, <I length, utf-8 name, then
    per value <I type, <I length, bytes``: for one string key that is a fixed prefix, the
    value's length and its bytes, built here without a protobuf message (each new user's first
    row paid ~40 us for it). The prefix is checked against Feast's own function when first
    built; another version (or a Feast that encodes otherwise) goes through Feast, cached.
    """

    def __init__(self, version: int) -> None:
        self.version = version
        self.prefixes: dict[str, bytes | None] = {}  # join key -> prefix (None: use Feast)
        self.cache: dict[tuple[str, str], bytes] = {}

    def __call__(self, key: str, value: str) -> bytes:
        """``serialize_entity_key`` of the join key ``key`` = ``value``."""
        prefix = self.prefixes.get(key, b"")
        if prefix == b"":
            prefix = self.prefixes[key] = self._prefix(key)
        if prefix is not None:
            data = value.encode()
            return prefix + _U32.pack(len(data)) + data
        got = self.cache.get((key, value))
        if got is None:
            if len(self.cache) > 1_000_000:
                self.cache.clear()
            got = self.cache[(key, value)] = self.feast(key, value)
        return got

    def feast(self, key: str, value: str) -> bytes:
        """Feast's own ``serialize_entity_key``."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return serialize_entity_key(
            EntityKey(join_keys=[key], entity_values=[Value(string_val=value)]),
            entity_key_serialization_version=self.version)

    def _prefix(self, key: str) -> bytes | None:
        name = key.encode()
        prefix = (_U32.pack(1) + _U32.pack(_STRING) + _U32.pack(len(name)) + name
                  + _U32.pack(_STRING))
        probe = "\u00e9-probe"
        data = probe.encode()
        if self.version != 3 or self.feast(key, probe) != prefix + _U32.pack(len(data)) + data:
            return None
        return prefix
