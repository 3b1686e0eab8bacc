"""Ranking evaluation under the standard sequential-recommendation protocol.

Each evaluated user's target is one held-out interaction; the scorer sees the history before
it, the full catalogue is ranked, items the user already interacted with are excluded (the
target itself is kept), and the target's rank gives HR@K and NDCG@K. Cold-start recall is the
hit rate over targets whose item was never a training target.

Scorers: the PyTorch model, an exported ONNX file (ranks read off its top-k output), and the
most-popular baseline; all run on the same ``EvalSet``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.data import Corpus, EvalSet, Split, known_items
from models.model import FoundationModel
from streams.contract.tokens import FACETS

KS = (10, 50)
# A scorer maps (tokens [b, L, F], seen mask [b, n_items], targets [b]) to target ranks [b].
Ranks = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def seen_mask(es: EvalSet, rows: slice, n_items: int) -> np.ndarray:
    """Float mask [b, n_items] of already-interacted items, the target left rankable."""
    users = range(len(es.users))[rows]
    mask = np.zeros((len(users), n_items), np.float32)
    for r, u in enumerate(users):
        mask[r, es.seen[u][es.seen[u] < n_items]] = 1.0
        if es.target[u] < n_items:
            mask[r, es.target[u]] = 0.0
    return mask


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each user's HR@K and NDCG@K from 0-based ranks; their means are the reported figures."""
    out: dict[str, np.ndarray] = {}
    for k in KS:
        hit = ranks < k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = hit / np.log2(ranks + 2.0)
    return out


def metrics_from_ranks(ranks: np.ndarray, cold: np.ndarray | None = None) -> dict[str, float]:
    """HR@K / NDCG@K from 0-based ranks (and cold-start recall over the ``cold`` subset)."""
    out: dict[str, float] = {"users": int(len(ranks))}
    for name, values in per_user_metrics(ranks).items():
        out[name] = round(float(values.mean()), 5) if len(ranks) else 0.0
    if cold is not None and cold.any():
        out["cold_users"] = int(cold.sum())
        for k in KS:
            out[f"cold_recall@{k}"] = round(float((ranks[cold] < k).mean()), 5)
    return out


def paired_difference(ranks: np.ndarray, baseline: np.ndarray, resamples: int = 2000,
                      seed: int = 0) -> dict[str, dict[str, object]]:
    """Mean per-user difference (model minus baseline) of each metric on the same users, with
    a 95% bootstrap interval over users: whether a lead is larger than the luck of which users
    the test split holds. It says nothing of training noise: two trainings of one recipe with
    different seeds can differ by more than this interval (docs/results.md), so a lead between
    separately trained models needs several seeds.
    """
    from scipy.stats import bootstrap

    if len(ranks) != len(baseline):
        raise ValueError(f"paired comparison needs the same users: {len(ranks)} vs {len(baseline)}")
    a, b = per_user_metrics(ranks), per_user_metrics(baseline)
    out: dict[str, dict[str, object]] = {}
    for name in a:
        diff = a[name] - b[name]
        ci = bootstrap((diff,), np.mean, n_resamples=resamples, method="percentile",
                       random_state=np.random.default_rng(seed)).confidence_interval
        out[name] = {"diff": round(float(diff.mean()), 5),
                     "ci95": [round(float(ci.low), 5), round(float(ci.high), 5)]}
    return out


def rank_targets(ranks_of: Ranks, es: EvalSet, n_items: int, batch_size: int = 256) -> np.ndarray:
    """Run a scorer over an eval set in batches: each user's target rank."""
    if not es.users:
        return np.zeros(0, np.int64)
    return np.concatenate([
        ranks_of(es.tokens[i:i + batch_size], seen_mask(es, slice(i, i + batch_size), n_items),
                 es.target[i:i + batch_size])
        for i in range(0, len(es.users), batch_size)])


def cold_targets(es: EvalSet, known: np.ndarray) -> np.ndarray:
    """Which users' targets are items that were never a training target."""
    return np.array([t >= len(known) or known[t] == 0 for t in es.target], dtype=bool)


def evaluate_ranks(ranks_of: Ranks, es: EvalSet, n_items: int, known: np.ndarray | None = None,
                   batch_size: int = 256) -> dict[str, float]:
    """Run a scorer over an eval set in batches and summarise its ranks."""
    ranks = rank_targets(ranks_of, es, n_items, batch_size)
    return metrics_from_ranks(ranks, None if known is None else cold_targets(es, known))


def _ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank = items scored above the target plus half the others tied with it (random
    tie-breaking in expectation: cold items known only by metadata can tie exactly).
    Unrankable targets (ids beyond the table) miss.
    """
    n = scores.shape[1]
    ok = targets < n
    tscore = np.where(ok, scores[np.arange(len(targets)), np.minimum(targets, n - 1)], np.inf)
    above = (scores > tscore[:, None]).sum(1)
    tied = (scores == tscore[:, None]).sum(1) - 1
    return np.where(ok, above + tied // 2, n)


def torch_ranker(model: FoundationModel, device: str = "cpu") -> Ranks:
    """Scorer over the eager model."""
    model.eval()

    def ranks(tokens: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
        batch = {f: torch.from_numpy(tokens[..., i]).to(device) for i, f in enumerate(FACETS)}
        with torch.no_grad():
            scores = model.score(batch, torch.from_numpy(mask).to(device))
        return _ranks_from_scores(scores.float().cpu().numpy(), targets)
    return ranks


def popularity_ranker(corpus: Corpus, split: Split) -> Ranks:
    """Most-popular baseline: training interaction counts, the same exclusions."""
    counts = np.zeros(corpus.n_items, np.float32)
    known = known_items(corpus, split)
    positive = corpus.positive_ids()
    for user, end in split.train.items():
        seq = corpus.sequences[user][:end]
        np.add.at(counts, seq[np.isin(seq[:, 1], positive), 0], 1.0)
    counts *= known > 0  # cold items were never training targets
    counts += np.linspace(0, 1e-3, len(counts), dtype=np.float32)[::-1]  # stable tie-break

    def ranks(tokens: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
        scores = np.where(mask > 0, -np.inf, counts[None, :]).astype(np.float32)
        scores[:, :2] = -np.inf
        return _ranks_from_scores(scores, targets)
    return ranks


def onnx_ranker(path: Path, threads: int | None = None) -> Ranks:
    """Scorer over an exported ONNX file: the rank is the target's place in ``top_ids``
    (targets outside the top k count as rank k, a miss for every K <= k).
    """
    from models.onnx_runtime import OnnxRanker

    runner = OnnxRanker(path, threads=threads)
    if runner.k < max(KS):
        raise ValueError(f"{path} was exported with k={runner.k}; need k >= {max(KS)}")

    def ranks(tokens: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
        batch = {f: tokens[..., i] for i, f in enumerate(FACETS)}
        _, ids, _ = runner.rank(batch, mask)
        hit = ids == targets[:, None]
        return np.where(hit.any(1), hit.argmax(1), runner.k)
    return ranks


def evaluate_dir(model_dir: Path, corpus: Corpus, split_name: str = "test",
                 ablation_dir: Path | None = None, onnx_path: Path | None = None,
                 int8: bool = False) -> dict[str, object]:
    """``marquee evaluate``: the model, its baselines and its exports on the same split."""
    import tempfile

    from models.checkpoint import load_checkpoint
    from models.data import eval_set, leave_one_out
    from models.export import export_checkpoint

    ckpt = load_checkpoint(model_dir)
    split = leave_one_out(corpus)
    cuts = split.test if split_name == "test" else split.valid
    known = known_items(corpus, split)
    n_items, max_len = ckpt.config.n_items, ckpt.config.max_len
    if corpus.n_items > n_items:
        raise ValueError(f"the data has {corpus.n_items} item ids, model {model_dir} only "
                         f"{n_items}: evaluate on the data it was trained on")
    es = eval_set(corpus, cuts, max_len)
    out: dict[str, object] = {"split": split_name, "users": len(es.users), "items": n_items,
                              "model_version": ckpt.version}
    cold = cold_targets(es, known)
    ranks = {"model": rank_targets(torch_ranker(ckpt.model), es, n_items)}
    blend = ckpt.config.mtp_blend
    if blend and len(ckpt.model.mtp_proj):
        # The same trunk ranking by its next-item state alone: what the look-ahead adds, with
        # no training noise between the two.
        ckpt.config.mtp_blend = 0.0
        ranks["without_lookahead"] = rank_targets(torch_ranker(ckpt.model), es, n_items)
        ckpt.config.mtp_blend = blend
    ranks["most_popular"] = rank_targets(popularity_ranker(corpus, split), es, n_items)
    ablation_dir = ablation_dir or (model_dir / "ablation" if (model_dir / "ablation").exists()
                                    else None)
    if ablation_dir is not None:
        abl = load_checkpoint(ablation_dir)
        abl_es = es if abl.config.max_len == max_len else eval_set(corpus, cuts, abl.config.max_len)
        ranks["item_only"] = rank_targets(torch_ranker(abl.model), abl_es, n_items)
    out.update({name: metrics_from_ranks(r, cold) for name, r in ranks.items()})
    out["model_minus"] = {name: paired_difference(ranks["model"], ranks[name])
                          for name in ("item_only", "without_lookahead") if name in ranks}
    if onnx_path is not None:
        out["onnx"] = evaluate_ranks(onnx_ranker(onnx_path), es, n_items, known)
    if int8:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_checkpoint(ckpt, Path(tmp) / "fp32.onnx")
            q8 = export_checkpoint(ckpt, Path(tmp) / "int8.onnx", int8=True)
            out["onnx_fp32"] = evaluate_ranks(onnx_ranker(fp32), es, n_items, known)
            out["onnx_int8"] = evaluate_ranks(onnx_ranker(q8), es, n_items, known)
            out["int8_size_ratio"] = round(q8.stat().st_size / fp32.stat().st_size, 3)
        a, b = out["onnx_fp32"], out["onnx_int8"]
        out["int8_change"] = {k: round(b[k] - a[k], 5) for k in a  # type: ignore[index]
                              if k.startswith(("hr@", "ndcg@"))}
    return out


def compare_trainings(pairs: list[tuple[Path, Path]], corpus: Corpus,
                      split_name: str = "test") -> dict[str, object]:
    """``marquee compare``: several trainings of a model against their item-only ablations
    (one pair per seed) on the same split. Per pair, the paired lead over test users; over the
    pairs, the mean lead with a 95% t-interval across trainings, which carries the training
    noise a single pair's interval leaves out. ``lookahead``: the same for each model's lead
    over its own next-item state (0 where validation chose no blend), free of training noise
    within a pair.
    """
    if not pairs:
        raise ValueError("give at least one model and its ablation")
    runs = []
    for model_dir, ablation_dir in pairs:
        result = evaluate_dir(model_dir, corpus, split_name, ablation_dir=ablation_dir)
        runs.append({"model_dir": str(model_dir), "ablation_dir": str(ablation_dir),
                     **{k: result[k] for k in ("model", "item_only", "model_minus")}})
    keys = [f"{m}@{k}" for k in KS for m in ("hr", "ndcg")]
    mean: dict[str, dict[str, object]] = {}
    lookahead: dict[str, dict[str, object]] = {}
    for key in keys:
        mean[key] = {
            "model": round(float(np.mean([r["model"][key] for r in runs])), 5),
            "item_only": round(float(np.mean([r["item_only"][key] for r in runs])), 5),
            **over_trainings([r["model_minus"]["item_only"][key]["diff"] for r in runs])}
        lookahead[key] = over_trainings([
            r["model_minus"]["without_lookahead"][key]["diff"]
            if "without_lookahead" in r["model_minus"] else 0.0 for r in runs])
    return {"split": split_name, "trainings": len(runs), "mean": mean,
            "lookahead": lookahead, "runs": runs}


def over_trainings(leads: list[float]) -> dict[str, object]:
    """Mean of per-training leads, how many are ahead, and (with two or more) a 95%
    t-interval of the mean across trainings.
    """
    from scipy.stats import t as student_t

    x = np.asarray(leads, np.float64)
    out: dict[str, object] = {"diff": round(float(x.mean()), 5),
                              "trainings_ahead": f"{int((x > 0).sum())}/{len(x)}"}
    if len(x) > 1:
        half = float(student_t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
        out["ci95_over_trainings"] = [round(float(x.mean()) - half, 5),
                                      round(float(x.mean()) + half, 5)]
    return out
