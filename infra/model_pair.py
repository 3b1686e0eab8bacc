"""A strong and a deliberately weaker model of one synthetic world, served from one data folder:
what the simulated audience's experiments compare (``infra.bench.experiments`` and the
end-to-end experiment test).

The world's events become a token log (``infra.token_days``), the Feast SQLite rows the flow
would have written, and two ONNX models with the same vocabulary and size: **strong** trained
on every user's history, **weak** trained the same way on a tenth of the users. Both are real
trained models; the weak one has simply seen less, the gap a data-starved candidate has.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infra.synthetic import WorldConfig
from infra.token_days import TokenLogDays

SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 50, "mtp_k": 1}


@dataclass(frozen=True)
class PairConfig:
    """The world and the training budget of the pair."""

    seed: int = 13
    n_users: int = 300
    days: int = 8
    # a smaller catalogue than the demo's: enough plays per title for a model trained in
    # seconds to learn tastes and title draws
    n_movies: int = 120
    n_series: int = 20
    epochs: int = 8
    weak_share: float = 0.1  # share of users the weak model is trained on
    weak_epochs: int | None = None  # its epochs (None: as many as the strong; 0: untrained)
    model: dict[str, Any] = field(default_factory=lambda: dict(SMALL))

    def world(self) -> WorldConfig:
        """The synthetic world of the pair."""
        return WorldConfig(seed=self.seed, n_users=self.n_users, days=self.days,
                           n_movies=self.n_movies, n_series=self.n_series)


@dataclass
class ModelPair:
    """The data folder (token log, vocab, catalogue, Feast store) and the two ONNX files."""

    root: Path
    strong: Path
    weak: Path
    users: list[str]
    world: WorldConfig
    metrics: dict[str, dict[str, float]]


def build_pair(root: Path, config: PairConfig | None = None) -> ModelPair:
    """Make the world, train both models, export them and write the online store rows."""
    from models.data import load_corpus
    from models.export import export_checkpoint
    from models.train import TrainConfig, train

    cfg = config or PairConfig()
    world = cfg.world()
    days = TokenLogDays(root, world)
    days.grow_to(cfg.days)
    corpus = load_corpus("tokens", days.layout.tokens)
    train_cfg = TrainConfig(epochs=cfg.epochs, progress=False, device="cpu", blend_grid=(),
                            valid_users=None)
    strong = train(corpus, cfg.model, train_cfg, tag="strong")
    users = sorted(corpus.sequences)
    few = set(random.Random(cfg.seed).sample(users, max(2, int(len(users) * cfg.weak_share))))
    corpus.sequences = {u: s for u, s in corpus.sequences.items() if u in few}
    corpus.weights = {u: w for u, w in corpus.weights.items() if u in few}
    corpus.ts = {u: t for u, t in corpus.ts.items() if u in few}
    weak_epochs = cfg.epochs if cfg.weak_epochs is None else cfg.weak_epochs
    if weak_epochs:
        trained = train(corpus, cfg.model, replace(train_cfg, epochs=weak_epochs), tag="weak")
        weak, weak_metrics = trained.checkpoint, trained.best_valid
    else:
        weak, weak_metrics = _untrained(corpus, cfg.model), {}
    models = root / "models"
    pair = ModelPair(root, export_checkpoint(strong.checkpoint, models / "strong.onnx", k=100),
                     export_checkpoint(weak, models / "weak.onnx", k=100),
                     users, world, {"strong": strong.best_valid, "weak": weak_metrics})
    _write_features(days)
    return pair


def _untrained(corpus: Any, model_cfg: dict[str, Any]) -> Any:
    """The strong model's architecture with its initial weights (the catalogue installed)."""
    from models.checkpoint import Checkpoint, new_version
    from models.data import leave_one_out
    from models.train import build_model, seed_everything

    seed_everything(0)
    model = build_model(corpus, leave_one_out(corpus), model_cfg).eval()
    return Checkpoint(model=model, vocab=corpus.vocab, version=new_version("weak"),
                      genres=corpus.genres, kinds=corpus.kinds, ref_ms=corpus.ref_ms)


def _write_features(days: TokenLogDays) -> None:
    """The Feast SQLite rows of the whole log (what the flow would have written)."""
    from feature_repo.store import FeatureWriter, open_store, user_row
    from streams.contract.tokenizer import tokenize_events
    from streams.contract.tokens import Vocab

    root = days.layout.root
    by_user: dict[str, list] = {}
    durations = {t.item_id: t.duration_s for t in days.world.catalogue}
    for tok in tokenize_events(days.events, Vocab.load(days.layout.vocab), grow_vocab=False,
                               durations=durations):
        by_user.setdefault(tok.user_id, []).append(tok)
    writer = FeatureWriter(open_store(data_dir=root, online="sqlite"))
    writer.write_users([user_row(u, t[-200:], t[-1].ts) for u, t in by_user.items()])
    plays = Counter(e.item_id for e in days.events if e.action.value == "play")
    shows = Counter(e.item_id for e in days.events if e.action.value == "impression")
    now = max(e.ts for e in days.events)
    writer.write_items([{
        "item_id": t.item_id, "event_timestamp": now, "plays_1h": 0,
        "plays_24h": plays[t.item_id], "impressions_24h": shows[t.item_id], "ctr_24h": 0.0,
        "release_ms": t.release_ms, "genre": t.genre, "kind": t.kind,
        "duration_s": t.duration_s} for t in days.world.catalogue])
