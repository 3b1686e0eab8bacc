"""``marquee bench outcomes`` at a tiny size: every mode runs, only the joined one joins."""

from __future__ import annotations

import json

from infra.bench.outcomes import lines, run_bench


def test_outcomes_bench_reports_each_mode(tmp_path):
    out = tmp_path / "outcomes.json"
    report = run_bench(events=3000, users=60, poll=500, repeats=1, out=out)
    modes = report["modes"]
    assert modes["off"]["impressions_joined"] == modes["on_plain"]["impressions_joined"] == 0
    assert modes["on_joined"]["impressions_joined"] > 100
    assert all(m["cpu_us_per_event_best"] > 0 for m in modes.values())
    held = report["held"]
    assert held["held"] == report["rankings"] and held["memory_bytes_per_ranking"] > 100
    assert json.loads(out.read_text())["events"] == report["events"]
    assert "join on, every event joined" in "\n".join(lines(report))
