"""The feature store contract (docs/contracts.md), run against SQLite and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from feature_repo.store import (
    ITEM_FEATURES,
    FeatureReader,
    FeatureWriter,
    effective_config,
    feast_redis_connection,
    read_items,
    read_users,
    user_row,
    write_items,
    write_users,
)
from streams.contract.tokens import FACETS, MAX_SEQ, Token

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000


def tokens(n: int, item0: int = 2) -> list[Token]:
    return [Token("u", T0 + i, f"m{i}", item0 + i, 3, 2, 1, 4, 2, 5, 1 + i % 3)
            for i in range(n)]


def item_row(item_id: str, plays: int) -> dict:
    return {"item_id": item_id, "event_timestamp": T0, "plays_1h": plays, "plays_24h": 2 * plays,
            "impressions_24h": 10 * plays, "ctr_24h": 0.1, "release_ms": T0 - 1,
            "genre": "drama", "kind": "movie", "duration_s": 5400}


def test_definitions_are_applied(feature_store):
    views = {fv.name: fv for fv in feature_store.list_feature_views()}
    assert set(views) == {"user_tokens", "item_stats"}
    assert {f.name for f in views["user_tokens"].features} == {
        *(f"{facet}_seq" for facet in FACETS), "last_ts", "n_tokens"}
    assert {f.name for f in views["item_stats"].features} == set(ITEM_FEATURES)
    service = feature_store.get_feature_service("marquee_v1")
    assert {p.name for p in service.feature_view_projections} == {"user_tokens", "item_stats"}
    assert {e.name for e in feature_store.list_entities()} >= {"user", "item"}
    assert {s.name for s in feature_store.list_data_sources()} >= {"user_tokens_push",
                                                                  "item_stats_push"}


@pytest.mark.parametrize("path", ["writer", "push"])
def test_user_sequences_round_trip_and_the_last_write_wins(feature_store, path):
    write = FeatureWriter(feature_store).write_users if path == "writer" else (
        lambda rows: write_users(feature_store, rows))
    write([user_row("u1", tokens(5), T0 + 10), user_row("u2", tokens(MAX_SEQ, 7), T0 + 10)])
    got = read_users(feature_store, ["u1", "u2", "nobody"])
    assert got["u1"]["item_seq"] == [2, 3, 4, 5, 6]
    assert got["u1"]["duration_seq"] == [1, 2, 3, 1, 2]
    assert got["u1"]["last_ts"] == T0 + 4 and got["u1"]["n_tokens"] == 5
    assert len(got["u2"]["action_seq"]) == MAX_SEQ
    assert got["nobody"]["item_seq"] == [] and got["nobody"]["n_tokens"] is None
    # A second write of the same instant (a provisional token became final) replaces it.
    write([user_row("u1", tokens(2, 40), T0 + 10)])
    assert read_users(feature_store, ["u1"])["u1"]["item_seq"] == [40, 41]


def test_the_reader_answers_what_feast_answers(feature_store):
    writer = FeatureWriter(feature_store)
    writer.write_users([user_row("u1", tokens(5), T0 + 10), user_row("u2", tokens(0), T0)])
    writer.write_items([item_row("m1", 3)])
    write_items(feature_store, [item_row("m2", 1)])
    reader = FeatureReader(feature_store)
    users, items = ["u1", "u2", "nobody"], ["m1", "m2", "nope"]
    assert reader.users(users) == read_users(feature_store, users)
    assert reader.items(items) == read_items(feature_store, items)
    assert reader.users(["u1"])["u1"]["item_seq"] == [2, 3, 4, 5, 6]
    assert reader.items(["m1"])["m1"]["genre"] == "drama"


def test_item_stats_round_trip_and_the_feature_service(feature_store):
    writer = FeatureWriter(feature_store)
    writer.write_items([item_row("m1", 3)])
    write_items(feature_store, [item_row("m2", 1)])
    writer.write_users([user_row("u1", tokens(3), T0)])
    items = read_items(feature_store, ["m1", "m2", "nope"])
    assert items["m1"]["plays_24h"] == 6 and items["m1"]["genre"] == "drama"
    assert items["m2"]["ctr_24h"] == pytest.approx(0.1)
    assert items["nope"]["plays_1h"] is None
    got = feature_store.get_online_features(
        features=feature_store.get_feature_service("marquee_v1"),
        entity_rows=[{"user_id": "u1", "item_id": "m1"}]).to_dict()
    assert got["item_seq"] == [[2, 3, 4]] and got["plays_1h"] == [3]


def test_the_effective_config_follows_the_choice(tmp_path: Path):
    sqlite = effective_config(tmp_path, "sqlite", "")
    assert sqlite["online_store"] == {"type": "sqlite",
                                      "path": str(tmp_path.resolve() / "online_store.db")}
    redis = effective_config(tmp_path, "redis", "redis://10.0.0.5:6380/2")
    assert redis["online_store"]["connection_string"] == "10.0.0.5:6380,db=2"
    assert redis["project"] == "marquee"
    with pytest.raises(ValueError, match="sqlite or redis"):
        effective_config(tmp_path, "mongo", "")
    with pytest.raises(ValueError, match="host:port"):
        feast_redis_connection("redis://nohost")


def test_open_store_writes_the_yaml_and_reads_the_environment(tmp_path, monkeypatch, redis_url):
    from feature_repo.store import open_store

    monkeypatch.setenv("MARQUEE_ONLINE_STORE", "redis")
    monkeypatch.setenv("MARQUEE_REDIS_URL", redis_url.replace("/0", "/3"))
    store = open_store(data_dir=tmp_path)
    written = yaml.safe_load((tmp_path / "feast" / "feature_store.yaml").read_text())
    assert written["online_store"]["type"] == "redis"
    assert written["online_store"]["connection_string"].endswith(",db=3")
    FeatureWriter(store).write_users([user_row("u9", tokens(1), T0)])
    assert read_users(store, ["u9"])["u9"]["item_seq"] == [2]


def test_the_bulk_sqlite_path_stores_the_same_bytes_as_feast(tmp_path: Path):
    from feature_repo.store import open_store

    rows = [user_row("u1", tokens(5), T0 + 10), user_row("u2", tokens(MAX_SEQ, 300), T0 + 7),
            user_row("u3", [], T0)]
    later = [user_row("u1", tokens(7), T0 + 20), user_row("u4", tokens(2), T0 + 20)]
    # a title released before 1970 (a negative int: protobuf's own encoding), a zero CTR
    items = [item_row("m1", 3), {**item_row("m2", 0), "ctr_24h": 0.0, "genre": ""},
             {**item_row("m3", 1), "release_ms": -86_400_000}]
    dumps = []
    for bulk in (True, False):
        store = open_store(online="sqlite", data_dir=tmp_path / str(bulk))
        writer = FeatureWriter(store)
        assert (writer.sqlite is not None) is True
        if not bulk:
            writer.sqlite = None  # Feast's own online_write_batch, row by row
        writer.write_users(rows)
        writer.write_items(items)
        writer.write_users(later)  # updates in place, and a new user beside them
        conn = writer.provider.online_store._get_conn(store.config)
        dumps.append({table: sorted(conn.execute(
            f'SELECT entity_key, feature_name, value, typeof(value), value_text, '
            f'typeof(value_text), CAST(event_ts AS TEXT), typeof(event_ts), created_ts '
            f'FROM "marquee_{table}"').fetchall()) for table in ("user_tokens", "item_stats")})
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["user_tokens"]) == 4 * 10
