"""Training: windows of the leave-one-out training prefixes, AdamW, early stopping on validation.

The checkpoint kept is the one with the best validation NDCG@10 (never test). It carries its
model config, vocabulary, catalogue tables and a description of the data it was trained on, so
``marquee evaluate`` can rebuild the same split.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.blend import GRID, can_blend, tune_blend
from models.checkpoint import Checkpoint, new_version
from models.data import (
    Corpus,
    Split,
    constant_facets,
    eval_set,
    known_items,
    leave_one_out,
    training_windows,
)
from models.evaluate import evaluate_ranks, torch_ranker
from models.model import FoundationModel, ModelConfig
from streams.contract.tokens import FACETS

log = logging.getLogger(__name__)

# Changes when training changes what a model learns: the demo retrains models of an older recipe.
RECIPE = "r8"


@dataclass
class TrainConfig:
    """Optimisation budget and schedule."""

    epochs: int = 60
    batch_size: int = 128
    # "random": uniform batches, every position weighs the same (trains the better model on
    # real data, docs/results.md); "length": windows of similar length share a batch (less
    # padding, faster on short histories, but short histories' positions weigh more).
    batching: str = "random"
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 4  # evaluations without validation improvement before stopping
    # On a plateau, go back to the best weights and go on at lr * lr_decay, this many times,
    # before stopping: the last steps at a small learning rate settle the model in the best
    # region instead of stopping on a noisy high-learning-rate point (docs/design.md).
    lr_decays: int = 2
    lr_decay: float = 0.1
    eval_every: int = 1  # epochs
    max_minutes: float | None = None  # wall-clock budget (checked after each epoch)
    # validation users per epoch (sampled once, seeded; 0 or None: all)
    valid_users: int | None = 10_000
    seed: int = 42
    # mtp_blend values tried on all validation users after training (models with multi-token
    # heads; see models.blend)
    blend_grid: tuple[float, ...] = GRID
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batching not in ("length", "random"):
            raise ValueError(f"batching={self.batching!r}: use 'length' or 'random'")
        if self.lr_decays < 0 or not 0.0 < self.lr_decay < 1.0:
            raise ValueError(f"lr_decays={self.lr_decays}, lr_decay={self.lr_decay}: "
                             "a count >= 0 and a factor in (0, 1)")


@dataclass
class TrainResult:
    """The best checkpoint and the history that chose it."""

    checkpoint: Checkpoint
    history: list[dict[str, Any]]
    best_epoch: int
    best_valid: dict[str, float]
    tokens_per_s: float


def seed_everything(seed: int) -> None:
    """Same seed, same run (on CPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(corpus: Corpus, split: Split, model_cfg: dict[str, Any]) -> FoundationModel:
    """A fresh model sized for the corpus, with its catalogue tables installed."""
    has_meta = corpus.item_meta is not None
    cfg = ModelConfig(n_items=corpus.n_items, n_devices=max(corpus.vocab.size("device"), 2),
                      n_surfaces=max(corpus.vocab.size("surface"), 2),
                      n_genres=len(corpus.genres) + 1, n_kinds=len(corpus.kinds) + 1,
                      **{"use_tower": has_meta, "constant_facets": constant_facets(corpus),
                         **model_cfg})
    model = FoundationModel(cfg)
    meta = corpus.item_meta if has_meta else np.zeros((corpus.n_items, 4), np.int64)
    model.set_catalogue(torch.from_numpy(meta), torch.from_numpy(known_items(corpus, split)))
    return model


def train(corpus: Corpus, model_cfg: dict[str, Any], cfg: TrainConfig,
          data_spec: dict[str, Any] | None = None, split: Split | None = None,
          tag: str = "fm", model: FoundationModel | None = None) -> TrainResult:
    """Train one model; returns the best-on-validation checkpoint.

    ``model``: start from these weights (a warm start, ``models.retrain``) instead of a fresh
    model built from ``model_cfg``; it must be sized for ``corpus`` already.
    """
    seed_everything(cfg.seed)
    split = split or leave_one_out(corpus)
    warm = model is not None
    model = (model or build_model(corpus, split, model_cfg)).to(cfg.device)
    mc = model.cfg
    log.info("training %s: %s on %s, %d users, %d items", tag, mc.to_dict(), cfg.device,
             len(corpus.sequences), corpus.n_items)
    win = training_windows(corpus, split, mc.max_len, mc.mtp_k)
    tensors = {"tokens": torch.from_numpy(win.tokens), "item": torch.from_numpy(win.item),
               "mtp": torch.from_numpy(win.mtp), "action": torch.from_numpy(win.action),
               "duration": torch.from_numpy(win.duration), "weight": torch.from_numpy(win.weight)}
    lengths = tensors["tokens"][..., 0].gt(0).sum(1)  # [N] real tokens per window
    valid = _valid_set(corpus, split, mc.max_len, cfg)
    known = known_items(corpus, split)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            foreach=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any], dict[str, float]] = (-1.0, 0, {}, {})
    if warm:
        # Epoch 0 is the starting point: a warm start never ends below the weights it began
        # from on validation (too high a learning rate would otherwise only make it worse).
        metrics = evaluate_ranks(torch_ranker(model, cfg.device), valid, mc.n_items, known)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        best = (metrics["ndcg@10"], 0, state, metrics)
        history.append({"epoch": 0, **{f"valid_{k}": v for k, v in metrics.items()}})
    start, n_tokens, train_s, bad, decays = time.monotonic(), 0, 0.0, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.monotonic()
        batches = (_length_batches(lengths, cfg.batch_size, gen) if cfg.batching == "length"
                   else list(torch.randperm(len(lengths), generator=gen).split(cfg.batch_size)))
        sums, tokens = _train_epoch(model, opt, tensors, lengths, batches,
                                    cfg.device, bar=f"{tag} epoch {epoch}" if cfg.progress else "")
        n_tokens += tokens
        epoch_s = time.monotonic() - t0
        train_s += epoch_s
        row: dict[str, Any] = {"epoch": epoch, **{f"train_{k}": round(v / len(batches), 5)
                                                  for k, v in sums.items()}}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            metrics = evaluate_ranks(torch_ranker(model, cfg.device), valid, mc.n_items, known)
            row.update({f"valid_{k}": v for k, v in metrics.items()})
            if metrics["ndcg@10"] > best[0]:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                best, bad = (metrics["ndcg@10"], epoch, state, metrics), 0
            else:
                bad += 1
        row["lr"] = opt.param_groups[0]["lr"]
        row["train_s"] = round(epoch_s, 1)
        row["elapsed_s"] = round(time.monotonic() - start, 1)
        history.append(row)
        log.info("%s %s", tag, row)
        if cfg.progress:
            tqdm.write(f"{tag} " + json.dumps(row))
        elapsed_min = (time.monotonic() - start) / 60
        out_of_time = cfg.max_minutes is not None and elapsed_min > cfg.max_minutes
        if out_of_time or not math.isfinite(row.get("train_loss", 0.0)):
            break
        if bad >= cfg.patience:
            if decays >= cfg.lr_decays:
                break
            decays, bad = decays + 1, 0
            model.load_state_dict(best[2])
            for group in opt.param_groups:
                group["lr"] *= cfg.lr_decay
            log.info("%s: plateau, back to epoch %d at lr %g", tag, best[1],
                     opt.param_groups[0]["lr"])
    model.load_state_dict(best[2])
    blends: dict[float, dict] = {}
    if can_blend(model) and cfg.blend_grid:
        every = (valid if len(valid.users) == len(split.valid)
                 else eval_set(corpus, split.valid, mc.max_len))
        blends = tune_blend(model, every, known, cfg.blend_grid, cfg.device)
    if blends:
        best = (*best[:3], blends[model.cfg.mtp_blend])
    model.cpu().eval()
    extra = {"data": data_spec or {}, "train": {**asdict(cfg), "device": cfg.device},
             "best_epoch": best[1], "valid": best[3], "blend": blends}
    ckpt = Checkpoint(model=model, vocab=corpus.vocab, version=new_version(tag),
                      genres=corpus.genres, kinds=corpus.kinds, ref_ms=corpus.ref_ms, extra=extra)
    return TrainResult(ckpt, history, best[1], best[3], n_tokens / max(train_s, 1e-9))


def _train_epoch(model: FoundationModel, opt: torch.optim.Optimizer,
                 tensors: dict[str, torch.Tensor], lengths: torch.Tensor,
                 batches: list[torch.Tensor], device: str,
                 bar: str = "") -> tuple[dict[str, float], int]:
    """One pass over ``batches`` (window indices); returns the summed losses and the number
    of real tokens trained. ``bar``: progress bar title ("" = no bar).
    """
    sums: dict[str, float] = {}
    n_tokens = 0
    progress = tqdm(batches, desc=bar, disable=not bar, leave=False)
    for idx in progress:
        width = int(lengths[idx].max())  # left-padded: drop the all-padding columns
        tok = tensors["tokens"][idx, -width:].to(device)
        batch = {f: tok[..., j] for j, f in enumerate(FACETS)}
        targets = {k: tensors[k][idx, -width:].to(device) for k in
                   ("item", "mtp", "action", "duration", "weight")}
        losses = model.losses(batch, targets)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        n_tokens += int((tok[..., 0] > 0).sum())
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        progress.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
    return sums, n_tokens


def _length_batches(lengths: torch.Tensor, batch_size: int,
                    gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of windows of similar length: with short histories (most real data)
    this skips most of the padding, several times faster than random batches.
    """
    noise = torch.rand(len(lengths), generator=gen) * 4  # jitter: not the same batches each epoch
    order = torch.argsort(lengths.float() + noise)
    batches = list(order.split(batch_size))
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def _valid_set(corpus: Corpus, split: Split, max_len: int, cfg: TrainConfig):
    cuts = split.valid
    if cfg.valid_users and len(cuts) > cfg.valid_users:
        keep = random.Random(cfg.seed).sample(sorted(cuts), cfg.valid_users)
        cuts = {u: cuts[u] for u in keep}
    return eval_set(corpus, cuts, max_len)


def write_outputs(result: TrainResult, out_dir: Path) -> dict[str, Any]:
    """Checkpoint, ``metrics.json`` and ``curves.png`` into ``out_dir``; returns the metrics."""
    result.checkpoint.save(out_dir)
    metrics = {"version": result.checkpoint.version, "best_epoch": result.best_epoch,
               "valid": result.best_valid, "blend": result.checkpoint.extra.get("blend"),
               "train_tokens_per_s": round(result.tokens_per_s, 1),
               "config": result.checkpoint.config.to_dict(), "history": result.history}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(result.history, out_dir / "curves.png")
    return metrics


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training losses and validation HR/NDCG@10 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in history]
    for key in sorted({k for r in history for k in r if k.startswith("train_")}):
        ax1.plot(epochs, [r.get(key, float("nan")) for r in history], label=key[6:])
    ax1.set_xlabel("epoch")
    ax1.set_title("training losses")
    ax1.legend()
    ev = [r for r in history if "valid_ndcg@10" in r]
    for key in ("valid_hr@10", "valid_ndcg@10"):
        ax2.plot([r["epoch"] for r in ev], [r[key] for r in ev], marker="o", label=key[6:])
    ax2.set_xlabel("epoch")
    ax2.set_title("validation")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
