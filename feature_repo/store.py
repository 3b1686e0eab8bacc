"""Open Marquee's feature store, applied and ready, and move rows in and out of it.

``open_store`` writes the effective ``feature_store.yaml`` into the data directory (SQLite by
default, Redis by ``MARQUEE_ONLINE_STORE=redis`` + ``MARQUEE_REDIS_URL``) and applies the
definitions, so setup never needs ``feast apply``. The row helpers turn tokens and item
counters into the push sources' columns, one row per entity per call: callers coalesce a
batch first, because each Feast write row costs ~0.2 ms on SQLite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.definitions import ITEM_FEATURES, OBJECTS, USER_FEATURES
from feature_repo.online_rows import RedisRows, SqliteRows, plain_redis, plain_sqlite
from feature_repo.reach import named_failures, preflight
from feature_repo.value_bytes import proto_value
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
    bytes directly (``RedisRows``), skipping a protobuf message per feature value.
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
        self.sqlite = SqliteRows(store, self.provider) if plain_sqlite(store) else None
        self.redis = RedisRows(store, self.provider) if plain_redis(store) else None

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
