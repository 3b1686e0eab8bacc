"""Subcommands of the ``models`` package: train, evaluate, compare, tune-blend, export, and
the model benchmark.

Handlers only parse and print; the work is in ``models.train``, ``models.evaluate``,
``models.blend``, ``models.export`` and ``infra.bench.model`` (imported inside the handlers: torch
is slow to load).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infra.cli.args import command, log_progress, model_dirs, out_path, print_json

FORMATS = ("tokens", "sasrec", "synthetic")


def _data_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="token log dir (tokens) or 'user item' file (sasrec); not for synthetic")
    p.add_argument("--format", choices=FORMATS, default=None if not required else "tokens",
                   help="data format (train default: tokens; evaluate default: as trained)")
    p.add_argument("--vocab", type=Path, default=None, help="tokens: vocab.json (default: "
                                                            "beside the token log)")
    p.add_argument("--catalogue", type=Path, default=None,
                   help="tokens: catalogue.jsonl (default: beside the token log)")
    p.add_argument("--users", type=int, default=None, help="synthetic: users (default 2000)")
    p.add_argument("--days", type=int, default=None, help="synthetic: days (default 30)")
    p.add_argument("--world-seed", type=int, default=None, help="synthetic: seed (default 7)")


# Training arguments whose defaults are the recipe held by TrainConfig / ModelConfig: the CLI
# passes only what was given, and `train --help` reads the values from the dataclasses (torch is
# imported only then).
RECIPE_ARGS: dict[str, tuple[str, str]] = {
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "patience": ("train", "patience"),
    "lr_decays": ("train", "lr_decays"),
    "lr_decay": ("train", "lr_decay"),
    "max_minutes": ("train", "max_minutes"),
    "valid_users": ("train", "valid_users"),
    "seed": ("train", "seed"),
    "batching": ("train", "batching"),
    "max_len": ("model", "max_len"),
    "d_model": ("model", "d_model"),
    "layers": ("model", "n_layers"),
    "heads": ("model", "n_heads"),
    "dropout": ("model", "dropout"),
    "mtp_k": ("model", "mtp_k"),
    "negatives": ("model", "n_negatives"),
    "mtp_negatives": ("model", "mtp_negatives"),
    "w_mtp": ("model", "w_mtp"),
    "mtp_detach": ("model", "mtp_detach"),
    "id_dropout": ("model", "id_dropout"),
}


def _recipe_defaults() -> dict[str, object]:
    """The dataclass defaults behind ``RECIPE_ARGS``, by argument name."""
    from dataclasses import MISSING, fields

    from models.model import ModelConfig
    from models.train import TrainConfig

    found: dict[str, dict[str, object]] = {}
    for name, cls in (("train", TrainConfig), ("model", ModelConfig)):
        found[name] = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    return {arg: found[kind][field] for arg, (kind, field) in RECIPE_ARGS.items()}


def _recipe_help(p: argparse.ArgumentParser) -> None:
    """Show the recipe's values as defaults in ``p``'s help without importing torch before."""
    plain = p.format_help

    def format_help() -> str:
        p.set_defaults(**_recipe_defaults())
        return plain()

    p.format_help = format_help  # type: ignore[method-assign]


def _given(args: argparse.Namespace, kind: str) -> dict[str, object]:
    """The recipe arguments of ``kind`` ("train" or "model") given on the command line, by
    dataclass field.
    """
    return {field: getattr(args, arg) for arg, (k, field) in RECIPE_ARGS.items()
            if k == kind and getattr(args, arg) is not None}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``compare``, ``tune-blend`` and ``export`` to ``marquee``."""
    for add in (_train_command, _evaluate_command, _compare_command, _tune_blend_command,
                _export_command):
        add(sub)


def _train_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "train", _train, "train the foundation model (checkpoint, metrics.json, curves.png)",
        "Train on a leave-one-out split with early stopping on validation NDCG@10 (each "
        "plateau first returns to the best weights at a 10x lower learning rate, --lr-decays "
        "times). Writes DIR/model.pt (config, weights, vocabulary, catalogue tables), "
        "DIR/metrics.json and DIR/curves.png. The defaults are the best measured recipe "
        "(docs/results.md).",
        examples=("marquee train --data FILE --format sasrec --out var/amazon --with-ablation",
                  "marquee train --data var/tokens --format tokens --out var/model",
                  "marquee train --format synthetic --users 500 --out var/model"))
    _data_args(p, required=True)
    out_path(p, None, "model directory to write")
    p.add_argument("--epochs", type=int, default=None, help="most epochs")
    p.add_argument("--batch-size", type=int, default=None, help="windows per step")
    p.add_argument("--batching", choices=("length", "random"), default=None,
                   help="random: uniform batches, every position weighs the same (the default, "
                        "the better model on real data); length: users of similar history "
                        "length together (faster on short histories)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    p.add_argument("--patience", type=int, default=None,
                   help="evaluations without improvement")
    p.add_argument("--lr-decays", type=int, default=None, metavar="N",
                   help="on a plateau (--patience), return to the best weights and go on at "
                        "lr x --lr-decay, N times, before stopping (0: "
                        "stop at the first plateau)")
    p.add_argument("--lr-decay", type=float, default=None,
                   help="factor of each --lr-decays step")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget per model (default: none)")
    p.add_argument("--valid-users", type=int, default=None,
                   help="validation users sampled for the per-epoch evaluation (0: all; "
                        "the blend is always chosen on all of them)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of weights, batches and the validation sample")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--max-len", type=int, default=None,
                   help="newest tokens a window holds")
    p.add_argument("--d-model", type=int, default=None, help="width")
    p.add_argument("--layers", type=int, default=None, help="transformer layers")
    p.add_argument("--heads", type=int, default=None, help="attention heads")
    p.add_argument("--dropout", type=float, default=None, help="dropout")
    p.add_argument("--mtp-k", type=int, default=None,
                   help="items of the next k interactions")
    p.add_argument("--negatives", type=int, default=None,
                   help="sampled softmax with N uniform negatives (0: full softmax)")
    p.add_argument("--mtp-negatives", type=int, default=None,
                   help="multi-token heads: sampled softmax with N negatives (0 full softmax, "
                        "-1: as --negatives)")
    p.add_argument("--w-mtp", type=float, default=None,
                   help="loss weight per multi-token head")
    p.add_argument("--mtp-detach", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="multi-token heads learn from the state without steering it (the trunk "
                        "trains as for next-item only; the heads still join the ranking query)")
    p.add_argument("--mtp-shared", action="store_true",
                   help="multi-token targets on the next-item query itself, no projection: "
                        "the state learns to score each of the next k items (a set target; "
                        "needs --no-mtp-detach)")
    p.add_argument("--blend-grid", type=float, nargs="*", default=None, metavar="W",
                   help="weights of the multi-token heads in the ranking query tried on "
                        "all validation users after training; the best is kept (default 0 0.1 "
                        "0.25 0.5 1 2; "
                        "give none to keep next-item only)")
    p.add_argument("--id-dropout", type=float, default=None, metavar="P",
                   help="share of items seen through the metadata tower alone in each training "
                        "step, so titles never trained on still rank ("
                        "models with a tower only)")
    p.add_argument("--item-only", action="store_true", help="train the item-only ablation")
    p.add_argument("--with-ablation", action="store_true",
                   help="also train the item-only ablation with the same budget into DIR/ablation")
    p.add_argument("--no-progress", action="store_true")
    _recipe_help(p)



def _evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "evaluate", _evaluate,
        "HR/NDCG@10/50 of a model vs most-popular and the item-only ablation",
        "Leave-one-out, full catalogue ranked, interacted items filtered. Prints JSON: the "
        "model, without_lookahead (the same model ranking by its next-item state alone, when it "
        "blends multi-token heads in), most_popular, item_only (DIR/ablation or --ablation), "
        "model_minus (the model's per-user lead over item_only and without_lookahead, with 95% "
        "bootstrap intervals over test users, not over training seeds), onnx (--onnx), "
        "onnx_fp32/onnx_int8 and int8_change (--int8).")
    model_dirs(p)
    _data_args(p, required=False)
    _split_arg(p)
    p.add_argument("--ablation", type=Path, default=None, help="item-only model directory")
    p.add_argument("--onnx", type=Path, default=None, help="also evaluate this ONNX file")
    p.add_argument("--int8", action="store_true",
                   help="export fp32 and int8 ONNX and report the accuracy change")


def _compare_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "compare", _compare,
        "several trainings (seeds) of a model vs their item-only ablations",
        "Evaluates each MODEL against the ABLATION in the same place of the list (one pair per "
        "training seed) on the same split, then prints JSON: each pair's metrics and paired "
        "lead over test users, and the mean lead with a 95% t-interval across the pairs "
        "(training noise included).",
        examples=("marquee compare --model var/fm42 var/fm43 --ablation var/io42 var/io43 "
                  "--data FILE --format sasrec",))
    model_dirs(p, many=True, help="model directories")
    p.add_argument("--ablation", type=Path, nargs="+", required=True,
                   help="item-only model directories, as many as --model, in the same order")
    _data_args(p, required=False)
    _split_arg(p)


def _tune_blend_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "tune-blend", _tune_blend,
        "choose a trained model's look-ahead blend again on validation",
        "Tries each weight of the multi-token heads in the ranking query on all validation "
        "users (never test) and keeps the best NDCG@10: rewrites DIR/model.pt under a new "
        "version and updates DIR/metrics.json. The weights of the network are untouched. "
        "Training already does this; use it to try another grid.")
    model_dirs(p)
    _data_args(p, required=False)
    p.add_argument("--grid", type=float, nargs="+", default=None, metavar="W",
                   help="weights to try (default 0 0.1 0.25 0.5 1 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _export_command(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "export", _export, "export a trained model to ONNX (ranking graph)",
        "Write FILE.onnx (dynamic batch and length; outputs user embedding, top-k ids and "
        "scores) with FILE.vocab.json and FILE.items.npy beside it (docs/contracts.md).")
    model_dirs(p)
    out_path(p, None, "output .onnx file")
    p.add_argument("--k", type=int, default=200, help="top-k size fixed in the graph")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization of weights")


def _split_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="which leave-one-out target to evaluate")


def _export(args: argparse.Namespace) -> int:
    from models.export import export

    out = export(args.model, args.out, k=args.k, int8=args.int8)
    return print_json({"onnx": str(out), "k": args.k, "int8": args.int8})


def _corpus(args: argparse.Namespace, spec: dict | None = None):
    """Load the data named by the arguments, falling back to what a model was trained on."""
    from models.data import load_corpus

    spec = spec or {}
    fmt = args.format or spec.get("format")
    if fmt is None:
        raise ValueError("--format is required (the model does not record its data)")
    path = args.data if args.data is not None else (
        Path(spec["path"]) if spec.get("path") and fmt == spec.get("format") else None)
    opts: dict = dict(spec.get("options", {})) if fmt == spec.get("format") else {}
    if fmt == "synthetic":
        for key, value in (("n_users", args.users), ("days", args.days),
                           ("seed", args.world_seed)):
            if value is not None:
                opts[key] = value
    elif fmt == "tokens":
        opts = {"vocab_path": args.vocab, "catalogue_path": args.catalogue}
    else:
        opts = {}
    saved = {k: v for k, v in opts.items() if not isinstance(v, Path)}
    if fmt == "synthetic":
        from infra.synthetic import synthetic_corpus

        corpus = synthetic_corpus(**opts)
    else:
        corpus = load_corpus(fmt, path, **opts)
    return corpus, {"format": fmt, "path": str(path) if path else None, "options": saved}


def _model_corpus(args: argparse.Namespace, model_dir: Path):
    """The data named by the arguments, or else the data the model in ``model_dir`` was
    trained on (as its checkpoint records it).
    """
    from models.checkpoint import load_checkpoint

    return _corpus(args, load_checkpoint(model_dir).extra.get("data", {}))[0]


def _train(args: argparse.Namespace) -> int:
    from models.train import TrainConfig, train, write_outputs

    log_progress()
    corpus, spec = _corpus(args)
    cfg = TrainConfig(**_given(args, "train"), progress=not args.no_progress,
                      **({"device": args.device} if args.device else {}),
                      **({"blend_grid": tuple(args.blend_grid)}
                         if args.blend_grid is not None else {}))
    model_cfg = {**_given(args, "model"), "mtp_shared": args.mtp_shared,
                 "item_only": args.item_only}
    summary = {}
    runs = [(args.out, model_cfg, "item-only" if args.item_only else "fm")]
    if args.with_ablation:
        runs.append((args.out / "ablation", {**model_cfg, "item_only": True}, "item-only"))
    for out, mc, tag in runs:
        metrics = write_outputs(train(corpus, mc, cfg, data_spec=spec, tag=tag), out)
        summary[tag] = {"dir": str(out), "best_epoch": metrics["best_epoch"],
                        "valid": metrics["valid"], "mtp_blend": metrics["config"]["mtp_blend"],
                        "train_tokens_per_s": metrics["train_tokens_per_s"]}
    return print_json(summary)


def _evaluate(args: argparse.Namespace) -> int:
    from models.evaluate import evaluate_dir

    corpus = _model_corpus(args, args.model)
    result = evaluate_dir(args.model, corpus, args.split, ablation_dir=args.ablation,
                          onnx_path=args.onnx, int8=args.int8)
    return print_json(result)


def _compare(args: argparse.Namespace) -> int:
    from models.evaluate import compare_trainings

    if len(args.model) != len(args.ablation):
        raise ValueError(f"{len(args.model)} --model directories but {len(args.ablation)} "
                         "--ablation: give one ablation per model, in the same order")
    corpus = _model_corpus(args, args.model[0])
    result = compare_trainings(list(zip(args.model, args.ablation)), corpus, args.split)
    return print_json(result)


def _tune_blend(args: argparse.Namespace) -> int:
    from models.blend import GRID, retune_blend

    log_progress()
    corpus = _model_corpus(args, args.model)
    grid = tuple(args.grid) if args.grid else GRID
    return print_json(retune_blend(args.model, corpus, grid, args.device))


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``marquee bench model``."""
    p = command(
        bench_sub, "model", _bench, "ONNX Runtime vs eager PyTorch ranking latency; training "
        "tokens/s", "Ranks the same batches (1 and 64 users, full-length histories) with eager "
        "PyTorch and ONNX Runtime on CPU, and measures training tokens/s; adds CUDA figures "
        "when a GPU is present. Writes JSON and a PNG chart.")
    p.add_argument("--model", type=Path, default=None,
                   help="model directory (default: an untrained SASRec-sized model: 3.7k items, "
                        "2 layers, d=64, 200 tokens)")
    out_path(p, Path("var/bench"), "output directory")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes")
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")


def _bench(args: argparse.Namespace) -> int:
    from infra.bench.model import run_bench

    result = run_bench(args.model, args.out, threads=args.threads, min_s=args.seconds)
    for row in result["ranking_cpu"]:
        print(f"batch {row['batch']:>3}: eager {row['eager_ms']:.2f} ms, ORT {row['ort_ms']:.2f} ms"
              f" -> ORT x{row['ort_speedup']}")
    print(f"training: {result['training_cpu']['tokens_per_s']:.0f} tokens/s on CPU")
    print_json(result)
    print(f"wrote {args.out / 'bench_model.json'} and {args.out / 'bench_model.png'}")
    return 0
