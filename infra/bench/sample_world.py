"""A small, real data world for the ranking service's tests, benchmarks and demos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from infra.synthetic import SyntheticWorld, WorldConfig
from serve.config import ServeSettings
from streams.contract.events import InteractionEvent
from streams.contract.tokens import Vocab
from streams.launch import free_port

if TYPE_CHECKING:
    from feature_repo.store import FeatureWriter


class SampleWorld:
    """A small real world for the service: synthetic events -> tokens (the flow's tokenizer)
    -> Feast online store (SQLite) via the flow's row helpers, plus two untrained ONNX models
    (versions fm-a, fm-b) made by the real export code.
    """

    def __init__(self, data_dir: Path, n_users: int = 30, days: int = 4, seed: int = 11) -> None:
        from feature_repo.store import FeatureWriter, open_store
        from models.checkpoint import init_checkpoint
        from models.export import export_checkpoint
        from streams.contract.tokenizer import tokenize_events

        self.data_dir = data_dir
        world = SyntheticWorld(WorldConfig(seed=seed, n_users=n_users, days=days))
        world.write_catalogue(data_dir / "catalogue.jsonl")
        self.catalogue = {t.item_id: t for t in world.catalogue}
        self.events = [InteractionEvent.model_validate(e) for e in world.events()]
        vocab = Vocab()
        for item_id in self.catalogue:  # every title known to the model
            vocab.id("item", item_id)
        tokens = tokenize_events(self.events, vocab)
        vocab.save(data_dir / "vocab.json")
        self.vocab = vocab
        by_user: dict[str, list] = {}
        for tok in tokens:
            by_user.setdefault(tok.user_id, []).append(tok)
        self.tokens = by_user
        self.store = open_store(data_dir=data_dir, online="sqlite")
        self.write_features(FeatureWriter(self.store))
        models = data_dir / "models"
        self.model_a = export_checkpoint(init_checkpoint(vocab, version="fm-a", d_model=32),
                                         models / "a.onnx", k=100)
        self.model_b = export_checkpoint(init_checkpoint(vocab, version="fm-b", d_model=32),
                                         models / "b.onnx", k=100)
        self.users = sorted(by_user, key=lambda u: -len(by_user[u]))

    def write_features(self, writer: FeatureWriter) -> None:
        """The user and item rows of this world, through ``writer`` (SQLite at construction;
        call again with a Redis writer to serve the same world from Redis).
        """
        from feature_repo.store import user_row

        writer.write_users([user_row(u, t[-200:], t[-1].ts) for u, t in self.tokens.items()])
        plays = Counter(e.item_id for e in self.events if e.action.value == "play")
        shows = Counter(e.item_id for e in self.events if e.action.value == "impression")
        now = max(e.ts for e in self.events)
        writer.write_items([{
            "item_id": t.item_id, "event_timestamp": now, "plays_1h": 0,
            "plays_24h": plays[t.item_id], "impressions_24h": shows[t.item_id],
            "ctr_24h": 0.0, "release_ms": t.release_ms, "genre": t.genre, "kind": t.kind,
            "duration_s": t.duration_s} for t in self.catalogue.values()])

    def settings(self, **overrides: object) -> ServeSettings:
        """Settings serving this world on a free port (override anything); the rankings log
        is off unless an override turns it on with a broker's address.
        """
        base = {"data_dir": self.data_dir, "model_path": self.model_a, "online_store": "sqlite",
                "port": free_port(), "rankings_log": False}
        return ServeSettings(**{**base, **overrides})
