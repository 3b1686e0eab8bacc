"""Subcommands of the ``streams`` package: producing, checking and describing events."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``produce``, ``validate`` and ``schema`` to ``marquee``."""
    p = sub.add_parser(
        "produce", help="send events to the events topic (file or synthetic)",
        description="Send interaction events with an idempotent producer (acks=all, keyed by "
                    "user_id). Exits 1 if any event was not acknowledged by the broker.",
        epilog="examples:\n  marquee produce --synthetic --limit 100000\n"
               "  marquee produce --file events.jsonl --format jsonl\n"
               "  marquee produce --file data.txt --format sasrec --rate 5000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="events file to send")
    src.add_argument("--synthetic", action="store_true",
                     help="generate events from the synthetic world (deterministic by --seed)")
    p.add_argument("--format", choices=("jsonl", "sasrec"), default="jsonl",
                   help="file format: one JSON event a line, or 'user item' lines (default jsonl)")
    p.add_argument("--limit", type=int, default=None, help="stop after N events")
    p.add_argument("--rate", type=float, default=None, help="at most R events/s")
    p.add_argument("--topic", default=None, help="topic (default: MARQUEE_EVENTS_TOPIC or "
                                                 "marquee.events)")
    p.add_argument("--seed", type=int, default=7, help="synthetic world seed (default 7)")
    p.add_argument("--users", type=int, default=2000, help="synthetic users (default 2000)")
    p.add_argument("--catalogue-out", type=Path, default=None,
                   help="also write the synthetic catalogue (JSON lines) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_produce)

    p = sub.add_parser("validate", help="check a JSON-lines events file against the contract",
                       description="Print every problem of every bad line (field, what is wrong, "
                                   "the fix). Exits 1 if any line is invalid.")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_validate)

    p = sub.add_parser("schema", help="print the event contract as JSON Schema",
                       description="Print the contract, or with --write regenerate the files in "
                                   "infra/schemas/ (the contract and Tansu's per-topic schema).")
    p.add_argument("--write", type=Path, default=None, metavar="DIR",
                   help="write the schema files into DIR instead of printing")
    p.set_defaults(func=_schema)


def register_bench(bench: argparse._SubParsersAction) -> None:
    """Add ``marquee bench produce``."""
    p = bench.add_parser("produce", help="producer events/s vs the raw librdkafka floor",
                         description="Produce N synthetic events three ways (raw librdkafka "
                                     "loop, produce_events on pre-serialized events, the "
                                     "end-to-end synthetic producer) to the embedded broker "
                                     "(or KAFKA_BOOTSTRAP_SERVERS) and print events/s and ratios.")
    p.add_argument("--events", type=int, default=200_000)
    p.set_defaults(func=_bench_produce)


def _bench_produce(args: argparse.Namespace) -> int:
    from streams.bench_produce import run_bench

    figures = run_bench(getattr(args, "events", 200_000))
    return 0 if figures["read_back"] == figures["events"] else 1


def _produce(args: argparse.Namespace) -> int:
    from streams.config import KafkaSettings
    from streams.produce import produce_events
    from streams.sources import read_jsonl, read_sasrec

    settings = KafkaSettings()
    if args.synthetic:
        from streams.synthetic import SyntheticWorld, WorldConfig

        world = SyntheticWorld(WorldConfig(seed=args.seed, n_users=args.users))
        if args.catalogue_out:
            world.write_catalogue(args.catalogue_out)
        events = world.events(args.limit)
    else:
        if not args.file.exists():
            raise FileNotFoundError(f"{args.file} does not exist")
        events = read_jsonl(args.file) if args.format == "jsonl" else read_sasrec(args.file)
        if args.limit is not None:
            events = itertools.islice(events, args.limit)
    topic = args.topic or settings.events_topic
    print(f"producing to {topic} on {settings.bootstrap_servers}", file=sys.stderr)
    report = produce_events(events, settings, topic=topic, rate=args.rate, total=args.limit,
                            progress=not args.no_progress)
    print(report.summary())
    return 0 if report.attempted and not report.undelivered else 1


def _validate(args: argparse.Namespace) -> int:
    from streams.events import validate_event
    from streams.sources import read_jsonl

    bad = total = 0
    for lineno, line in enumerate(read_jsonl(args.file), start=1):
        total += 1
        _, problems = validate_event(line)
        if problems:
            bad += 1
            for problem in problems:
                print(f"{args.file}:{lineno}: {problem}")
    print(f"{total - bad:,} valid, {bad:,} invalid of {total:,} events")
    return 1 if bad else 0


def _schema(args: argparse.Namespace) -> int:
    from streams.events import json_schema, write_schema_files

    if args.write:
        for path in write_schema_files(args.write):
            print(f"wrote {path}")
    else:
        print(json.dumps(json_schema(), indent=2))
    return 0
