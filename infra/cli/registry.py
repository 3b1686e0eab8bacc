"""Subcommands of continuous training: ``retrain`` and ``models list|add|promote|rollback``.

Handlers parse and print; the work is in ``infra.continuous`` and ``models.registry``.
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

from infra.cli.args import command, log_progress, print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``retrain`` and ``models`` to ``marquee``."""
    _retrain_command(sub)
    _models_command(sub)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data folder with tokens/, vocab.json, catalogue.jsonl "
                        "(MARQUEE_DATA_DIR, default var)")
    p.add_argument("--registry", type=Path, default=None,
                   help="registry folder (MARQUEE_MODEL_REGISTRY, default DATA_DIR/models)")


def _retrain_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "retrain", _retrain,
        "warm-start the serving model on the grown token log, gate it, promote or reject",
        "Loads the registry's serving version, grows it to the current vocabulary (new titles "
        "join, placed by their metadata tower), trains it a short budget on the token log up "
        "to the recent slice (the newest --holdout-hours), then evaluates candidate and current "
        "model on that slice and on the standard leave-one-out split. The candidate is always "
        "registered; the gate promotes it only if its NDCG@10 is at least (1 - margin) x the "
        "current model's on both, else it is rejected with the reason. A running `marquee "
        "serve` or `marquee up` switches to a promoted version without dropping a request. "
        "Prints the report as JSON; exit status 0 when promoted (or entered into an "
        "experiment), 3 when rejected.",
        examples=("marquee retrain --data-dir var/demo",
                  "marquee retrain --data-dir var/demo --experiment var/demo/experiment.json",
                  "MARQUEE_GATE_MARGIN=0.05 marquee retrain --every 1h"))
    _data_dir(p)
    p.add_argument("--epochs", type=int, default=None, help="most epochs "
                   "(MARQUEE_RETRAIN_EPOCHS, default 4)")
    p.add_argument("--lr", type=float, default=None, help="learning rate "
                   "(MARQUEE_RETRAIN_LR, default 1e-3)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training budget (MARQUEE_RETRAIN_MINUTES, default 3)")
    p.add_argument("--holdout-hours", type=float, default=None,
                   help="the recent slice (MARQUEE_HOLDOUT_HOURS, default 12)")
    p.add_argument("--margin", type=float, default=None,
                   help="gate margin, a share (MARQUEE_GATE_MARGIN, default 0.02)")
    p.add_argument("--experiment", type=Path, nargs="?", const=Path(""), default=None,
                   metavar="FILE", help="a candidate that passes the gate is not promoted: "
                   "write an interleaving experiment config (candidate vs current) to FILE "
                   "(default DATA_DIR/experiment.json) for the service's MARQUEE_EXPERIMENTS")
    p.add_argument("--no-promote", action="store_true",
                   help="register and gate only; promote later with `marquee models promote`")
    p.add_argument("--every", default=None, metavar="PERIOD",
                   help="run on a schedule until stopped: each time PERIOD (e.g. 30m, 1h, 1d) "
                   "has passed since the registry's newest version was registered (so a "
                   "restart neither retrains early nor waits a full period again)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--progress", action="store_true", help="show training progress bars")


def _models_command(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "models", lambda a: a.models_func(a),
                "the model registry: list, add, promote, rollback",
                "Every version of the model is kept in the registry folder with its "
                "checkpoint, ONNX export, metrics and lineage; index.json names the serving one. "
                "A running `marquee serve` or `marquee up` follows the index: promote and "
                "rollback switch it without dropping a request.",
                examples=("marquee models list --data-dir var/demo",
                          "marquee models promote fm-20260101T030000Z",
                          "marquee models rollback"))
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("list", help="versions with status, metrics and lineage")
    _data_dir(q)
    q.set_defaults(models_func=_list)
    q = msub.add_parser("add", help="register a checkpoint from `marquee train`")
    _data_dir(q)
    q.add_argument("model", type=Path, help="model directory (model.pt)")
    q.add_argument("--promote", action="store_true", help="and serve it")
    q.set_defaults(models_func=_add)
    q = msub.add_parser("promote", help="serve a registered version")
    _data_dir(q)
    q.add_argument("version", help="a version name from `marquee models list`")
    q.set_defaults(models_func=_promote)
    q = msub.add_parser("rollback", help="serve the version that served before the current one")
    _data_dir(q)
    q.set_defaults(models_func=_rollback)


def _open(args: argparse.Namespace):  # noqa: ANN202 - lazy imports
    from infra.continuous import open_registry
    from models.registry import Registry
    from models.retrain_settings import RetrainSettings

    if args.registry is not None:
        return Registry(args.registry)
    return open_registry(_dir(args), RetrainSettings())


def _dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return args.data_dir
    from serve.config import ServeSettings

    return ServeSettings().data_dir


def _retrain(args: argparse.Namespace) -> int:
    from infra.continuous import retrain_and_gate
    from models.retrain_settings import RetrainSettings, period_s

    over = {"retrain_epochs": args.epochs, "retrain_lr": args.lr,
            "retrain_minutes": args.max_minutes, "holdout_hours": args.holdout_hours,
            "gate_margin": args.margin, "model_registry": args.registry}
    settings = RetrainSettings(**{k: v for k, v in over.items() if v is not None})
    data_dir = _dir(args)
    experiment = args.experiment
    if experiment is not None and str(experiment) in ("", "."):
        experiment = data_dir / "experiment.json"
    every = period_s(args.every) if args.every else None
    if args.progress:
        log_progress()
    while True:
        if every is not None:
            _wait_until_due(args, every)
        registry = _open(args)
        try:
            report = retrain_and_gate(data_dir, registry, settings, experiment=experiment,
                                      promote=not args.no_promote, device=args.device,
                                      progress=args.progress)
            print_json(report)
            status = 3 if report["action"] == "rejected" else 0
        except Exception as exc:
            if every is None:
                raise
            if not isinstance(exc, ValueError | FileNotFoundError):  # a bug: say where
                traceback.print_exc()
            # A scheduled run that fails waits for the next one: under `marquee up` a crash
            # loop of this child would stop the whole stack, the service included.
            print(f"marquee retrain: {exc}; next try in {args.every}", flush=True)
            status = 2
        if every is None:
            return status
        if status == 2:
            time.sleep(every)  # nothing was registered: the schedule's anchor did not move


def _wait_until_due(args: argparse.Namespace, every: float) -> None:
    """Sleep until ``every`` after the registry's newest version (re-read each minute: a
    version registered meanwhile, by hand or by another retrain, moves the next run).
    """
    from infra.continuous import next_retrain_s

    wait = next_retrain_s(_open(args), every)
    if wait > 0:
        print(f"marquee retrain: next run in {_duration(wait)} ({args.every} after the "
              "registry's newest version)", flush=True)
    while wait > 0:
        time.sleep(min(wait, 60.0))
        wait = next_retrain_s(_open(args), every)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _list(args: argparse.Namespace) -> int:
    registry = _open(args)
    idx = registry.index()
    rows = []
    for v in registry.versions():
        metrics, lineage = v.metrics(), v.lineage()
        exams = metrics.get("exams", {})
        rows.append({
            "version": v.name, "status": v.status, "serving": v.name == idx["serving"],
            "parent": lineage.get("parent"),
            "recent_ndcg@10": exams.get("recent", {}).get("candidate", {}).get("ndcg@10"),
            "standard_ndcg@10": exams.get("standard", {}).get("candidate", {}).get("ndcg@10"),
            "valid_ndcg@10": (metrics.get("valid") or {}).get("ndcg@10"),
            "gate": metrics.get("gate", {}).get("reasons"),
            "token_span": lineage.get("token_span"), "created_at": lineage.get("created_at"),
            "command": lineage.get("command"), "code_version": lineage.get("code_version")})
    return print_json({"registry": str(registry.root), "serving": idx["serving"],
                       "stack": idx["stack"], "versions": rows})


def _add(args: argparse.Namespace) -> int:
    from infra.continuous import add_model

    version = add_model(_open(args), args.model, promote=args.promote)
    return print_json({"added": version.name, "promoted": args.promote})


def _promote(args: argparse.Namespace) -> int:
    version = _open(args).promote(args.version)
    return print_json({"serving": version.name, "onnx": str(version.onnx)})


def _rollback(args: argparse.Namespace) -> int:
    version = _open(args).rollback()
    return print_json({"serving": version.name, "onnx": str(version.onnx)})
