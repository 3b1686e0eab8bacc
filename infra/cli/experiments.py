"""Subcommands about online experiments: ``marquee experiment report``, ``marquee simulate``
(the simulated audience) and ``marquee bench experiments``.
"""

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
    _register_simulate(sub)


SIMULATE_HELP = """\
Members of the demo's synthetic world (the same --users, --days and --seed as `marquee up`)
ask the running service for rankings (POST /v1/rank) and react to what they are shown by
their latent tastes, with position bias: impressions, then clicks, plays and completions with
watch time, each event carrying the ranking's request_id, sent to the broker's events topic
(KAFKA_BOOTSTRAP_SERVERS). With an experiment running (MARQUEE_EXPERIMENTS), the flow counts
the outcomes and `marquee experiment report` gives the verdict. Deterministic per --audience-seed.
"""


def _register_simulate(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "simulate", _simulate, "a simulated audience: rank requests and the "
                "members' reactions as events", SIMULATE_HELP,
                examples=("marquee simulate --requests 2000 --rate 50",
                          "marquee simulate --url http://127.0.0.1:8000 --requests 500"))
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the ranking service")
    p.add_argument("--requests", type=int, default=1000, help="rank requests to make")
    p.add_argument("--rate", type=float, default=None, help="at most this many per second "
                   "(default: as fast as the service answers)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--k", type=int, default=10, help="items per ranking")
    p.add_argument("--users", type=int, default=400, help="the world's users (as `marquee up`)")
    p.add_argument("--days", type=int, default=14, help="the world's days (as `marquee up`)")
    p.add_argument("--seed", type=int, default=7, help="the world's seed (as `marquee up`)")
    p.add_argument("--audience-seed", type=int, default=0,
                   help="who asks when, and how they react")


def _simulate(args: argparse.Namespace) -> int:
    from infra.audience import Audience, members
    from infra.demo import DemoConfig, world_of
    from streams.config import KafkaSettings

    if args.requests < 1:
        raise ValueError("--requests must be at least 1")
    _, world = world_of(DemoConfig(users=args.users, days=args.days, seed=args.seed))
    audience = Audience(args.url, members(world), {t.item_id: t for t in world.catalogue},
                        seed=args.audience_seed, k=args.k)
    run = audience.run(args.requests, KafkaSettings(), rate=args.rate,
                       concurrency=args.concurrency)
    plays = ", ".join(f"{v or 'default'} {n:,}" for v, n in sorted(run.plays.items())) or "none"
    print(f"{run.requests:,} requests in {run.seconds:.1f} s ({run.failed:,} failed), "
          f"{run.events:,} events sent; plays by variant: {plays}")
    return 0 if run.failed == 0 else 1


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench experiments``."""
    p = command(bench_sub, "experiments", _bench,
                "requests A/B and interleaving each need to reach p < 0.01 (simulated "
                "audience, a strong and a weak model)",
                examples=("marquee bench experiments",
                          "marquee bench experiments --seeds 5 --weak untrained"))
    p.add_argument("--seeds", type=int, default=9, help="streams per design (median over them)")
    p.add_argument("--weak", choices=("tenth", "half", "close", "untrained"), default="tenth",
                   help="the weak model: trained on a tenth or half of the users, on every "
                   "user but stopped after 6 of the 8 epochs (the closest pair), or untrained")
    p.add_argument("--users", type=int, default=300, help="the world's users (the audience)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the model pair is built, or reused (default var/bench/pair-WEAK)")
    p.add_argument("--out", type=Path, default=Path("var/bench"), help="output directory")


def _bench(args: argparse.Namespace) -> int:
    from infra.bench.experiments import BenchConfig, run_bench, summary
    from infra.model_pair import PairConfig

    weak = {"tenth": {"weak_share": 0.1}, "half": {"weak_share": 0.5},
            "close": {"weak_share": 1.0, "weak_epochs": 6}, "untrained": {"weak_epochs": 0}}[
                args.weak]
    pair = PairConfig(n_users=args.users, **weak)
    data_dir = args.data_dir or args.out / f"pair-{args.weak}-{args.users}"
    result = run_bench(data_dir, args.out, BenchConfig(seeds=args.seeds), pair)
    print(summary(result))
    print(f"wrote {args.out / 'bench_experiments.json'}")
    return 0


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
