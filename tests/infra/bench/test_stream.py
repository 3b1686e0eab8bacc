"""``marquee bench stream --online redis`` with no Redis running: the bench starts its own;
every phase (floors, flow, growth, two processes, freshness) runs at a small size."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from infra.cli import main

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (make system-deps)")]


def test_bench_on_redis_starts_and_stops_its_own_redis(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("MARQUEE_REDIS_URL", raising=False)
    out = tmp_path / "stream.json"
    rc = main(["bench", "stream", "--events", "2000", "--users", "200", "--online", "redis",
               "--processes", "2", "--fresh-rate", "1000", "--out", str(out)])
    assert rc == 0
    captured = capfd.readouterr()
    assert "CONFWARN" not in captured.err  # no consumer property on a producer
    assert "flow into Feast" in captured.out  # the printed table
    figures = json.loads(out.read_text())
    assert figures["online_store"] == "redis"
    assert figures["redis_url"].startswith("redis://127.0.0.1:")
    assert figures["flow_events_per_s_per_worker"] > 0
    assert figures["freshness_events"] == 2000 and figures["freshness_user_rows"] > 0
    assert figures["memory"]["state"]["users"] == 200  # every user's state was weighed
    assert figures["memory"]["growth"]["users_small"] == 100
    assert figures["scale_out"]["processes"] == 2 and figures["scale_out"]["events_per_s"] > 0
    port = int(figures["redis_url"].rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the bench left its Redis running"
