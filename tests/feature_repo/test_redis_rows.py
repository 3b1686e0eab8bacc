"""``FeatureWriter`` on Redis writes the hashes Feast's own ``online_write_batch`` writes, byte
for byte, including which rows Feast skips (no newer than the stored one)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from feature_repo.definitions import ITEM_FEATURES, USER_FEATURES
from feature_repo.store import FeatureWriter, open_store, proto_value, user_row
from infra.redis_server import RedisServer
from streams.contract.tokens import Token

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_123


def tokens(user: str, n: int, item0: int) -> list[Token]:
    return [Token(user, T0 + i, f"m{i}", item0 + i * 97, i % 8, 300 + i, i % 24, i % 7, 2, 5,
                  1 + i % 3) for i in range(n)]


def batches() -> list[tuple[str, list[dict]]]:
    users = [user_row("u1", tokens("u1", 5, 2), T0 + 10),
             user_row("u2", tokens("u2", 200, 20_000), T0 + 11),  # ids past the varint table
             user_row("u3", [], T0 + 12)]
    items = [{"item_id": "m1", "event_timestamp": T0, "plays_1h": 3, "plays_24h": 0,
              "impressions_24h": 30, "ctr_24h": 0.1, "release_ms": -5, "genre": "drama",
              "kind": "", "duration_s": 5400}]
    return [("user_tokens", users), ("item_stats", items),
            # older (u1) and same-instant (u3) rows, which Feast skips; u2 newer, then
            # older within one batch; the item newer
            ("user_tokens", [user_row("u1", tokens("u1", 2, 9), T0 + 5),
                             user_row("u3", tokens("u3", 3, 9), T0 + 12),
                             user_row("u2", tokens("u2", 4, 1), T0 + 20),
                             user_row("u2", tokens("u2", 1, 1), T0 + 15)]),
            ("item_stats", [{**items[0], "event_timestamp": T0 + 1, "plays_1h": 4}])]


def feast_write(store, view: str, rows: list[dict]) -> None:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key, features = (("user_id", USER_FEATURES) if view == "user_tokens"
                     else ("item_id", ITEM_FEATURES))
    data = [(EntityKey(join_keys=[key], entity_values=[Value(string_val=row[key])]),
             {f: proto_value(row[f]) for f in features},
             datetime.fromtimestamp(row["event_timestamp"] / 1000, tz=UTC), None)
            for row in rows]
    store._get_provider().online_write_batch(store.config, store.get_feature_view(view), data,
                                             None)


@pytest.mark.parametrize("skip_dedup", [True, False], ids=["as configured", "feast default"])
def test_the_writer_stores_what_feast_stores(tmp_path, skip_dedup: bool) -> None:
    import redis

    with RedisServer(tmp_path / "redis") as server:
        client = redis.Redis(port=server.port)
        store = open_store(online="redis", data_dir=tmp_path / "data", redis_url=server.url)
        store.config.online_store.skip_dedup = skip_dedup
        writer = FeatureWriter(store)
        assert writer.redis is not None  # the fast path, not Feast's
        got = {}
        for name, write in (("ours", None), ("feast", feast_write)):
            client.flushdb()
            for view, rows in batches():
                if write is None:
                    (writer.write_users if view == "user_tokens" else writer.write_items)(rows)
                else:
                    write(store, view, rows)
            got[name] = {key: client.hgetall(key) for key in client.scan_iter()}
        assert len(got["feast"]) == 4
        assert got["ours"] == got["feast"]
