"""Subcommands of the ``models`` package: train, evaluate, export, and the model benchmark.

Handlers only parse and print; the work is in ``models.train``, ``models.evaluate``,
``models.export`` and ``models.bench`` (imported inside the handlers: torch is slow to load).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to ``marquee``."""
    p = sub.add_parser("export", help="export a trained model to ONNX (ranking graph)",
                       description="Write FILE.onnx (dynamic batch and length; outputs user "
                                   "embedding, top-k ids and scores) with FILE.vocab.json and "
                                   "FILE.items.npy beside it.")
    p.add_argument("--model", type=Path, required=True, help="model directory (from train)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx file")
    p.add_argument("--k", type=int, default=200, help="top-k size fixed in the graph (200)")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantization of weights")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from models.export import export

    out = export(args.model, args.out, k=args.k, int8=args.int8)
    print(json.dumps({"onnx": str(out), "k": args.k, "int8": args.int8}))
    return 0
