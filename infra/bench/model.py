"""``marquee bench model``: ranking latency of ONNX Runtime vs eager PyTorch, training tokens/s.

Both runtimes rank the same batches with the same thread count (the baseline is eager PyTorch
measured in the same run). With a CUDA device, users ranked per second on the GPU are added
for PyTorch CUDA (fp32 and bf16 autocast) and onnxruntime's CUDA provider.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import Checkpoint, init_checkpoint, load_checkpoint
from models.export import export_checkpoint
from models.model import RankingGraph
from streams.contract.tokens import FACETS, N_DURATION_BUCKETS, N_GAP_BUCKETS, Vocab


def sasrec_sized(n_items: int = 3700, max_len: int = 200, d_model: int = 64,
                 n_layers: int = 2) -> Checkpoint:
    """An untrained model of the given size (speed does not depend on the weights)."""
    vocab = Vocab()
    for i in range(n_items - 2):
        vocab.id("item", f"t{i}")
    for d in ("tv", "phone", "web"):
        vocab.id("device", d)
    return init_checkpoint(vocab, version="bench", max_len=max_len, d_model=d_model,
                           n_layers=n_layers, n_heads=2, n_genres=13, n_kinds=3)


def random_batch(batch: int, length: int, n_items: int, seed: int = 0
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Full-length histories with realistic id ranges, and a sparse seen mask."""
    rng = np.random.default_rng(seed)
    highs = {"item": n_items, "action": 10, "gap": N_GAP_BUCKETS, "hour": 25, "dow": 8,
             "device": 5, "surface": 9, "duration": N_DURATION_BUCKETS}
    tokens = {f: rng.integers(1, highs[f], (batch, length)).astype(np.int64) for f in FACETS}
    seen = (rng.random((batch, n_items)) < 0.01).astype(np.float32)
    return tokens, seen


def _timeit(fn: Callable[[], object], min_s: float = 1.0, warmup: int = 3) -> float:
    """Median seconds per call over at least ``min_s`` of calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_s or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_ranking(ckpt: Checkpoint, batches: tuple[int, ...], threads: int,
                  min_s: float) -> list[dict[str, Any]]:
    """Per batch size: ms per call and users/s for eager PyTorch and ONNX Runtime (CPU)."""
    from models.onnx_runtime import OnnxRanker

    torch.set_num_threads(threads)
    cfg = ckpt.config
    ranker = RankingGraph(ckpt.model.cpu(), 200)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ort_ranker = OnnxRanker(export_checkpoint(ckpt, Path(tmp) / "b.onnx"), threads=threads)
        for b in batches:
            tokens, seen = random_batch(b, cfg.max_len, cfg.n_items)
            tt = [torch.from_numpy(tokens[f]) for f in FACETS]
            st = torch.from_numpy(seen)

            def eager(tt: list[torch.Tensor] = tt, st: torch.Tensor = st) -> object:
                with torch.inference_mode():
                    return ranker(*tt, st)

            def onnx(tokens: dict[str, np.ndarray] = tokens, seen: np.ndarray = seen) -> object:
                return ort_ranker.rank(tokens, seen)
            eager_s = _timeit(eager, min_s)
            ort_s = _timeit(onnx, min_s)
            rows.append({"batch": b, "eager_ms": round(eager_s * 1e3, 3),
                         "ort_ms": round(ort_s * 1e3, 3),
                         "eager_users_per_s": round(b / eager_s, 1),
                         "ort_users_per_s": round(b / ort_s, 1),
                         "ort_speedup": round(eager_s / ort_s, 2)})
    return rows


def bench_training(ckpt: Checkpoint, batch: int, steps: int, device: str) -> dict[str, Any]:
    """Training tokens/s on full-length random windows (all heads, full softmax)."""
    model = type(ckpt.model)(ckpt.config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    tokens, _ = random_batch(batch, ckpt.config.max_len, ckpt.config.n_items, seed=1)
    tok = {f: torch.from_numpy(v).to(device) for f, v in tokens.items()}
    shape = tok["item"].shape
    targets = {"item": tok["item"].roll(-1, 1), "action": tok["action"].roll(-1, 1),
               "duration": tok["duration"].roll(-1, 1),
               "mtp": tok["item"].roll(-2, 1).unsqueeze(-1).repeat(1, 1, model.cfg.mtp_k - 1),
               "weight": torch.ones(shape, device=device)}

    def step() -> None:
        loss = model.losses(tok, targets)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sec = (time.perf_counter() - t0) / steps
    return {"device": device, "batch": batch, "seq": shape[1], "step_ms": round(sec * 1e3, 1),
            "tokens_per_s": round(batch * shape[1] / sec, 1)}


def bench_gpu(ckpt: Checkpoint, batch: int, min_s: float) -> dict[str, Any]:
    """Users ranked per second on CUDA: PyTorch fp32, PyTorch bf16 autocast, ORT CUDA."""
    from models.onnx_runtime import OnnxRanker

    ranker = RankingGraph(ckpt.model, 200).cuda()
    tokens, seen = random_batch(batch, ckpt.config.max_len, ckpt.config.n_items)
    tt = [torch.from_numpy(tokens[f]).cuda() for f in FACETS]
    st = torch.from_numpy(seen).cuda()
    out: dict[str, Any] = {"batch": batch}

    def run(bf16: bool) -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            ranker(*tt, st)
        torch.cuda.synchronize()
    out["torch_fp32_users_per_s"] = round(batch / _timeit(lambda: run(False), min_s), 1)
    out["torch_bf16_users_per_s"] = round(batch / _timeit(lambda: run(True), min_s), 1)
    ranker.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_checkpoint(ckpt, Path(tmp) / "g.onnx")
        ort_cuda = OnnxRanker(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        out["ort_cuda_users_per_s"] = round(
            batch / _timeit(lambda: ort_cuda.rank(tokens, seen), min_s), 1)
    return out


def run_bench(model_dir: Path | None, out_dir: Path, threads: int = 1, min_s: float = 1.0,
              train_steps: int = 5) -> dict[str, Any]:
    """The whole benchmark; writes ``bench_model.json`` and ``bench_model.png``."""
    ckpt = load_checkpoint(model_dir) if model_dir else sasrec_sized()
    cfg = ckpt.config
    result: dict[str, Any] = {
        "model": {"version": ckpt.version, "n_items": cfg.n_items, "max_len": cfg.max_len,
                  "d_model": cfg.d_model, "n_layers": cfg.n_layers, "item_only": cfg.item_only},
        "threads": threads, "seq": cfg.max_len,
        "ranking_cpu": bench_ranking(ckpt, (1, 64), threads, min_s),
        "training_cpu": bench_training(ckpt, 64, train_steps, "cpu"),
    }
    if torch.cuda.is_available():
        result["gpu"] = bench_gpu(ckpt, 1024, min_s)
        result["training_cuda"] = bench_training(ckpt, 128, train_steps * 4, "cuda")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_model.json").write_text(json.dumps(result, indent=2))
    _plot(result, out_dir / "bench_model.png")
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["ranking_cpu"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["eager_ms"] for r in rows], 0.4, label="eager PyTorch")
    ax.bar(x + 0.2, [r["ort_ms"] for r in rows], 0.4, label="ONNX Runtime")
    ax.set_xticks(x, [f"batch {r['batch']}\n(ORT x{r['ort_speedup']})" for r in rows])
    ax.set_ylabel(f"ms per call (CPU, {result['threads']} thread(s), {result['seq']} tokens)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
