"""Subcommands about online experiments: ``marquee experiment report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.cli.args import command

REPORT_HELP = """\
Read the experiment counts the flow keeps in DATA_DIR/experiments.sqlite3 (events that carry
a request_id, joined to the logged ranking that showed their item) and print, per experiment:
per variant the click, play and complete rates per impression and the watch time per
impression, each with its 95% interval; for A/B each variant against the baseline (difference,
95% interval, p-value); for interleaving the requests each team won and the sign test of the
preference; and a verdict in plain words. Exits 1 when there are no counts (yet).
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment report`` to ``marquee``."""
    group = sub.add_parser("experiment", help="online experiments: the report of their outcomes",
                           description="Online experiments (A/B and interleaving, configured "
                           "with MARQUEE_EXPERIMENTS on the service): their outcomes as the "
                           "flow counted them.")
    inner = group.add_subparsers(dest="experiment_command", metavar="COMMAND", required=True)
    p = command(inner, "report", _report, "rates, differences, preference and verdict per "
                "experiment", REPORT_HELP,
                examples=("marquee experiment report",
                          "marquee experiment report --experiment fm-b-vs-a --metric click",
                          "marquee experiment report --json"))
    p.add_argument("--experiment", default=None, help="only this experiment (default: all)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the flow's data folder (default MARQUEE_FLOW_DATA_DIR or var)")
    p.add_argument("--metric", choices=("play", "click", "complete", "watch"), default="play",
                   help="the A/B verdict's rate: plays, clicks or completes per impression, "
                   "or watch time per impression")
    p.add_argument("--baseline", default=None,
                   help="the A/B variant the others are compared with (default control, "
                   "else a, else the first by name)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the verdict")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _report(args: argparse.Namespace) -> int:
    from infra.experiment_report import build, render
    from streams.contract.layout import DataLayout
    from streams.outcome_table import read_totals

    if args.data_dir is None:
        from streams.flow import FlowSettings

        args.data_dir = FlowSettings().data_dir
    table = DataLayout(args.data_dir).experiments
    totals = read_totals(table)
    if args.experiment is not None:
        if args.experiment not in totals:
            known = ", ".join(sorted(totals)) or "none yet"
            print(f"marquee experiment report: no counts for experiment {args.experiment!r} "
                  f"in {table} (experiments counted: {known})", file=sys.stderr)
            return 1
        totals = {args.experiment: totals[args.experiment]}
    if not totals:
        print(f"marquee experiment report: no experiment counts in {table} yet: the flow "
              "writes them once events carrying a request_id join rankings of a running "
              "experiment (MARQUEE_EXPERIMENTS on the service)", file=sys.stderr)
        return 1
    reports = [build(t, args.metric, args.baseline, args.alpha) for t in totals.values()]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print("\n\n".join(render(r) for r in reports))
    return 0
