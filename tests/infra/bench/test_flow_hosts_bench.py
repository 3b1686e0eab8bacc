"""``marquee bench cluster --flow``: the flow and its floor on one host and on two."""

from __future__ import annotations

import pytest

from infra import netns

UNAVAILABLE = netns.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.cluster,
              pytest.mark.skipif(bool(UNAVAILABLE), reason=UNAVAILABLE or "")]


def test_both_topologies_are_measured_beside_their_floor() -> None:
    from infra.bench.flow_hosts import run_flow_hosts

    report = run_flow_hosts(n_events=3_000, users=300)
    assert report["events"] == 3_000
    for name in ("1 host", "2 hosts"):
        for kind in ("floor", "flow"):
            figures = report[name][kind]
            assert figures["events_per_s"] > 0 and figures["cpu_us_per_event"] > 0
        # the flow does the floor's reading and more
        assert report[name]["flow"]["cpu_us_per_event"] > report[name]["floor"][
            "cpu_us_per_event"]
    assert report["flow_2_vs_1"] > 0 and report["floor_2_vs_1"] > 0
