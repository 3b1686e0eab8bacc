"""Subcommands of the ``serve`` package: the ranking service and its benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to ``marquee``."""


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``bench rerank``."""
    p = bench_sub.add_parser(
        "rerank", help="goal re-ranker solve time vs a plain sort (N=200, k=20)",
        description="Solve time of the goal re-ranker on three constraint families (policy "
                    "counts and shares; diversity windows; user goal with pins and blocks), "
                    "beside a plain sort in the same run, and the fast two-stage solve's gap "
                    "to the joint optimum on a sample.")
    p.add_argument("--n", type=int, default=200, help="candidates per request")
    p.add_argument("--k", type=int, default=20, help="list length")
    p.add_argument("--requests", type=int, default=300, help="requests per family")
    p.add_argument("--exact-sample", type=int, default=20,
                   help="requests per family also solved jointly (slow reference)")
    p.add_argument("--out", type=Path, default=Path("var/bench/rerank.json"))
    p.set_defaults(func=_bench_rerank)


def _bench_rerank(args: argparse.Namespace) -> int:
    from serve.bench_rerank import print_report, run_bench

    report = run_bench(n=args.n, k=args.k, requests=args.requests,
                       exact_sample=args.exact_sample, out=args.out)
    print_report(report)
    print(f"wrote {args.out}")
    return 0
