"""Open Marquee's feature store, applied and ready, and move rows in and out of it.

``open_store`` writes the effective ``feature_store.yaml`` into the data directory (SQLite by
default, Redis by ``MARQUEE_ONLINE_STORE=redis`` + ``MARQUEE_REDIS_URL``) and applies the
definitions, so setup never needs ``feast apply``. The row helpers turn tokens and item
counters into the push sources' columns, one row per entity per call: callers coalesce a
batch first, because each Feast write row costs ~0.2 ms on SQLite.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.definitions import ITEM_FEATURES, OBJECTS, USER_FEATURES
from feature_repo.reach import named_failures, preflight
from streams.contract.atomic import locked, replace_bytes
from streams.contract.layout import DataLayout
from streams.contract.settings import ENV_FILE
from streams.contract.tokens import FACETS, Token

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).parent


class FeatureSettings(BaseSettings):
    """Where the online store is; every field is overridable as ``MARQUEE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=ENV_FILE, extra="ignore")

    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="online store: sqlite (a file under the data folder) or "
        "redis (at MARQUEE_REDIS_URL)")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           description="redis://host:port[/db] or host:port")
    data_dir: Path = Field(default=Path("var"), description="data folder: vocab.json, "
                           "catalogue.jsonl, feast/")


def feast_redis_connection(url: str, timeout_s: float | None = None) -> str:
    """Feast's ``host:port,db=N`` form of a ``redis://host:port/N`` (or ``host:port``) URL.

    ``timeout_s`` makes the client fail fast, for a reader that degrades instead of waiting:
    connect and read time out after it, and nothing is retried (``retry=null``: redis-py then
    tries once; its default retries a refused connection 10 times with backoff, 3-4 s in all).
    """
    rest = url.removeprefix("redis://")
    if "@" in rest or url.startswith("rediss://"):
        raise ValueError(f"MARQUEE_REDIS_URL {url!r}: only redis://host:port[/db] is supported")
    hostport, _, db = rest.partition("/")
    if ":" not in hostport:
        raise ValueError(f"MARQUEE_REDIS_URL {url!r}: expected host:port, e.g. "
                         "redis://127.0.0.1:6379/0")
    options = (f",socket_timeout={timeout_s},socket_connect_timeout={timeout_s},retry=null"
               if timeout_s is not None else "")
    return f"{hostport},db={int(db or 0)}{options}"


def effective_config(data_dir: Path, online: str, redis_url: str,
                     repo_path: Path = REPO_DIR,
                     redis_timeout_s: float | None = None) -> dict[str, Any]:
    """The checked-in ``feature_store.yaml`` with paths under ``data_dir`` and the chosen
    online store (``redis_timeout_s``: see ``feast_redis_connection``).
    """
    config = yaml.safe_load((repo_path / "feature_store.yaml").read_text())
    data_dir = data_dir.resolve()
    config["registry"] = str(data_dir / "registry.db")
    if online == "sqlite":
        config["online_store"] = {"type": "sqlite", "path": str(data_dir / "online_store.db")}
    elif online == "redis":
        # skip_dedup: the flow is the only writer, one worker per user, so the last write is
        # the newest; Feast's own check compares event times and would drop a same-instant
        # update (two batches about one user's events of the same millisecond).
        config["online_store"] = {"type": "redis",
                                  "connection_string": feast_redis_connection(
                                      redis_url, redis_timeout_s),
                                  "skip_dedup": True}
    else:
        raise ValueError(f"online store {online!r}: choose sqlite or redis "
                         "(MARQUEE_ONLINE_STORE)")
    return config


def open_store(repo_path: Path | None = None, online: str | None = None,
               data_dir: Path | None = None, redis_url: str | None = None,
               redis_timeout_s: float | None = None) -> Any:
    """A ``feast.FeatureStore`` with Marquee's definitions applied.

    Defaults come from ``FeatureSettings`` (environment). The Feast files live in
    ``<data_dir>/feast/`` (registry, SQLite online store, the effective yaml).
    ``redis_timeout_s`` (the ranking service's reads) makes Redis calls fail fast; that
    config goes to a yaml of its own, so the flow, opening the same folder, never reads it.
    """
    from feast import FeatureStore

    settings = FeatureSettings()
    online = online or settings.online_store
    feast_dir = DataLayout(data_dir or settings.data_dir).feast
    feast_dir.mkdir(parents=True, exist_ok=True)
    config = effective_config(feast_dir, online, redis_url or settings.redis_url,
                              repo_path or REPO_DIR, redis_timeout_s)
    name = "feature_store.yaml" if redis_timeout_s is None else "feature_store.fail-fast.yaml"
    # Processes open one folder at once (a flow's members, the flow and the service): one at a
    # time writes the yaml and applies the registry, and the yaml is replaced whole, so no
    # reader sees it half written (a peer once read an empty file and ended a cluster).
    with locked(feast_dir / ".open.lock"):
        _write_whole(feast_dir / name, yaml.safe_dump(config, sort_keys=False))
        store = FeatureStore(repo_path=str(feast_dir), fs_yaml_file=feast_dir / name)
        store.apply(OBJECTS)
    where = config["online_store"].get("path") or config["online_store"]["connection_string"]
    log.info("feature store: project %s, online %s at %s", config["project"], online, where)
    return store


def _write_whole(path: Path, text: str) -> None:
    """``path`` holds ``text``, replaced in one rename (unchanged when it already does)."""
    if not (path.exists() and path.read_text() == text):
        replace_bytes(path, text.encode())


# ---- rows --------------------------------------------------------------------------------
def user_row(user_id: str, tokens: Sequence[Token], event_ms: int) -> dict[str, Any]:
    """The ``user_tokens`` row of one user from their newest tokens (oldest first)."""
    row: dict[str, Any] = {"user_id": user_id,
                           "event_timestamp": event_ms,
                           "last_ts": tokens[-1].ts if tokens else 0,
                           "n_tokens": len(tokens)}
    for facet in FACETS:
        row[f"{facet}_seq"] = [getattr(t, facet) for t in tokens]
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], unit="ms", utc=True)
    return df


class FeatureWriter:
    """Writes coalesced rows straight to the online store as Feast protos.

    ``store.push`` goes DataFrame -> Arrow -> protos, which is most of its cost; the rows here
    are built as protos directly and handed to the provider's ``online_write_batch`` (what
    ``push`` ends in), so reads through ``get_online_features`` see exactly the same bytes.
    On SQLite it goes one step further: Feast's ``online_write_batch`` runs one Python-level
    ``execute`` per feature value (~40 us each, 10 per user row); the same rows, serialized
    the same way, go in with one ``executemany`` per batch (the contract suite reads them back
    through ``get_online_features``). On Redis the hashes Feast writes are built from the rows'
    bytes directly (``_RedisRows``), skipping a protobuf message per feature value.
    """

    def __init__(self, store: Any) -> None:
        preflight(store)  # an unreachable store fails here, named, not at the first write
        self.store = store
        self.provider = store._get_provider()  # Feast has no public handle on it
        self.views = {name: store.get_feature_view(name) for name in ("user_tokens",
                                                                       "item_stats")}
        # Worker threads of one process share this writer; Feast's SQLite store shares one
        # connection, and interleaved transactions on it can lose a write.
        self.lock = threading.Lock()
        self.sqlite = _SqliteRows(store, self.provider) if _plain_sqlite(store) else None
        self.redis = _RedisRows(store, self.provider) if _plain_redis(store) else None

    def write_users(self, rows: list[dict[str, Any]]) -> None:
        """Write ``user_row`` rows (one per user)."""
        self._write("user_tokens", "user_id", rows, USER_FEATURES)

    def write_items(self, rows: list[dict[str, Any]]) -> None:
        """Write item rows (``item_id``, ``event_timestamp`` ms and ``ITEM_FEATURES``)."""
        self._write("item_stats", "item_id", rows, ITEM_FEATURES)

    def _write(self, view: str, key: str, rows: list[dict[str, Any]],
               features: list[str]) -> None:
        if not rows:
            return
        with named_failures(self.store, f"{len(rows)} {view} rows"):
            self._write_rows(view, key, rows, features)

    def _write_rows(self, view: str, key: str, rows: list[dict[str, Any]],
                    features: list[str]) -> None:
        if self.sqlite is not None:
            with self.lock:
                self.sqlite.write(self.views[view], key, rows, features)
            return
        if self.redis is not None:
            with self.lock:
                self.redis.write(self.views[view], key, rows, features)
            return
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        data = []
        for row in rows:
            entity = EntityKey(join_keys=[key], entity_values=[Value(string_val=row[key])])
            when = datetime.fromtimestamp(row["event_timestamp"] / 1000, tz=UTC)
            data.append((entity, {f: proto_value(row[f]) for f in features}, when, None))
        with self.lock:
            self.provider.online_write_batch(self.store.config, self.views[view], data, None)


class FeatureReader:
    """Reads online rows through the provider's ``online_read``, what ``get_online_features``
    ends in: the same rows as ``read_users`` / ``read_items`` (the contract suite compares
    them) without the request planning and response building around it, which cost about
    two thirds of a one-user read (0.5 of 0.75 ms on SQLite). Views have no TTL, so nothing
    is filtered by age there either.
    """

    def __init__(self, store: Any) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.provider = store._get_provider()  # Feast has no public handle on it
        self.views = {name: store.get_feature_view(name) for name in ("user_tokens",
                                                                       "item_stats")}
        self._key = lambda key, value: EntityKey(join_keys=[key],
                                                 entity_values=[Value(string_val=value)])

    def users(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What ``read_users`` answers for these users."""
        out = self._read("user_tokens", "user_id", list(user_ids), USER_FEATURES)
        for row in out.values():
            for facet in FACETS:
                row[f"{facet}_seq"] = list(row[f"{facet}_seq"] or [])
        return out

    def items(self, item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What ``read_items`` answers for these items."""
        return self._read("item_stats", "item_id", list(item_ids), ITEM_FEATURES)

    def _read(self, view: str, key: str, ids: list[str], features: Sequence[str]
              ) -> dict[str, dict[str, Any]]:
        got = self.provider.online_read(self.store.config, self.views[view],
                                        [self._key(key, i) for i in ids], list(features))
        out = {}
        for entity, (_, values) in zip(ids, got, strict=True):
            values = values or {}
            out[entity] = {f: python_value(values.get(f)) for f in features}
        return out


def python_value(value: Any) -> Any:
    """A ``ValueProto`` as the Python value ``get_online_features`` gives (None if unset)."""
    if value is None:
        return None
    which = value.WhichOneof("val")
    if which is None:
        return None
    got = getattr(value, which)
    return list(got.val) if which.endswith("_list_val") else got


def proto_value(v: Any) -> Any:
    """A row value as Feast's ``ValueProto`` (int list, string, float or int)."""
    from feast.protos.feast.types.Value_pb2 import Int64List, Value

    if isinstance(v, list):
        return Value(int64_list_val=Int64List(val=v))
    if isinstance(v, str):
        return Value(string_val=v)
    if isinstance(v, float):
        return Value(double_val=v)
    return Value(int64_val=int(v))


# Varint bytes of 0 .. 2**14 - 1: ids are small, and joining table entries runs in C, where
# protobuf's Python binding converts a repeated field element by element (~0.2 us each).
_VARINT = [bytes([i]) for i in range(128)] + [bytes([(i & 0x7F) | 0x80, i >> 7])
                                              for i in range(128, 1 << 14)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def int64_list_bytes(values: list[int]) -> bytes:
    """``Value(int64_list_val=Int64List(val=values)).SerializeToString()``, ~10x faster for
    the small non-negative ids of token sequences (anything else goes through protobuf).
    """
    if not values:
        return b"\x72\x00"  # field 14 (int64_list_val), an empty Int64List
    try:  # ids below 128 are their own varint: bytes() checks the range in C
        packed = bytes(values)
        if not packed.isascii():
            raise ValueError
    except (ValueError, TypeError):
        try:
            if min(values) < 0:
                raise IndexError  # a negative index would wrap around the table
            packed = b"".join(map(_VARINT.__getitem__, values))
        except (IndexError, TypeError):
            return proto_value(values).SerializeToString()
    inner = b"\x0a" + _varint(len(packed)) + packed  # Int64List field 1, packed
    return b"\x72" + _varint(len(inner)) + inner


def scalar_bytes(value: Any) -> bytes | None:
    """``proto_value(value).SerializeToString()`` for a non-negative int, a float or a
    string, by hand (None: let protobuf do it). Proto3 leaves a zero out of the oneof's
    payload but keeps the field tag, which is what this writes too.
    """
    if type(value) is int and 0 <= value < 1 << 63:
        return b"\x20" + _varint(value)  # field 4, varint
    if type(value) is float:
        return b"\x29" + struct.pack("<d", value)  # field 5, fixed64
    if type(value) is str:
        data = value.encode()
        return b"\x12" + _varint(len(data)) + data  # field 2, length-delimited
    return None


def _plain_sqlite(store: Any) -> bool:
    """The SQLite online store without the options that change its rows (vectors, value_num,
    view versioning): the layout ``_SqliteRows`` writes.
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


class _SqliteRows:
    """Feast's SQLite online rows (``entity_key, feature_name, value, value_text, event_ts,
    created_ts``), written in bulk. Mirrors ``SqliteOnlineStore.online_write_batch``.
    """

    def __init__(self, store: Any, provider: Any) -> None:
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        self.config = store.config
        self.online = provider.online_store
        self.table_name = lambda view: _quote_id(_table_id(self.config.project, view, False))
        self.entity_key = _EntityKeys(self.config.entity_key_serialization_version)
        # A commit in the default rollback-journal mode waits for several fsyncs (tens of ms
        # here), on the flow's thread. WAL with synchronous=NORMAL commits without one;
        # a process crash loses nothing (the flow replays anyway), a power cut may lose the
        # last commits, which the flow's at-least-once replay from its snapshot rewrites.
        conn = self.online._get_conn(self.config)
        wal_mode(conn)
        conn.execute("PRAGMA synchronous=NORMAL")

    def write(self, view: Any, key: str, rows: list[dict[str, Any]],
              features: list[str]) -> None:
        from feast.infra.online_stores.helpers import extract_text_and_num

        sql = (f"INSERT INTO {self.table_name(view)} "
               "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
               "value = excluded.value, value_text = excluded.value_text, "
               "event_ts = excluded.event_ts, created_ts = excluded.created_ts;")
        params = []
        for row in rows:
            entity = self.entity_key(key, row[key])
            # What Feast's registered sqlite3 adapter stores for the naive UTC datetime
            # (``int(val.timestamp())``), computed once per row instead of per value.
            when = int(datetime.fromtimestamp(row["event_timestamp"] / 1000, tz=UTC).replace(
                tzinfo=None).timestamp())
            for name in features:
                value = row[name]
                if isinstance(value, list):
                    params.append((entity, name, int64_list_bytes(value), None, when, None))
                    continue
                blob = scalar_bytes(value)
                if blob is None:
                    val = proto_value(value)
                    blob, text = val.SerializeToString(), extract_text_and_num(val, False)[0]
                else:
                    text = value if isinstance(value, str) else str(value)
                params.append((entity, name, blob, text, when, None))
        conn = self.online._get_conn(self.config)
        with conn:
            conn.executemany(sql, params)


def _plain_redis(store: Any) -> bool:
    """Feast's Redis online store without view versioning (which renames the hash fields)."""
    return (getattr(store.config.online_store, "type", "") == "redis"
            and not getattr(store.config.registry, "enable_online_feature_view_versioning",
                            False))


class _RedisRows:
    """The hashes Feast's ``RedisOnlineStore.online_write_batch`` writes, field for field and
    byte for byte (``tests/feature_repo/test_redis_rows.py`` compares them), from the rows'
    values encoded by hand instead of one ``ValueProto`` per feature value (~8x the Redis
    server's own cost per 200-token row, ``marquee bench redis``). Like Feast it reads the
    stored timestamps first and skips a row no newer than the one stored, so an old write
    replayed after a crash never overwrites a newer row; it goes through Feast's own client.
    """

    def __init__(self, store: Any, provider: Any) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self.config = store.config
        self.online = provider.online_store
        self.project = self.config.project.encode()
        self.mmh3 = _mmh3
        self.fields: dict[tuple[str, str], bytes] = {}
        self.keys = _EntityKeys(self.config.entity_key_serialization_version)

    def field(self, view: str, feature: str) -> bytes:
        got = self.fields.get((view, feature))
        if got is None:
            got = self.fields[(view, feature)] = self.mmh3(f"{view}:{feature}")
        return got

    def write(self, view: Any, key: str, rows: list[dict[str, Any]],
              features: list[str]) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        cfg = self.config.online_store
        client = self.online._get_client(cfg)
        ts_key = f"_ts:{view.name}"
        fields = [(name, self.field(view.name, name)) for name in features]
        redis_keys = [self.keys(key, row[key]) + self.project for row in rows]
        with client.pipeline(transaction=False) as pipe:
            if not cfg.skip_dedup:
                for redis_key in redis_keys:
                    pipe.hmget(redis_key, ts_key)
                stored = [got[0] for got in pipe.execute()]
            else:
                stored = [None] * len(rows)
            latest: dict[bytes, int] = {}
            for redis_key, before, row in zip(redis_keys, stored, rows, strict=True):
                ts = Timestamp()
                ts.FromDatetime(datetime.fromtimestamp(row["event_timestamp"] / 1000, tz=UTC))
                nanos = ts.seconds * 1_000_000_000 + ts.nanos
                if not cfg.skip_dedup:
                    seen = latest.get(redis_key, 0)
                    if before:
                        old = Timestamp()
                        old.ParseFromString(before)
                        seen = max(seen, old.seconds * 1_000_000_000 + old.nanos)
                    if seen and nanos <= seen:
                        continue  # Feast skips a row no newer than the stored one
                    latest[redis_key] = nanos
                mapping: dict[Any, bytes] = {ts_key: ts.SerializeToString()}
                for name, field in fields:
                    value = row[name]
                    if isinstance(value, list):
                        mapping[field] = int64_list_bytes(value)
                    else:
                        blob = scalar_bytes(value)
                        mapping[field] = (blob if blob is not None
                                          else proto_value(value).SerializeToString())
                pipe.hset(redis_key, mapping=mapping)
                if cfg.key_ttl_seconds:
                    pipe.expire(name=redis_key, time=cfg.key_ttl_seconds)
            pipe.execute()


class _EntityKeys:
    """Serialized entity keys (Feast's ``serialize_entity_key``), cached: a user is written
    again and again.
    """

    def __init__(self, version: int) -> None:
        self.version = version
        self.cache: dict[tuple[str, str], bytes] = {}

    def __call__(self, key: str, value: str) -> bytes:
        got = self.cache.get((key, value))
        if got is None:
            from feast.infra.key_encoding_utils import serialize_entity_key
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            if len(self.cache) > 1_000_000:
                self.cache.clear()
            got = self.cache[(key, value)] = serialize_entity_key(
                EntityKey(join_keys=[key], entity_values=[Value(string_val=value)]),
                entity_key_serialization_version=self.version)
        return got


def write_users(store: Any, rows: list[dict[str, Any]]) -> None:
    """Push ``user_row`` rows through the push source (one row per user, please); the plain
    Feast path, slower than ``FeatureWriter``.
    """
    if rows:
        from feast.data_source import PushMode

        store.push("user_tokens_push", _frame(rows), to=PushMode.ONLINE)


def write_items(store: Any, rows: list[dict[str, Any]]) -> None:
    """Push ``item_stats`` rows (``item_id``, ``event_timestamp`` ms and ``ITEM_FEATURES``)."""
    if rows:
        from feast.data_source import PushMode

        store.push("item_stats_push", _frame(rows), to=PushMode.ONLINE)


def read_users(store: Any, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Online ``user_tokens`` of these users; a user never written maps to empty arrays."""
    ids = list(user_ids)
    got = store.get_online_features(features=[f"user_tokens:{f}" for f in USER_FEATURES],
                                    entity_rows=[{"user_id": u} for u in ids]).to_dict()
    out = {}
    for i, user_id in enumerate(ids):
        row = {f: got[f][i] for f in USER_FEATURES}
        for facet in FACETS:
            row[f"{facet}_seq"] = list(row[f"{facet}_seq"] or [])
        out[user_id] = row
    return out


def read_items(store: Any, item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Online ``item_stats`` of these items (None values for items never written)."""
    ids = list(item_ids)
    got = store.get_online_features(features=[f"item_stats:{f}" for f in ITEM_FEATURES],
                                    entity_rows=[{"item_id": i} for i in ids]).to_dict()
    return {item_id: {f: got[f][i] for f in ITEM_FEATURES} for i, item_id in enumerate(ids)}
