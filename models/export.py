"""ONNX export of a checkpoint: the ranking graph the service runs (docs/contracts.md).

Inputs ``item .. duration`` int64 [B, L] (left-padded, newest last) and ``seen_mask`` float32
[B, n_items]; outputs ``user_embedding`` [B, D], ``top_ids`` int64 [B, K], ``top_scores``
[B, K]. Batch and sequence length are dynamic. Beside ``NAME.onnx`` go ``NAME.vocab.json``
and ``NAME.items.npy`` (item vectors for similar-item lookups).

We use the TorchScript-based exporter (``dynamo=False``): the graph is a plain transformer,
it needs no extra dependency, and dynamic axes are reliable with it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from models.checkpoint import Checkpoint, load_checkpoint, vocab_hash
from models.model import RankingGraph
from streams.contract.tokens import FACETS

INPUTS = (*FACETS, "seen_mask")
OUTPUTS = ("user_embedding", "top_ids", "top_scores")
OPSET = 17


def sidecar(onnx_path: Path, suffix: str) -> Path:
    """``x.onnx`` -> ``x.<suffix>`` (``vocab.json``, ``items.npy``)."""
    return onnx_path.with_name(onnx_path.stem + "." + suffix)


def export_checkpoint(ckpt: Checkpoint, out: Path, k: int = 200, int8: bool = False) -> Path:
    """Write the ONNX ranking graph of ``ckpt`` and its sidecar files; returns ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ranker = RankingGraph(ckpt.model.cpu().eval(), k)
    cfg = ckpt.config
    b, n = 2, min(8, cfg.max_len)
    example = tuple(torch.ones(b, n, dtype=torch.long) for _ in FACETS) + (
        torch.zeros(b, cfg.n_items),)
    dynamic = {name: {0: "batch", 1: "seq"} for name in FACETS}
    dynamic["seen_mask"] = {0: "batch"}
    dynamic.update({name: {0: "batch"} for name in OUTPUTS})
    fp32_path = out.with_name(out.stem + ".fp32.onnx") if int8 else out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not for users
        torch.onnx.export(ranker, example, str(fp32_path), input_names=list(INPUTS),
                          output_names=list(OUTPUTS), dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8)
        fp32_path.unlink()
    _write_metadata(out, ckpt, ranker.k, int8)
    ckpt.vocab.save(sidecar(out, "vocab.json"))
    np.save(sidecar(out, "items.npy"), ranker.items.numpy().astype(np.float32))
    # 1 = the item's id embedding was trained; 0 = cold (ranked by metadata alone).
    np.save(sidecar(out, "known.npy"), ckpt.model.known.cpu().numpy().astype(np.float32))
    return out


def _write_metadata(path: Path, ckpt: Checkpoint, k: int, int8: bool) -> None:
    model = onnx.load(str(path))
    meta = {"model_version": ckpt.version, "config": json.dumps(ckpt.config.to_dict()),
            "vocab_hash": vocab_hash(ckpt.vocab), "max_len": str(ckpt.config.max_len),
            "k": str(k), "quantization": "int8-dynamic" if int8 else "fp32"}
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def export(model_dir: Path, out: Path, k: int = 200, int8: bool = False) -> Path:
    """``marquee export``: load a checkpoint directory and export it."""
    return export_checkpoint(load_checkpoint(model_dir), out, k=k, int8=int8)
