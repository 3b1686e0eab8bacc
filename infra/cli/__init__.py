"""``marquee``: one command, with a subcommand per job. Each is a thin shell over a library call.

One parser module per command group (``infra.cli.streams``, ``.models``, ``.registry``,
``.serve``, ``.experiments``, ``.ops``, ``.deploy``) adds its subcommands through
``register(subparsers)`` and its benchmarks through ``register_bench(subparsers)``; heavy
imports (torch, ray, feast) happen inside the handlers so ``marquee --help`` stays fast.
Nothing imports this package but the console script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.cli import deploy, experiments, models, ops, registry, serve, streams

GROUPS = (streams, models, registry, serve, experiments, ops, deploy)

DESCRIPTION = """\
Marquee: streaming personalization.
Kafka interaction events -> event tokens (Bytewax) -> Feast online store ->
ONNX foundation model on Ray Serve -> goal-aware re-ranking.

The broker address comes from KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092);
set it to use your own Kafka cluster instead of the embedded one.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="marquee", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench = sub.add_parser("bench", help="run a benchmark and print figures against a baseline",
                           description="Benchmarks print figures and ratios against a baseline "
                                       "measured in the same run, and write JSON beside them.")
    bench_sub = bench.add_subparsers(dest="bench", metavar="TARGET", required=True)
    for group in GROUPS:
        group.register(sub)
        if hasattr(group, "register_bench"):
            group.register_bench(bench_sub)
    ops.register_bench_all(bench_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marquee`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"marquee {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
