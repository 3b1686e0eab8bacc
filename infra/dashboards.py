"""Grafana dashboards as data: one list of panels per dashboard, rendered to JSON.

The JSON under ``infra/grafana/dashboards/`` is generated from these specs (``python -m
infra.dashboards``) so that the test that runs every panel's PromQL against a real Prometheus
reads exactly what Grafana shows.

A query is never padded to a value with ``or vector(0)``: a counter that has not moved yet (a
labelled one has no series before its first increment) shows as 0 through the panel's
``noValue``, so a query over a metric nobody exports returns no data, and the end-to-end test
sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).parent / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "marquee-prometheus"}


@dataclass(frozen=True)
class Panel:
    """One time-series panel: a title, its PromQL expressions (with legends), and a unit."""

    title: str
    exprs: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    no_value: str | None = None  # what Grafana shows when the query returns no series


def _p99(metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.99, sum by ({group}) (rate({metric}_bucket[5m])))"


def _p50(metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.5, sum by ({group}) (rate({metric}_bucket[5m])))"


PIPELINE = [
    Panel("Events consumed / s", (
        ("sum(rate(marquee_events_consumed_total[1m]))", "consumed"),
        ("sum(rate(marquee_events_valid_total[1m]))", "valid")), "ops"),
    Panel("Invalid events by reason / s", (
        ("sum by (reason) (rate(marquee_events_invalid_total[5m]))", "{{reason}}"),),
        "ops", "Events that broke the contract; each goes to the dead-letter topic.", "0"),
    Panel("Dead-lettered / s", (
        ("sum(rate(marquee_events_dead_lettered_total[5m]))", "dead-lettered"),), "ops",
        no_value="0"),
    Panel("Tokens emitted / s", (("sum(rate(marquee_tokens_emitted_total[1m]))", "tokens"),),
          "ops"),
    Panel("Merge ratio (events per token)", (
        ("max(marquee_token_merge_ratio)", "events/token"),), "short"),
    Panel("Broker reachable from the flow", (("min(marquee_broker_up)", "up"),), "short",
          "1 when the broker answered the flow's last probe (every 2 s); 0 when it does "
          "not, and consumer lag then reads NaN (unknown)."),
    Panel("Consumer lag by partition", (
        ("sum by (partition) (marquee_consumer_lag_messages)", "p{{partition}}"),), "short"),
    Panel("Feast write latency", (
        (_p50("marquee_feast_write_seconds"), "p50"),
        (_p99("marquee_feast_write_seconds"), "p99")), "s"),
    Panel("Event → online feature freshness", (
        (_p50("marquee_event_freshness_seconds"), "p50"),
        (_p99("marquee_event_freshness_seconds"), "p99")), "s"),
]

SERVING = [
    Panel("Requests / s by route and code", (
        ("sum by (route, code) (rate(marquee_requests_total[1m]))", "{{route}} {{code}}"),),
        "reqps"),
    Panel("Error rate (5xx share)", (
        # No 5xx series is a share of 0 while there is traffic; without traffic, no data.
        ('(sum(rate(marquee_requests_total{code=~"5.."}[5m])) or vector(0)) / '
         "sum(rate(marquee_requests_total[5m]))", "5xx share"),), "percentunit"),
    Panel("Latency p99 by stage", ((_p99("marquee_request_seconds", "stage"), "{{stage}}"),),
          "s"),
    Panel("Latency p50 by stage", ((_p50("marquee_request_seconds", "stage"), "{{stage}}"),),
          "s"),
    Panel("Mean inference batch size", (
        ("sum(rate(marquee_batch_size_sum[5m])) / sum(rate(marquee_batch_size_count[5m]))",
         "batch"),), "short"),
    Panel("Feature store read latency (features stage)", (
        ('histogram_quantile(0.5, sum by (le) '
         '(rate(marquee_request_seconds_bucket{stage="features"}[5m])))', "p50"),
        ('histogram_quantile(0.99, sum by (le) '
         '(rate(marquee_request_seconds_bucket{stage="features"}[5m])))', "p99")), "s"),
    Panel("Requests by model version / s", (
        ("sum by (model_version) (rate(marquee_requests_total[1m]))", "{{model_version}}"),),
        "reqps"),
    Panel("Model version serving", (("max by (model_version) (marquee_model_info)",
                                     "{{model_version}}"),), "short"),
    Panel("Fallbacks and degraded responses / s", (
        ("sum by (reason) (rate(marquee_fallbacks_total[5m]))", "{{reason}}"),
        ("sum(rate(marquee_degraded_responses_total[5m]))", "degraded")), "ops", no_value="0"),
]

MODEL_BUSINESS = [
    Panel("Catalogue coverage of what was shown", (
        ("max(marquee_catalogue_coverage_ratio)", "coverage"),), "percentunit",
        "Share of the catalogue shown at least once in the recent window."),
    Panel("Exposure share of over-exposed titles", (
        ('sum(rate(marquee_shown_items_total{segment="popular"}[5m])) / '
         'sum(rate(marquee_shown_items_total{segment="all"}[5m]))', "popular share"),),
        "percentunit",
        "Popularity bias: share of returned items that are over-exposed (top impressions)."),
    Panel("New-title share of rankings", (
        ('sum(rate(marquee_shown_items_total{segment="new"}[5m])) / '
         'sum(rate(marquee_shown_items_total{segment="all"}[5m]))', "new share"),),
        "percentunit"),
    Panel("Constraint outcomes", (
        ('sum(rate(marquee_constraints_total{outcome!="relaxed"}[5m])) / '
         "sum(rate(marquee_constraints_total[5m]))", "satisfied share"),
        ("sum by (outcome) (rate(marquee_constraints_total[5m]))", "{{outcome}}")),
        "short", "Satisfied share counts satisfied and binding (held with equality) ones."),
    Panel("Re-ranker solve time", ((_p50("marquee_rerank_solve_seconds"), "p50"),
                                   (_p99("marquee_rerank_solve_seconds"), "p99")), "s"),
    Panel("Infeasible goals and relaxations / s", (
        ("sum(rate(marquee_rerank_infeasible_total[5m]))", "infeasible"),
        ("sum(rate(marquee_rerank_relaxations_total[5m]))", "relaxations")), "ops",
        no_value="0"),
    Panel("Cold-start share of shown items", (
        ('sum(rate(marquee_shown_items_total{segment="cold"}[5m])) / '
         'sum(rate(marquee_shown_items_total{segment="all"}[5m]))', "cold share"),),
        "percentunit", "Titles the model knows by metadata only (no training interactions)."),
    Panel("Fallbacks by reason / s", (
        ("sum by (reason) (rate(marquee_fallbacks_total[5m]))", "{{reason}}"),), "ops",
        no_value="0"),
]

def _per_impression(metric: str) -> str:
    """An experiment's cumulative ``metric`` per shown (ranking, item) pair, per variant."""
    return (f"sum by (experiment, variant) (marquee_experiment_{metric}_total) / "
            "sum by (experiment, variant) (marquee_experiment_impressions_total)")


VARIANT = "{{experiment}} {{variant}}"
EXPERIMENTS = [
    Panel("Experiment rankings joined / s by variant", (
        ("sum by (experiment, variant) (rate(marquee_experiment_rankings_total[5m]))",
         VARIANT),), "ops",
        "Logged rankings of a running experiment read by the flow, per variant in them."),
    Panel("Impressions / s by variant", (
        ("sum by (experiment, variant) (rate(marquee_experiment_impressions_total[5m]))",
         VARIANT),), "ops",
        "Shown (ranking, item) pairs joined from events that carry a request_id, by the "
        "variant (interleaving: the team) that placed the item."),
    Panel("Click rate per impression", ((_per_impression("clicks"), VARIANT),), "percentunit",
          "Since the experiment started (the flow's counts); `marquee experiment report` "
          "gives the intervals and the verdict."),
    Panel("Play rate per impression", ((_per_impression("plays"), VARIANT),), "percentunit"),
    Panel("Complete rate per impression", ((_per_impression("completes"), VARIANT),),
          "percentunit"),
    Panel("Watch time per impression", ((_per_impression("watch_seconds"), VARIANT),), "s"),
    Panel("Interleaving: share of decided requests won", (
        ("sum by (experiment, variant) (marquee_experiment_preferred_requests) / on "
         "(experiment) group_left sum by (experiment) (marquee_experiment_preferred_requests)",
         VARIANT),), "percentunit",
        "Team-draft credit: a request goes to the team whose items were played more; ties "
        "and requests without a play are left out."),
    Panel("Interleaving: decided and tied requests", (
        ("sum by (experiment) (marquee_experiment_preferred_requests)",
         "{{experiment}} decided"),
        ("sum by (experiment) (marquee_experiment_tied_requests)", "{{experiment}} tied")),
        "short"),
    Panel("Outcome events not joined / s by reason", (
        ("sum by (reason) (rate(marquee_experiment_unjoined_events_total[5m]))",
         "{{reason}}"),), "ops",
        "Events with a request_id that counted for no experiment: not_held (the ranking ran "
        "no experiment, was not logged, or left the join window), not_shown, "
        "outside_window, overflow.", "0"),
]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "pipeline": ("Marquee · Pipeline (ingest → tokens → features)", PIPELINE),
    "serving": ("Marquee · Serving (traffic, latency by stage, errors, batching)", SERVING),
    "model_business": ("Marquee · Model and business", MODEL_BUSINESS),
    "experiments": ("Marquee · Experiments", EXPERIMENTS),
}


def render(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    """A Grafana dashboard JSON model with panels on a two-column grid."""
    rendered = []
    for i, panel in enumerate(panels):
        rendered.append({
            "id": i + 1, "type": "timeseries", "title": panel.title,
            "description": panel.description, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit} | (
                {"noValue": panel.no_value} if panel.no_value is not None else {}),
                "overrides": []},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr,
                         "legendFormat": legend} for j, (expr, legend) in enumerate(panel.exprs)],
        })
    return {"uid": f"marquee-{uid}", "title": title, "tags": ["marquee"], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "panels": rendered}


def write_dashboards(folder: Path = DASHBOARD_DIR) -> list[Path]:
    """Render every dashboard to ``folder/<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (title, panels) in DASHBOARDS.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(render(name, title, panels), indent=2) + "\n")
        paths.append(path)
    return paths


def dashboard_exprs(folder: Path = DASHBOARD_DIR) -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, expr)`` for every target of every committed dashboard."""
    found = []
    for path in sorted(folder.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                found.append((path.name, panel["title"], target["expr"]))
    return found


if __name__ == "__main__":
    for written in write_dashboards():
        print(written)
