"""The look-ahead blend: how much of the multi-token heads joins the next-item ranking query.

Chosen on validation (never test), on every validation user: the choice compares values on the
same trunk, so only the users' luck separates them, and a sample of users (``--valid-users``,
which keeps the per-epoch evaluation cheap) lets that luck decide (docs/design.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import load_checkpoint, new_version
from models.data import Corpus, EvalSet, eval_set, known_items, leave_one_out
from models.evaluate import evaluate_ranks, torch_ranker
from models.model import FoundationModel

log = logging.getLogger(__name__)

GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def can_blend(model: FoundationModel) -> bool:
    """Whether the model has multi-token heads of its own to blend in (not item-only, not
    ``--mtp-k 1``, not ``--mtp-shared``, where a blend would only scale the scores).
    """
    return bool(len(model.mtp_proj)) and not model.cfg.mtp_shared


def tune_blend(model: FoundationModel, valid: EvalSet, known: np.ndarray,
               grid: tuple[float, ...] = GRID, device: str = "cpu") -> dict[float, dict]:
    """Set ``mtp_blend`` to the value in ``grid`` with the best validation NDCG@10; returns
    the metrics per value ({} when the model cannot blend, see ``can_blend``).
    """
    if not can_blend(model) or not grid:
        return {}
    results: dict[float, dict] = {}
    for blend in grid:
        model.cfg.mtp_blend = blend
        results[blend] = evaluate_ranks(torch_ranker(model, device), valid,
                                        model.cfg.n_items, known)
    model.cfg.mtp_blend = max(results, key=lambda b: results[b]["ndcg@10"])
    log.info("mtp_blend %s chosen on %d validation users: %s", model.cfg.mtp_blend,
             len(valid.users), {b: r["ndcg@10"] for b, r in results.items()})
    return results


def retune_blend(model_dir: Path, corpus: Corpus, grid: tuple[float, ...] = GRID,
                 device: str = "cpu") -> dict[str, Any]:
    """``marquee tune-blend``: choose a trained model's blend again on all validation users
    (a model trained before that rule, or another grid) and rewrite its checkpoint under a new
    version, with ``metrics.json`` beside it updated; the weights are untouched.
    """
    ckpt = load_checkpoint(model_dir, device)
    cfg = ckpt.config
    if not can_blend(ckpt.model):
        raise ValueError(f"{model_dir} has no multi-token heads of its own to blend in "
                         "(item-only, --mtp-k 1 or --mtp-shared): nothing to tune")
    if corpus.n_items > cfg.n_items:
        raise ValueError(f"the data has {corpus.n_items} item ids, model {model_dir} only "
                         f"{cfg.n_items}: tune on the data it was trained on")
    split = leave_one_out(corpus)
    valid = eval_set(corpus, split.valid, cfg.max_len)
    before = cfg.mtp_blend
    results = tune_blend(ckpt.model, valid, known_items(corpus, split), grid, device)
    ckpt.version = new_version(ckpt.version.split("-")[0])
    ckpt.extra.update(blend=results, valid=results[cfg.mtp_blend])
    ckpt.save(model_dir)
    metrics_path = model_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics.update(version=ckpt.version, blend=results, valid=results[cfg.mtp_blend])
        metrics["config"]["mtp_blend"] = cfg.mtp_blend
        metrics_path.write_text(json.dumps(metrics, indent=2))
    return {"model": str(model_dir), "version": ckpt.version, "valid_users": len(valid.users),
            "mtp_blend": cfg.mtp_blend, "was": before,
            "valid_ndcg@10": {b: r["ndcg@10"] for b, r in results.items()}}
