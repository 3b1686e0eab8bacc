"""``marquee deploy ...``: deployment files a team starts a cluster from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.cli.args import command


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and its targets to ``marquee``."""
    deploy = sub.add_parser("deploy", help="write deployment files for a cluster",
                            description="Deployment files generated from the MARQUEE_* settings, "
                                        "so they match what `marquee up` runs.")
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
    p.add_argument("--autoscale", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="autoscale between MIN and MAX replicas instead of MARQUEE_REPLICAS")
    p.add_argument("--target-ongoing", type=float, default=8.0,
                   help="requests in flight per replica that autoscaling aims at")
    p.add_argument("--num-cpus", type=float, default=1.0,
                   help="CPUs Ray reserves per replica (the embedded stack uses 0)")
    p.add_argument("--max-replicas-per-node", type=int, default=None,
                   help="spread replicas: at most this many on one node")


def _serve_config(args: argparse.Namespace) -> int:
    from infra.deploy.serve_config import ClusterShape, render, validate
    from serve.config import ServeSettings

    settings = ServeSettings()
    if args.host is not None:
        settings = ServeSettings(**{**settings.model_dump(), "host": args.host})
    shape = ClusterShape(autoscale=tuple(args.autoscale) if args.autoscale else None,
                         target_ongoing=args.target_ongoing, num_cpus=args.num_cpus,
                         max_replicas_per_node=args.max_replicas_per_node)
    text = render(settings, shape)
    validate(text)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
