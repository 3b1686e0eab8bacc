"""``marquee bench broker`` on a small load: both engines measured, the stored events counted."""

from __future__ import annotations

import json

import pytest

from infra.bench.broker import run_bench

pytestmark = pytest.mark.integration


def test_bench_measures_both_engines_and_reads_back_after_the_restarts(tmp_path):
    out = tmp_path / "broker.json"
    figures = run_bench(n=2_000, singles=20, out=out)
    durable = figures["durable"]
    assert durable["events_acked"] == 2_020
    assert durable["read_back_after_restarts"] == 2_020
    assert durable["files"] > 0 and durable["disk_bytes_per_event"] > 0
    assert 0 < durable["restart_after_tansu_kill_s"] < 20
    assert figures["memory"]["bulk_acked_eps"] > 0 and "files" not in figures["memory"]
    assert json.loads(out.read_text()) == figures
