"""Warm-start retraining: the serving model, grown to today's vocabulary, trained a few epochs
on the token log up to the recent slice, then examined beside the serving model.

**Vocabulary growth.** Vocabularies only grow (``streams.contract.tokens.Vocab``: ids are
never reused), so the old id tables are a prefix of the new ones: the item, device and surface
rows are copied, rows for new values start fresh, and tower tables (genres, kinds) are matched
by name. A new title with interactions in the training data gets a trained id embedding
(``known`` = 1); one without any stays cold and is placed by its metadata tower alone, the same
path ``marquee train`` takes for titles it never trained on. No full retrain is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.checkpoint import Checkpoint
from models.data import Corpus, eval_set, known_items
from models.evaluate import evaluate_ranks, torch_ranker
from models.holdout import TimeSplit, cut_time, time_split
from models.model import FoundationModel, ModelConfig
from models.train import TrainConfig, TrainResult, build_model, train

GATE_METRIC = "ndcg@10"
EXAMS = ("recent", "standard")


@dataclass
class Retrained:
    """The candidate, how it trained, and both models' figures on both exams."""

    candidate: Checkpoint
    train: TrainResult
    holdout: TimeSplit
    exams: dict[str, dict[str, dict[str, Any]]]  # exam -> {"candidate": m, "current": m}
    train_s: float
    new_items: int  # item ids the current model's table lacked


@dataclass
class Decision:
    """The gate's verdict and why."""

    promote: bool
    margin: float
    metric: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """For ``metrics.json`` and the CLI's JSON."""
        return {"promote": self.promote, "margin": self.margin, "metric": self.metric,
                "reasons": self.reasons}


def _check_prefix(old: dict[str, int], new: dict[str, int], facet: str) -> None:
    moved = [v for v, i in old.items() if new.get(v) != i]
    if moved:
        raise ValueError(f"the {facet} vocabulary is not a continuation of the model's "
                         f"({len(moved)} ids moved, e.g. {moved[:3]}): warm starts need the "
                         "same growing vocab.json; train afresh with `marquee train`")


def grow(current: Checkpoint, corpus: Corpus, known: np.ndarray) -> FoundationModel:
    """``current``'s weights in a model sized for ``corpus`` (see the module docstring);
    ``known``: which items' id embeddings train (``known_items`` of the training split).
    """
    for facet in ("item", "device", "surface"):
        _check_prefix(current.vocab.tables[facet], corpus.vocab.tables[facet], facet)
    old = current.model
    cfg = ModelConfig(**{**current.config.to_dict(), "n_items": corpus.n_items,
                         "n_devices": max(corpus.vocab.size("device"), old.cfg.n_devices),
                         "n_surfaces": max(corpus.vocab.size("surface"), old.cfg.n_surfaces),
                         "n_genres": len(corpus.genres) + 1, "n_kinds": len(corpus.kinds) + 1})
    model = FoundationModel(cfg)
    state = model.state_dict()
    rows = {"tower.genre.weight": _name_rows(current.genres, corpus.genres),
            "tower.kind.weight": _name_rows(current.kinds, corpus.kinds)}
    with torch.no_grad():
        for key, value in old.state_dict().items():
            if key in ("item_meta", "known"):
                continue
            target = state[key]
            if key in rows:
                for new_i, old_i in rows[key]:
                    target[new_i] = value[old_i]
            elif target.shape == value.shape:
                target.copy_(value)
            else:  # a grown table: the old ids keep their rows
                target[: value.shape[0]] = value
    model.load_state_dict(state)
    meta = corpus.item_meta if corpus.item_meta is not None else np.zeros((corpus.n_items, 4),
                                                                          np.int64)
    model.set_catalogue(torch.from_numpy(meta), torch.from_numpy(known))
    return model


def _name_rows(old: list[str], new: list[str]) -> list[tuple[int, int]]:
    """(new row, old row) of tower values known to both (row i+1 = i-th name; 0 = unknown)."""
    where = {name: i + 1 for i, name in enumerate(old)}
    return [(0, 0)] + [(i + 1, where[n]) for i, n in enumerate(new) if n in where]


def examine(model: FoundationModel, corpus: Corpus, holdout: TimeSplit,
            known: np.ndarray) -> dict[str, dict[str, Any]]:
    """HR/NDCG@10/50 of ``model`` on the recent slice and the standard test split, ranking
    the ids its own table holds (an id beyond it, a title it never had, is a miss: what the
    service would give).
    """
    n_items, max_len = model.cfg.n_items, model.cfg.max_len
    ranker = torch_ranker(model)
    return {"recent": evaluate_ranks(ranker, eval_set(corpus, holdout.recent, max_len),
                                     n_items, known),
            "standard": evaluate_ranks(ranker, eval_set(corpus, holdout.split.test, max_len),
                                       n_items, known)}


def retrain(current: Checkpoint, corpus: Corpus, cfg: TrainConfig, holdout_hours: float,
            data_spec: dict[str, Any] | None = None, tag: str = "fm") -> Retrained:
    """Warm-start ``current`` on ``corpus`` up to the recent slice, then examine both."""
    holdout = time_split(corpus, cut_time(corpus, holdout_hours))
    if not holdout.recent:
        raise ValueError(f"no user interacted in the newest {holdout_hours} h of the token "
                         "log: nothing to examine a candidate on; lower --holdout-hours")
    known = known_items(corpus, holdout.split)
    model = grow(current, corpus, known)
    t0 = time.monotonic()
    result = train(corpus, {}, cfg, data_spec=data_spec, split=holdout.split, tag=tag,
                   model=model)
    train_s = time.monotonic() - t0
    if result.best_epoch == 0:  # kept the starting weights: new titles' id rows never trained,
        with torch.no_grad():  # so their tower alone places them
            result.checkpoint.model.known[current.config.n_items:] = 0.0
    result.checkpoint.extra["warm_start"] = {"parent": current.version,
                                             "holdout_cut_ms": holdout.cut_ms}
    candidate = examine(result.checkpoint.model, corpus, holdout, known)
    serving = examine(current.model, corpus, holdout, known)
    exams = {name: {"candidate": candidate[name], "current": serving[name]} for name in EXAMS}
    return Retrained(result.checkpoint, result, holdout, exams, train_s,
                     max(corpus.n_items - current.config.n_items, 0))


def gate(exams: dict[str, dict[str, dict[str, Any]]], margin: float,
         metric: str = GATE_METRIC) -> Decision:
    """Promote only if the candidate's ``metric`` is at least ``(1 - margin)`` x the current
    model's on every exam; otherwise say where it fell short.
    """
    decision = Decision(True, margin, metric)
    for name in EXAMS:
        cand, cur = exams[name]["candidate"][metric], exams[name]["current"][metric]
        floor = cur * (1 - margin)
        ok = cand >= floor
        decision.promote &= ok
        verb = ">=" if ok else "<"
        decision.reasons.append(f"{name} {metric} {cand:.4f} {verb} {floor:.4f} (current "
                                f"{cur:.4f} x (1 - {margin:g}), {exams[name]['current']['users']}"
                                " users)")
    return decision


def fresh_model(corpus: Corpus, holdout: TimeSplit, model_cfg: dict[str, Any]) -> FoundationModel:
    """A fresh model on the same split (the comparison a warm start is measured against)."""
    return build_model(corpus, holdout.split, model_cfg)
