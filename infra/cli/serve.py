"""Subcommands of the ``serve`` package: the ranking service and its benchmarks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.cli.args import command, out_path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to ``marquee``."""
    register_serve(sub)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``bench rerank``."""
    p = command(
        bench_sub, "rerank", _bench_rerank, "goal re-ranker solve time vs a plain sort",
        "Solve time of the goal re-ranker on three constraint families (policy counts and "
        "shares; diversity windows; user goal with pins and blocks), beside a plain sort in the "
        "same run, and the fast two-stage solve's gap to the joint optimum on a sample.")
    p.add_argument("--n", type=int, default=200, help="candidates per request")
    p.add_argument("--k", type=int, default=20, help="list length")
    p.add_argument("--requests", type=int, default=300, help="requests per family")
    p.add_argument("--exact-sample", type=int, default=20,
                   help="requests per family also solved jointly (slow reference)")
    out_path(p, Path("var/bench/rerank.json"), "JSON report")

    p = command(
        bench_sub, "serve", _bench_serve,
        "load on the running app (closed and open loop) vs a no-op deployment",
        "Builds a small sample world (synthetic events -> Feast SQLite, an untrained ONNX "
        "model unless --model), starts Ray Serve with the app and a no-op deployment, and "
        "measures both under the same load.")
    p.add_argument("--data-dir", type=Path, default=Path("var/bench/serve-world"),
                   help="where the sample world is written")
    p.add_argument("--model", type=Path, default=None, help="a trained ONNX model to serve")
    p.add_argument("--users", type=int, default=60, help="sample-world users")
    p.add_argument("--replicas", type=int, default=1, help="ranking replicas")
    p.add_argument("--seconds", type=float, default=8.0, help="per load level")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                   help="closed-loop client counts")
    p.add_argument("--rates", type=float, nargs="+", default=[100, 300, 500],
                   help="open-loop request rates (requests/s)")
    p.add_argument("--overload", type=float, default=3.0,
                   help="then offer this many times the measured capacity (0: skip)")
    p.add_argument("--fault", type=int, nargs="+", default=[], metavar="REPLICAS",
                   help="then, at each replica count given (e.g. 2 1), SIGKILL one ranking "
                   "replica under open-loop load at half the capacity measured with "
                   "--replicas: errors and p99 per second for 30 s after, and the time to "
                   "normal latency (about 1 min per count, plus a redeploy when the count "
                   "differs from the running one; no no-op floor: it has nothing to recover)")
    p.add_argument("--front", action=argparse.BooleanOptionalAction, default=True,
                   help="behind the admission front (HAProxy, as `marquee up` runs it); "
                   "--no-front: clients call Ray Serve's proxy directly")
    out_path(p, Path("var/bench/serve.json"), "JSON report")

    p = command(
        bench_sub, "cluster", _bench_cluster,
        "ranking on a 2-node Ray cluster (network namespaces) vs its no-op floor",
        "Makes hosts ray-head, ray-worker, redis and client as network namespaces on this "
        "machine (needs root and iproute2), starts Ray with `ray start` on the head, deploys "
        "the ranking app and a no-op app (2 replicas each) from the generated Serve config, "
        "loads them from the client, then joins the worker, spreads the replicas one per node "
        "and loads them again. The hosts share this machine's cores: the 2-node figures show "
        "what a replica behind the network costs, not more capacity. With --flow: the "
        "tokenizer flow instead, on one host and as a two-host Bytewax cluster (hosts broker, "
        "client, flow-a, flow-b), each beside the do-nothing KafkaSource floor on the same "
        "hosts.",
        examples=["sudo marquee bench cluster --seconds 5 --clients 1 16",
                  "sudo marquee bench cluster --flow --events 200000 --flow-users 20000"])
    p.add_argument("--users", type=int, default=30, help="sample-world users")
    p.add_argument("--seconds", type=float, default=5.0, help="per load level")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16],
                   help="closed-loop client counts")
    p.add_argument("--flow", action="store_true",
                   help="the flow on 1 and 2 hosts instead of the ranking service")
    p.add_argument("--events", type=int, default=200_000, help="--flow: synthetic events")
    p.add_argument("--flow-users", type=int, default=20_000, help="--flow: synthetic users")
    out_path(p, Path("var/bench/cluster.json"), "JSON report")


def _bench_cluster(args: argparse.Namespace) -> int:
    from infra import netns
    from infra.bench.cluster import print_report, run_bench

    reason = netns.unavailable()
    if reason:
        print(f"marquee bench cluster: skipped: {reason}", file=sys.stderr)
        return 0  # as the cluster tests skip: `bench all` runs on machines without root
    if args.flow:
        import json

        from infra.bench.flow_hosts import print_flow_report, run_flow_hosts

        flow = run_flow_hosts(n_events=args.events, users=args.flow_users)
        print_flow_report(flow)
        out = args.out.with_name(args.out.stem + "-flow.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(flow, indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    report = run_bench(seconds=args.seconds, clients=tuple(args.clients), users=args.users,
                       out=args.out)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


def _bench_rerank(args: argparse.Namespace) -> int:
    from infra.bench.rerank import print_report, run_bench

    report = run_bench(n=args.n, k=args.k, requests=args.requests,
                       exact_sample=args.exact_sample, out=args.out)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


def register_serve(sub: argparse._SubParsersAction) -> None:
    """``marquee serve``: run the ranking service until Ctrl-C."""
    p = command(
        sub, "serve", _serve, "run the ranking service (Ray Serve + FastAPI) until Ctrl-C",
        "Serve POST /v1/rank, GET /v1/similar/{item}, /healthz, /readyz and /metrics. Settings "
        "come from MARQUEE_* variables and marquee.env (marquee settings lists them); the flags "
        "override them.")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX model (MARQUEE_MODEL_PATH); unset: the model registry's serving "
                        "version, followed as `marquee models promote|rollback` change it")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="vocab, catalogue, feast/ (MARQUEE_DATA_DIR)")
    p.add_argument("--host", default=None, help="listen address (MARQUEE_BIND_HOST)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (MARQUEE_PORT)")
    p.add_argument("--replicas", type=int, default=None, help="replicas (MARQUEE_REPLICAS)")
    p.add_argument("--experiments", default=None,
                   help="experiment config, YAML or JSON (MARQUEE_EXPERIMENTS); the file is "
                        "watched: a change is validated and applied without dropping requests")


def _settings(args: argparse.Namespace):  # noqa: ANN202 - lazy import of the settings type
    from serve.config import ServeSettings

    over = {"model_path": args.model, "data_dir": args.data_dir, "host": args.host,
            "port": args.port, "replicas": args.replicas, "experiments": args.experiments}
    return ServeSettings(**{k: v for k, v in over.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from infra import front
    from serve import app

    settings = _settings(args)
    follow = None
    if settings.model_path is None:  # no model named: serve the registry's, and follow it
        follow = _from_registry(settings)
        settings = follow.settings if follow else settings
    url, gate = front.serve(settings, settings.data_dir / "front")
    print(f"serving on {url} (docs {url}/docs, metrics {url}/metrics); Ctrl-C stops",
          flush=True)
    watched = _experiment_file(settings.experiments)
    seen = _mtime(watched)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # ray.init installed handlers that abort
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(2 if watched or follow or gate else 3600):
            if gate is not None and not gate.alive():
                print(f"admission front exited ({gate.exit_code()}); starting it again",
                      flush=True)
                gate.start()
            if watched and _mtime(watched) != seen:
                seen = _mtime(watched)
                _apply_experiment(app, follow.settings if follow else settings, watched)
            if follow is not None:
                follow()
    finally:
        if gate is not None:
            gate.stop()
        app.stop()
    print("stopped", flush=True)
    return 0


def _from_registry(settings):  # noqa: ANN001, ANN202 - lazy imports
    """A follower serving the registry's serving version (None when it has none)."""
    from infra.continuous import RegistryFollower, open_registry

    registry = open_registry(settings.data_dir)
    follow = RegistryFollower.serving(registry, settings)
    if follow is not None:
        print(f"model: {follow.watch.current} from the registry {registry.root} (followed: "
              "`marquee models promote|rollback` switch it)", flush=True)
    return follow


def _experiment_file(spec: str | None) -> Path | None:
    """The experiment config file to watch (None: none, or inline JSON)."""
    return Path(spec) if spec and not spec.lstrip().startswith("{") else None


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path else None
    except OSError:
        return None


def _apply_experiment(app, settings, path: Path) -> None:  # noqa: ANN001 - lazy imports
    """Validate the changed config and roll it out; a bad one is reported, the running kept."""
    from serve.experiment_config import ExperimentConfigError

    try:
        app.set_experiment(settings, path if path.exists() else None)
    except ExperimentConfigError as exc:
        print(f"{exc}\nthe running experiment is kept", flush=True)
        return
    print(f"experiment config {path} applied", flush=True)


def _bench_serve(args: argparse.Namespace) -> int:
    from infra import front
    from infra.bench.sample_world import SampleWorld
    from infra.bench.serve import print_report, run_bench
    from serve import app
    from streams.launch import free_port

    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    world = SampleWorld(data_dir, n_users=args.users, days=4)
    settings = world.settings(port=free_port(), replicas=args.replicas,
                              **({"model_path": args.model} if args.model else {}))
    gate_settings = front.FrontSettings(enabled=args.front)
    url, gate = front.serve(settings, data_dir / "front", noop=True, front=gate_settings)
    try:
        report = run_bench(url, world.users, seconds=args.seconds, out=args.out,
                           concurrency=tuple(args.clients), rates=tuple(args.rates),
                           overload_factor=args.overload,
                           setup={"front": gate_settings.enabled,
                                  "direct": gate_settings.enabled and gate_settings.direct,
                                  "replicas": settings.replicas,
                                  "max_ongoing_requests": settings.max_ongoing_requests,
                                  "max_queued_requests": settings.max_queued_requests})
        if args.fault:
            _bench_faults(report, settings, url, world.users, tuple(args.fault), args.out)
    finally:
        if gate is not None:
            gate.stop()
        app.stop()
    print_report(report)
    print(f"wrote {args.out}")
    return 0


def _bench_faults(report: dict, settings: object, url: str, users: list[str],
                  counts: tuple[int, ...], out: Path) -> None:
    """The fault levels, added to ``report`` and to its JSON file."""
    import json

    from infra.bench.serve_fault import half_capacity, run_faults

    report["rank"]["fault"] = run_faults(settings, url, users, half_capacity(report), counts)
    out.write_text(json.dumps(report, indent=2) + "\n")
