"""The bulk writers' entity keys equal Feast's ``serialize_entity_key``, byte for byte."""

from __future__ import annotations

import warnings

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given
from hypothesis import strategies as st

from feature_repo.online_rows import EntityKeys

KEYS = EntityKeys(3)


def feast_key(key: str, value: str, version: int = 3) -> bytes:
    return serialize_entity_key(EntityKey(join_keys=[key], entity_values=[
        Value(string_val=value)]), entity_key_serialization_version=version)


@given(st.sampled_from(["user_id", "item_id", "kéy"]), st.text(max_size=300))
def test_keys_are_built_as_feast_builds_them(key: str, value: str) -> None:
    assert KEYS(key, value) == feast_key(key, value)
    assert KEYS.prefixes[key] is not None  # built by hand, not through Feast


def test_another_layout_version_goes_through_feast() -> None:
    keys = EntityKeys(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Feast warns that version 2 is retired
        assert keys("user_id", "u1") == feast_key("user_id", "u1", 2)
    assert keys.prefixes["user_id"] is None


@given(st.one_of(st.integers(0, 4_102_444_800_000), st.sampled_from([0, 1, 999, 1000, 1001]),
                 st.integers(-10**12, -1)))
def test_row_times_are_serialized_as_protobuf_serializes_them(ms: int) -> None:
    from datetime import UTC, datetime

    from google.protobuf.timestamp_pb2 import Timestamp

    from feature_repo.online_rows import _timestamp

    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(ms / 1000, tz=UTC))
    assert _timestamp(ms) == (ts.SerializeToString(), ts.seconds * 1_000_000_000 + ts.nanos)
