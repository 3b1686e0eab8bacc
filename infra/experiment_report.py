"""``marquee experiment report``: the flow's experiment counts (``streams.outcome_table``) as
rates with intervals, differences, the interleaving preference and a verdict in plain words.

A/B compares every variant with a baseline (``control`` if there is one, else ``a``, else the
first by name) on one primary rate (plays per impression unless told otherwise); interleaving
counts the requests each team won (``infra.stats.sign_test``). Rates and their differences
take users as the unit (``infra.stats.ratio``, from the per-user sums the flow keeps), because
a user's impressions are not independent trials: treating them so decided an A/A test at the
1% level in 7-11% of simulated streams (docs/results.md). A table written without those sums
falls back to impressions as the unit (Wilson and Newcombe intervals), and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra import stats
from streams.outcome_table import ExperimentTotals
from streams.outcomes import Counts

RATES = {"click": "clicks", "play": "plays", "complete": "completes"}
METRICS = (*RATES, "watch")
# The flow's per-user sums of each metric's numerator (``streams.outcomes.USER_TOTALS``).
USER_NUMERATORS = {"click": ("clicks", "clicks"), "play": ("plays", "plays"),
                   "complete": ("completes", "completes"), "watch": ("watch_s", "watch")}


@dataclass
class VariantReport:
    """One variant's rates and mean watch time per impression, each with its interval."""

    name: str
    counts: Counts
    rates: dict[str, stats.Estimate] = field(default_factory=dict)
    watch: stats.Estimate | None = None
    watch_var: float = math.nan


@dataclass
class ExperimentReport:
    """What the report says about one experiment."""

    name: str
    mode: str
    variants: list[VariantReport]
    baseline: str | None
    metric: str
    differences: dict[str, dict[str, stats.Estimate]]  # variant -> metric -> vs baseline
    preference: dict[str, Any] | None
    verdict: str
    updated_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        def est(e: stats.Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"value": _num(e.value), "low": _num(e.low),
                                           "high": _num(e.high), "p": _num(e.p)}

        return {"experiment": self.name, "mode": self.mode, "baseline": self.baseline,
                "metric": self.metric, "verdict": self.verdict, "updated_ms": self.updated_ms,
                "variants": {v.name: {"rankings": v.counts.rankings, "users": v.counts.users,
                                      "impressions": v.counts.impressions,
                                      "clicks": v.counts.clicks, "plays": v.counts.plays,
                                      "completes": v.counts.completes,
                                      "watch_seconds": v.counts.watch_s,
                                      "rates": {k: est(e) for k, e in v.rates.items()},
                                      "watch_per_impression": est(v.watch)}
                             for v in self.variants},
                "differences": {v: {m: est(e) for m, e in d.items()}
                                for v, d in self.differences.items()},
                "preference": self.preference}


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def pick_baseline(names: list[str], baseline: str | None) -> str | None:
    """The variant the others are compared with."""
    if baseline is not None:
        if baseline not in names:
            raise ValueError(f"--baseline {baseline!r} is not a variant of this experiment; "
                             f"give one of {', '.join(names)}")
        return baseline
    for name in ("control", "a"):
        if name in names:
            return name
    return sorted(names)[0] if names else None


def user_sums(c: Counts, metric: str) -> stats.UserSums:
    """One metric's numerator per impression as sums over the variant's users."""
    total, name = USER_NUMERATORS[metric]
    return stats.UserSums(c.users, getattr(c, total), c.impressions,
                          getattr(c, f"user_{name}_sq"), getattr(c, f"user_{name}_impressions"),
                          c.user_impressions_sq)


def by_user(c: Counts) -> bool:
    """Whether the counts carry per-user sums (a flow that keeps them wrote the table)."""
    return c.users > 0 or not c.impressions


def variant_report(name: str, c: Counts) -> VariantReport:
    """Rates and watch time per impression with users as the unit (impressions as the unit,
    Wilson's interval, for counts without per-user sums).
    """
    v = VariantReport(name, c)
    if by_user(c):
        for rate in RATES:
            e = stats.ratio(user_sums(c, rate))[0]  # a share: its interval stays in [0, 1]
            v.rates[rate] = stats.Estimate(e.value, max(e.low, 0.0), min(e.high, 1.0))
        v.watch, v.watch_var = stats.ratio(user_sums(c, "watch"))
        return v
    for rate, attr in RATES.items():
        v.rates[rate] = stats.wilson(getattr(c, attr), c.impressions)
    v.watch, v.watch_var = stats.mean(c.watch_s, c.watch_sq, c.impressions)
    return v


def compare(v: VariantReport, base: VariantReport) -> dict[str, stats.Estimate]:
    """``v`` minus ``base`` on every rate and on watch time per impression."""
    a, b = v.counts, base.counts
    if by_user(a) and by_user(b):
        return {metric: stats.diff_ratios(user_sums(a, metric), user_sums(b, metric))
                for metric in METRICS}
    out = {rate: stats.diff_proportions(getattr(a, attr), a.impressions,
                                        getattr(b, attr), b.impressions)
           for rate, attr in RATES.items()}
    if v.watch is not None and base.watch is not None:
        out["watch"] = stats.diff_means(v.watch.value, v.watch_var, a.impressions,
                                        base.watch.value, base.watch_var, b.impressions)
    return out


def build(totals: ExperimentTotals, metric: str = "play", baseline: str | None = None,
          alpha: float = 0.05) -> ExperimentReport:
    """The report of one experiment's totals."""
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: give one of {', '.join(METRICS)}")
    variants = [variant_report(n, c) for n, c in sorted(totals.variants.items())]
    by_name = {v.name: v for v in variants}
    base = pick_baseline(list(by_name), baseline)
    differences = {v.name: compare(v, by_name[base]) for v in variants
                   if base is not None and v.name != base}
    preference = None
    if totals.mode == "interleave":
        preference = _preference(totals, variants)
        verdict = _interleave_verdict(preference, alpha)
    else:
        verdict = _ab_verdict(variants, base, differences, metric, alpha)
    return ExperimentReport(totals.name, totals.mode, variants, base, metric, differences,
                            preference, verdict, totals.updated_ms)


def _preference(totals: ExperimentTotals, variants: list[VariantReport]) -> dict[str, Any]:
    wins = {v.name: v.counts.preferred for v in variants}
    names = sorted(wins, key=lambda n: (-wins[n], n))
    leader, other = (names + ["", ""])[:2]
    decided = sum(wins.values())
    ties, requests = totals.overall.tied, totals.overall.rankings
    return {"wins": wins, "ties": ties, "decided": decided,
            "no_play": max(requests - decided - ties, 0),
            "requests": totals.overall.rankings, "leader": leader, "other": other,
            "share": wins.get(leader, 0) / decided if decided else math.nan,
            "share_interval": [_num(x) for x in (
                stats.wilson(wins.get(leader, 0), decided).low,
                stats.wilson(wins.get(leader, 0), decided).high)],
            "p": stats.sign_test(wins.get(leader, 0), wins.get(other, 0))}


def _interleave_verdict(pref: dict[str, Any], alpha: float) -> str:
    decided, p = pref["decided"], pref["p"]
    context = f"{decided:,} decided requests ({pref['ties']:,} ties, {pref['no_play']:,} " \
              f"without a play, {pref['requests']:,} interleaved)"
    if not decided:
        return f"no decision yet: no interleaved request has a play ({pref['requests']:,} " \
               "interleaved requests)"
    share = f"{pref['share']:.0%}"
    if p < alpha:
        return f"{pref['leader']} preferred in {share} of decided requests, p = {_p(p)}, " \
               f"{context}"
    return f"no preference yet: {pref['leader']} in {share} of decided requests, " \
           f"p = {_p(p)} (not below {alpha:g}), {context}"


def _ab_verdict(variants: list[VariantReport], base: str | None,
                differences: dict[str, dict[str, stats.Estimate]], metric: str,
                alpha: float) -> str:
    if base is None or not differences:
        return "no comparison: fewer than two variants have counts"
    by_name = {v.name: v for v in variants}
    what = "watch time per impression" if metric == "watch" else f"{metric} rate"
    lines = []
    for name, diffs in differences.items():
        d = diffs.get(metric)
        a, b = by_name[name].counts, by_name[base].counts
        n = a.impressions + b.impressions
        if d is None or d.p is None or math.isnan(d.value):
            lines.append(f"{name} vs {base}: no impressions yet" if not (
                a.impressions and b.impressions) else
                f"{name} vs {base}: too few users yet (a variant needs two)")
            continue
        mine, theirs = _value(by_name[name], metric), _value(by_name[base], metric)
        unit = f"{a.users + b.users:,} users" if by_user(a) and by_user(b) else \
            "impressions as the unit: this table has no per-user sums"
        numbers = (f"{mine} vs {theirs} ({_delta(d, metric)}, 95% CI {_delta_ci(d, metric)}, "
                   f"p = {_p(d.p)}; {n:,} impressions, {unit})")
        if d.p < alpha:
            better = name if d.value > 0 else base
            worse = base if better == name else name
            lines.append(f"{better} beats {worse} on {what}: {numbers}")
        else:
            lines.append(f"no difference yet between {name} and {base} on {what}: {numbers}")
    return "; ".join(lines)


def _value(v: VariantReport, metric: str) -> str:
    if metric == "watch":
        return f"{v.watch.value:.1f} s" if v.watch else "-"
    return f"{v.rates[metric].value:.1%}"


def _delta(d: stats.Estimate, metric: str) -> str:
    return f"{d.value:+.1f} s" if metric == "watch" else f"{d.value * 100:+.1f} points"


def _delta_ci(d: stats.Estimate, metric: str) -> str:
    if metric == "watch":
        return f"{d.low:+.1f} to {d.high:+.1f} s"
    return f"{d.low * 100:+.1f} to {d.high * 100:+.1f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def render(report: ExperimentReport) -> str:
    """The report as text: a table of rates per variant, the differences, the verdict."""
    when = datetime.fromtimestamp(report.updated_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") \
        if report.updated_ms else "-"
    out = [f"experiment {report.name} ({report.mode or '?'}), counts as of {when} UTC"]
    header = (f"  {'variant':<12}{'rankings':>10}{'users':>8}{'impressions':>13}  "
              f"{'click rate':<22}"
              f"{'play rate':<22}{'complete rate':<22}watch s / impression")
    out.append(header)
    for v in report.variants:
        cells = [f"{_pct(v.rates[r]):<22}" for r in RATES]
        watch = "-" if v.watch is None or math.isnan(v.watch.value) else \
            f"{v.watch.value:.1f} [{v.watch.low:.1f}, {v.watch.high:.1f}]"
        out.append(f"  {v.name:<12}{v.counts.rankings:>10,}{v.counts.users:>8,}"
                   f"{v.counts.impressions:>13,}  "
                   f"{''.join(cells)}{watch}")
    for name, diffs in report.differences.items():
        parts = []
        for metric, d in diffs.items():
            if d.p is None or math.isnan(d.value):
                continue
            parts.append(f"{metric} {_delta(d, metric)} [{_delta_ci(d, metric)}] "
                         f"p = {_p(d.p)}")
        out.append(f"  {name} - {report.baseline}: " + ("; ".join(parts) or "no impressions"))
    if report.preference is not None:
        pref = report.preference
        wins = ", ".join(f"{k} {v:,}" for k, v in sorted(pref["wins"].items()))
        out.append(f"  interleaving: requests won {wins}; ties {pref['ties']:,}; without a "
                   f"play {pref['no_play']:,}; interleaved {pref['requests']:,}")
    out.append(f"verdict: {report.verdict}")
    return "\n".join(out)


def _pct(e: stats.Estimate) -> str:
    if math.isnan(e.value):
        return "-"
    return f"{e.value:.1%} [{e.low:.1%}, {e.high:.1%}]"
