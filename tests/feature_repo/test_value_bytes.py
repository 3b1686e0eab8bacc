"""The hand-written value encodings equal protobuf's, byte for byte, for any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from feature_repo.value_bytes import int64_list_bytes, proto_value, scalar_bytes

EDGES = st.sampled_from([0, 1, 127, 128, 255, 256, 16_383, 16_384, -1, 2**62, -(2**63)])
INTS = st.one_of(EDGES, st.integers(0, 300), st.integers(-(2**63), 2**63 - 1))


@given(st.lists(INTS, max_size=250))
def test_int64_lists_encode_as_protobuf_does(values: list[int]) -> None:
    assert int64_list_bytes(values) == proto_value(values).SerializeToString()


@given(st.lists(st.integers(0, 127), min_size=1, max_size=250))
def test_small_ids_take_the_bytes_path_and_still_match(values: list[int]) -> None:
    assert int64_list_bytes(values) == proto_value(values).SerializeToString()


@given(st.one_of(st.integers(0, 2**63 - 1), st.floats(allow_nan=False), st.text()))
def test_scalars_encode_as_protobuf_does(value: object) -> None:
    got = scalar_bytes(value)
    assert got is None or got == proto_value(value).SerializeToString()


def test_lengths_around_the_one_byte_header_match():
    for n in range(120, 135):
        for values in ([5] * n, [300] * (n // 2), [300] + [5] * n):
            assert int64_list_bytes(values) == proto_value(values).SerializeToString()
