"""The fault level's arithmetic on made-up requests (no Ray): per-second windows, the error
share after the kill and when latency counts as normal again."""

from __future__ import annotations

import pytest

from infra.bench.serve_fault import Shot, back_to_normal, summarize


def _steady(t0: float, t1: float, latency: float, status: int = 200) -> list[Shot]:
    """Ten requests a second from ``t0`` to ``t1``."""
    return [Shot(t0 + i / 10, status, latency) for i in range(int((t1 - t0) * 10))]


def test_an_outage_then_a_slow_second_then_normal() -> None:
    shots = (_steady(-10, 0, 0.010) + _steady(0, 2, 0.001, status=503)
             + _steady(2, 3, 0.500) + _steady(3, 10, 0.012))
    got = summarize(shots, kill_at=0.0, before_s=10, after_s=10)
    assert got["baseline_p99_ms"] == pytest.approx(10.0)
    assert got["errors_after"] == 20 and got["requests_after"] == 100
    assert got["error_share"] == pytest.approx(0.2)
    assert got["errors_by_status"] == {"503": 20} and got["errors_sent_before_kill"] == {}
    assert got["normal_after_kill_s"] == 3.0  # 12 ms <= 1.5 x 10 ms from second 3 on
    assert got["baseline_windows_normal"] == "10/10"
    assert [w["errors"] for w in got["windows"][10:13]] == [10, 10, 0]


def test_never_normal_when_latency_stays_high_or_load_ends_first() -> None:
    slow = _steady(-5, 0, 0.010) + _steady(0, 10, 0.020)
    assert summarize(slow, 0.0, 5, 10)["normal_after_kill_s"] is None
    got = summarize(_steady(-5, 0, 0.010) + _steady(0, 8, 0.500) + _steady(8, 10, 0.010),
                    0.0, 5, 10)
    assert got["normal_after_kill_s"] is None  # two good seconds are not three


def test_a_window_with_an_error_is_not_normal_however_fast() -> None:
    wins = [{"t": t, "n": 10, "errors": int(t == 1), "p99_ms": 1.0} for t in range(6)]
    assert back_to_normal(wins, limit_ms=10.0, hold_s=3) == 2.0


def test_normal_counts_from_the_first_disturbed_second_on() -> None:
    def wins(p99s: list[float]) -> list[dict]:
        return [{"t": t, "n": 10, "errors": 0, "p99_ms": p} for t, p in enumerate(p99s)]

    # fine for 3 s, then the replacement's start slows the survivor: normal again at 4
    assert back_to_normal(wins([1, 1, 1, 50, 1, 1, 1]), limit_ms=10.0, hold_s=3) == 4.0
    assert back_to_normal(wins([1] * 6), limit_ms=10.0, hold_s=3) == 0.0
