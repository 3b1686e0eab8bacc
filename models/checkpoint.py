"""Checkpoints that carry everything needed to rebuild the model: config, weights, vocabulary
and catalogue metadata. Export, evaluation and serving start from a checkpoint directory alone.

Layout of a model directory: ``model.pt`` (this dict), ``vocab.json`` (the model's ``Vocab``),
and, written by training, ``metrics.json`` and ``curves.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.model import FoundationModel, ModelConfig
from streams.contract.tokens import Vocab

CHECKPOINT = "model.pt"


def vocab_hash(vocab: Vocab) -> str:
    """Short stable hash of a vocabulary, stored in the ONNX metadata so a graph names the ids
    it was trained on (docs/contracts.md).
    """
    text = json.dumps(vocab.tables, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    """A trained (or freshly initialised) model with its vocabulary and catalogue tables."""

    model: FoundationModel
    vocab: Vocab
    version: str
    genres: list[str] = field(default_factory=list)  # tower id i+1 -> genre
    kinds: list[str] = field(default_factory=list)
    ref_ms: int = 0  # reference time for release-age buckets
    extra: dict[str, Any] = field(default_factory=dict)  # training summary

    @property
    def config(self) -> ModelConfig:
        """The model's config."""
        return self.model.cfg

    def save(self, out_dir: Path) -> Path:
        """Write ``model.pt`` and ``vocab.json`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / CHECKPOINT
        torch.save({"config": self.config.to_dict(),
                    "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()},
                    "vocab": self.vocab.tables, "version": self.version, "genres": self.genres,
                    "kinds": self.kinds, "ref_ms": self.ref_ms, "extra": self.extra}, path)
        self.vocab.save(out_dir / "vocab.json")
        return path


def new_version(tag: str = "fm") -> str:
    """A model version string: tag and UTC time, sortable."""
    return f"{tag}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def load_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    """Rebuild a checkpoint from a model directory (or a ``model.pt`` path)."""
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `marquee train`")
    raw = torch.load(path, map_location=device, weights_only=False)
    model = FoundationModel(ModelConfig(**raw["config"]))
    model.load_state_dict(raw["state_dict"])
    model.to(device).eval()
    return Checkpoint(model=model, vocab=Vocab(tables=raw["vocab"]), version=raw["version"],
                      genres=raw.get("genres", []), kinds=raw.get("kinds", []),
                      ref_ms=raw.get("ref_ms", 0), extra=raw.get("extra", {}))


def init_checkpoint(vocab: Vocab, version: str | None = None, **config: Any) -> Checkpoint:
    """An untrained checkpoint sized for ``vocab`` (for tests and for wiring up the service
    before a model is trained); ``config`` overrides ``ModelConfig`` fields.
    """
    cfg = ModelConfig(n_items=vocab.size("item"), n_devices=max(vocab.size("device"), 2),
                      n_surfaces=max(vocab.size("surface"), 2), **config)
    return Checkpoint(model=FoundationModel(cfg).eval(), vocab=vocab,
                      version=version or new_version("untrained"))
