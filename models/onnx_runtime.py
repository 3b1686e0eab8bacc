"""Running an exported ranking graph with ONNX Runtime: what the service and the benchmarks use.

``OnnxRanker`` loads ``NAME.onnx`` and its sidecars (``NAME.vocab.json``, ``NAME.items.npy``),
checks the inputs it is given, and returns (user embedding, top ids, top scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.export import INPUTS, OUTPUTS, sidecar
from streams.contract.tokens import FACETS, Vocab


class OnnxRanker:
    """An ONNX Runtime session over an exported model, plus its vocabulary and item vectors."""

    def __init__(self, path: Path | str, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no ONNX model at {path}; make one with `marquee export`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.path = path
        self.version: str = meta["model_version"]
        self.config: dict = json.loads(meta["config"])
        self.vocab_hash: str = meta["vocab_hash"]
        self.k: int = int(meta["k"])
        self.max_len: int = int(meta["max_len"])
        self.n_items: int = int(self.config["n_items"])
        self.vocab = Vocab.load(sidecar(path, "vocab.json"))
        self.item_embeddings: np.ndarray = np.load(sidecar(path, "items.npy"))
        known = sidecar(path, "known.npy")
        # 1 per item id whose embedding was trained; cold titles (metadata only) are 0.
        self.known_items: np.ndarray = (np.load(known) if known.exists()
                                        else np.ones(self.n_items, np.float32))
        # An item-only model's graph reads just ``item`` (the exporter drops unused inputs).
        self._facets = [i.name for i in self.session.get_inputs() if i.name in FACETS]

    def rank(self, batch: dict[str, np.ndarray], seen_mask: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """batch: facet -> int64 [B, L] (left-padded, newest last; at most ``max_len`` tokens
        are used), seen_mask: float32 [B, n_items] -> (emb [B, D], ids [B, K], scores [B, K]).
        """
        missing = [f for f in FACETS if f not in batch]
        if missing:
            raise ValueError(f"batch is missing facets {missing}; every facet of FACETS "
                             "is an input")
        if seen_mask.shape[-1] != self.n_items:
            raise ValueError(f"seen_mask has {seen_mask.shape[-1]} columns, the model has "
                             f"{self.n_items} items; build it with width OnnxRanker.n_items")
        feeds = {f: np.ascontiguousarray(batch[f][:, -self.max_len:], dtype=np.int64)
                 for f in self._facets}
        feeds["seen_mask"] = np.ascontiguousarray(seen_mask, dtype=np.float32)
        emb, ids, scores = self.session.run(list(OUTPUTS), feeds)
        return emb, ids, scores

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the graph inputs (``FACETS`` + ``seen_mask``)."""
        return INPUTS
