"""``marquee bench redis``: Feast's user rows and the plain-pipeline floor on a real Redis."""

from __future__ import annotations

import pytest

from infra.bench.online_store import OnlineStoreSpec, run_bench

pytestmark = pytest.mark.integration


def test_rows_written_read_back_and_weighed_beside_the_floor() -> None:
    r = run_bench(OnlineStoreSpec(users=200, tokens=50, batch=64, reads=100))
    assert r["hashes"] == 200  # one hash per user, which the floor rewrites
    feast, floor = r["feast"], r["floor"]
    for f in (feast, floor):
        assert f["rows_per_s"] > 0 and f["reads_per_s"] > 0
        assert 0 < f["read_p50_ms"] <= f["read_p99_ms"]
    # The same hashes: about the same bytes in Redis (its dictionaries grow in steps).
    assert 50 * 7 <= feast["bytes_per_row"] < 50 * 7 * 8
    assert 0.7 < floor["bytes_per_row"] / feast["bytes_per_row"] < 1.3


def test_the_spec_names_the_fix() -> None:
    with pytest.raises(ValueError, match="--tokens"):
        OnlineStoreSpec(tokens=0)
