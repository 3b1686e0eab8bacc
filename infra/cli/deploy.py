"""``marquee deploy ...``: deployment files a team starts a cluster from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from infra.cli.args import command

if TYPE_CHECKING:
    from infra.deploy.serve_config import ClusterShape


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and its targets to ``marquee``."""
    deploy = sub.add_parser("deploy", help="write deployment files for a cluster",
                            description="Deployment files generated from the MARQUEE_* settings, "
                                        "so they match what `marquee up` runs.")
    register_capacity(sub)
    targets = deploy.add_subparsers(dest="target", metavar="TARGET", required=True)
    p = command(
        targets, "serve-config", _serve_config,
        "a Ray Serve config file for `serve deploy` / `serve run` / KubeRay serveConfigV2",
        "The ranking service as a Ray Serve config (the file `serve build` writes): proxies on "
        "every node, the app at / with import_path serve.app:app_builder, the deployment's "
        "options from the MARQUEE_* settings (replicas, queue bounds, backpressure, health "
        "checks), optionally autoscaling. Validated by Ray Serve's own schema before it is "
        "written.",
        examples=["marquee deploy serve-config --host 0.0.0.0 --out serve.yaml",
                  "marquee deploy serve-config --autoscale 2 8 --max-replicas-per-node 1",
                  "MARQUEE_REPLICAS=4 marquee deploy serve-config --out s.yaml && "
                  "serve deploy s.yaml"])
    p.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    p.add_argument("--host", default=None,
                   help="HTTP host of the proxies (default: MARQUEE_BIND_HOST, loopback; a "
                        "cluster behind a load balancer wants 0.0.0.0)")
    add_shape(p)


    p = command(
        targets, "kubernetes", _kubernetes,
        "Kubernetes manifests: KubeRay RayService, flow StatefulSet, Redis, Prometheus scraping",
        "Manifests for Marquee on Kubernetes, from the MARQUEE_* settings: the ranking service "
        "as a KubeRay RayService (serveConfigV2 = `marquee deploy serve-config`), the flow as a "
        "StatefulSet of Bytewax processes (process id = pod ordinal, addresses from a headless "
        "Service, recovery on the shared data volume), Redis with an append-only file on a "
        "volume, a ReadWriteMany data volume, ServiceMonitors, and a plain Prometheus scrape "
        "config in prometheus/. Every document is checked against the Kubernetes schemas and "
        "the CRD schemas in infra/schemas/crds/ before it is written.",
        examples=["marquee deploy kubernetes --out k8s --image registry.example/marquee:1.0",
                  "marquee deploy kubernetes --out k8s --flow-processes 4 --ray-workers 3 "
                  "--kafka my-kafka-bootstrap:9092 && kubectl apply -f k8s"])
    p.add_argument("--out", type=Path, required=True, help="folder to write the files to")
    p.add_argument("--image", default="marquee:latest",
                   help="container image with Marquee installed (flow and Ray pods)")
    p.add_argument("--kafka", default="kafka-bootstrap:9092",
                   help="KAFKA_BOOTSTRAP_SERVERS of the pods")
    p.add_argument("--flow-processes", type=int, default=2,
                   help="flow pods (Bytewax processes); a new count needs a new recovery dir")
    p.add_argument("--flow-workers", type=int, default=1, help="worker threads per flow pod")
    p.add_argument("--ray-workers", type=int, default=2, help="Ray worker pods")
    p.add_argument("--ray-workers-max", type=int, default=4,
                   help="most Ray worker pods the autoscaler may add")
    p.add_argument("--storage-class", default=None,
                   help="storage class of the volumes (the data volume needs ReadWriteMany)")
    add_shape(p)


def register_capacity(sub: argparse._SubParsersAction) -> None:
    """Add ``capacity``."""
    p = command(
        sub, "capacity", _capacity,
        "how many hosts of each kind a load needs, from the measured per-unit figures",
        "Flow workers and partitions, brokers, Redis shards (CPU or memory, whichever binds) "
        "and Ray nodes (proxy or replica CPU) for --events-per-s, --rankings-per-s and --users, "
        "each unit at --utilization of its measured capacity, then the same ratios at 1k to "
        "1M events/s. The figures are those of docs/results.md, replaced by the benchmarks' "
        "reports in --bench-dir (marquee bench stream|broker|redis|serve write them there) and "
        "by --figures FILE (JSON: name -> value). Prints markdown (docs/capacity.md is its "
        "output with the default figures).",
        examples=("marquee capacity",
                  "marquee capacity --events-per-s 200000 --rankings-per-s 5000 --users 2e7",
                  "marquee capacity --figures my-hosts.json --cores-per-host 32"))
    p.add_argument("--events-per-s", type=float, default=1_000_000, help="events produced")
    p.add_argument("--rankings-per-s", type=float, default=50_000, help="/v1/rank requests")
    p.add_argument("--users", type=float, default=1e8, help="users with a row online")
    p.add_argument("--cores-per-host", type=int, default=16, help="cores of every host")
    p.add_argument("--redis-memory-gb", type=float, default=64.0,
                   help="memory of a Redis host (75%% of it for rows)")
    p.add_argument("--utilization", type=float, default=0.7,
                   help="share of a unit's measured capacity to plan for (headroom for faults)")
    p.add_argument("--bench-dir", type=Path, default=Path("var/bench"),
                   help="benchmark reports to take figures from (missing: the defaults)")
    p.add_argument("--figures", type=Path, default=None, help="JSON of figures to override")


def _capacity(args: argparse.Namespace) -> int:
    from infra.capacity import Load, load_figures, plan, render, scales

    figures = load_figures(args.bench_dir, args.figures)
    load = Load(events_per_s=args.events_per_s, rankings_per_s=args.rankings_per_s,
                users=int(args.users), cores_per_host=args.cores_per_host,
                redis_memory_gb=args.redis_memory_gb, utilization=args.utilization)
    sys.stdout.write(render(plan(load, figures), scales(figures, load), figures))
    return 0


def _kubernetes(args: argparse.Namespace) -> int:
    from infra.deploy.kubernetes import KubeShape, write
    from infra.deploy.schemas import validate_file
    from serve.config import ServeSettings

    shape = KubeShape(image=args.image, kafka=args.kafka, flow_processes=args.flow_processes,
                      flow_workers=args.flow_workers, ray_workers=args.ray_workers,
                      ray_workers_max=args.ray_workers_max, storage_class=args.storage_class)
    for path in write(args.out, ServeSettings(), shape, cluster_shape(args)):
        if path.suffix == ".yaml":
            validate_file(path)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _serve_config(args: argparse.Namespace) -> int:
    from infra.deploy.serve_config import render, validate
    from serve.config import ServeSettings

    settings = ServeSettings()
    if args.host is not None:
        settings = ServeSettings(**{**settings.model_dump(), "host": args.host})
    text = render(settings, cluster_shape(args))
    validate(text)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_shape(p: argparse.ArgumentParser) -> None:
    """The options of ``ClusterShape``: how the ranking replicas spread over Ray nodes."""
    p.add_argument("--autoscale", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="autoscale between MIN and MAX replicas instead of MARQUEE_REPLICAS")
    p.add_argument("--target-ongoing", type=float, default=8.0,
                   help="requests in flight per replica that autoscaling aims at")
    p.add_argument("--num-cpus", type=float, default=1.0,
                   help="CPUs Ray reserves per replica (the embedded stack uses 0)")
    p.add_argument("--max-replicas-per-node", type=int, default=None,
                   help="spread replicas: at most this many on one node")


def cluster_shape(args: argparse.Namespace) -> ClusterShape:
    """The ``ClusterShape`` the options say."""
    from infra.deploy.serve_config import ClusterShape

    return ClusterShape(autoscale=tuple(args.autoscale) if args.autoscale else None,
                        target_ongoing=args.target_ongoing, num_cpus=args.num_cpus,
                        max_replicas_per_node=args.max_replicas_per_node)
