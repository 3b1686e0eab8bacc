"""``marquee bench experiments``: how many simulated requests A/B and team-draft interleaving
each need to tell a strong model from a weaker one at p < 0.01.

The pair (``infra.model_pair``: the same model trained on every user, and on a tenth of them)
ranks every member once through the service's own ``Ranker`` (features from the Feast store,
ONNX inference, exposure adjustment, goal re-ranker), in process. Then, per seed, a stream of
requests from randomly drawn members of the simulated audience (``infra.audience.react``):

- **A/B**: each member is in one arm by the service's stable hash (``serve.experiments``);
  after every request the report's test (plays per impression, pooled two-proportion z-test,
  ``infra.stats``) is checked;
- **interleaving**: the two lists team-draft interleaved (``serve.experiments.team_draft``,
  a coin seeded per request), the request credited to the team with more played items (the
  flow's rule), the sign test of the decided requests checked after every request.

The figure is the first request count at which p < 0.01 (capped at ``max_requests``; a run
that never gets there is reported as censored), median over seeds, and the direction of the
decision. Both designs are peeked at after every request, so each is a sequential stopping
time with the same optimism; the ratio compares like with like. The end-to-end test proves
the real path (service -> rankings log -> flow -> report) gives the same verdicts.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infra import stats
from infra.audience import Behaviour, Member, members, react
from infra.model_pair import ModelPair, PairConfig, build_pair
from infra.synthetic import SyntheticWorld
from serve.experiments import allocate, team_draft

ALPHA = 0.01
ARMS = ("strong", "weak")


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    seeds: int = 7
    k: int = 10
    max_requests: int = 40_000
    check_every: int = 1  # requests between tests (1: after every request)
    alpha: float = ALPHA


def served_lists(pair: ModelPair, k: int) -> dict[str, dict[str, list[str]]]:
    """Each model's served top ``k`` for every member: model -> user -> item ids."""
    from feature_repo.store import open_store
    from models.onnx_runtime import OnnxRanker
    from serve.config import ServeSettings
    from serve.ranker import Ranker
    from serve.schemas import RankRequest

    store = open_store(data_dir=pair.root, online="sqlite")
    out: dict[str, dict[str, list[str]]] = {}
    for name, path in (("strong", pair.strong), ("weak", pair.weak)):
        settings = ServeSettings(data_dir=pair.root, model_path=path, online_store="sqlite",
                                 rankings_log=False)
        ranker = Ranker(settings, store, OnnxRanker(path, threads=1))
        lists = {}
        for user in pair.users:
            p = ranker.prepare(RankRequest(user_id=user, k=k))
            answer = ranker.finish(p, ranker.infer([p])[0])
            lists[user] = [i.item_id for i in answer.items]
        out[name] = lists
    return out


@dataclass
class Run:
    """One design on one seed: requests until p < alpha (None: not within the cap)."""

    design: str
    seed: int
    requests: int | None
    winner: str | None
    p: float


def run_ab(crowd: list[Member], lists: dict[str, dict[str, list[str]]], titles: dict,
           seed: int, cfg: BenchConfig, behaviour: Behaviour) -> Run:
    """A/B by user: plays per impression, strong vs weak."""
    rng = random.Random(f"ab:{seed}")
    shown, played = dict.fromkeys(ARMS, 0), dict.fromkeys(ARMS, 0)
    p = 1.0
    for n in range(1, cfg.max_requests + 1):
        member = crowd[rng.randrange(len(crowd))]
        arm = ARMS[allocate(f"bench-{seed}", member.user_id, [1, 1])]
        events = react(member, lists[arm][member.user_id], titles, rng, behaviour)
        shown[arm] += sum(e["action"] == "impression" for e in events)
        played[arm] += sum(e["action"] == "play" for e in events)
        if n % cfg.check_every == 0 and min(shown.values()) > 0:
            d = stats.diff_proportions(played["strong"], shown["strong"], played["weak"],
                                       shown["weak"])
            p = d.p if d.p is not None else 1.0
            if p < cfg.alpha:
                return Run("ab", seed, n, "strong" if d.value > 0 else "weak", p)
    return Run("ab", seed, None, None, p)


def run_interleave(crowd: list[Member], lists: dict[str, dict[str, list[str]]], titles: dict,
                   seed: int, cfg: BenchConfig, behaviour: Behaviour) -> Run:
    """Team-draft interleaving of strong and weak in every list; credit per request."""
    rng = random.Random(f"il:{seed}")
    wins = dict.fromkeys(ARMS, 0)
    p = 1.0
    for n in range(1, cfg.max_requests + 1):
        member = crowd[rng.randrange(len(crowd))]
        merged = team_draft(lists["strong"][member.user_id], lists["weak"][member.user_id],
                            f"{seed}:{n}", limit=cfg.k)
        team = {item: ARMS[t] for item, t in merged}
        events = react(member, [item for item, _ in merged], titles, rng, behaviour)
        got = {arm: len({e["item_id"] for e in events if e["action"] == "play"
                         and team[e["item_id"]] == arm}) for arm in ARMS}
        if got["strong"] != got["weak"]:
            wins["strong" if got["strong"] > got["weak"] else "weak"] += 1
        if n % cfg.check_every == 0:
            p = stats.sign_test(wins["strong"], wins["weak"])
            if p < cfg.alpha:
                winner = "strong" if wins["strong"] > wins["weak"] else "weak"
                return Run("interleave", seed, n, winner, p)
    return Run("interleave", seed, None, None, p)


def _median(runs: list[Run], cap: int) -> float:
    """Median requests; a censored run counts as the cap (so the median is a lower bound if
    half or more are censored)."""
    return statistics.median(r.requests if r.requests is not None else cap for r in runs)


def run_bench(data_dir: Path, out: Path | None = None, config: BenchConfig | None = None,
              pair_config: PairConfig | None = None,
              behaviour: Behaviour = Behaviour()) -> dict[str, Any]:
    """Build (or reuse) the model pair under ``data_dir``, run both designs on every seed;
    the figures (also written to ``out/bench_experiments.json``)."""
    cfg = config or BenchConfig()
    t0 = time.monotonic()
    pair = load_pair(data_dir, pair_config)
    build_s = time.monotonic() - t0
    lists = served_lists(pair, cfg.k)
    world = SyntheticWorld(pair.world)
    titles = {t.item_id: t for t in world.catalogue}
    crowd = [m for m in members(world) if m.user_id in lists["strong"]]
    runs: dict[str, list[Run]] = {"ab": [], "interleave": []}
    for seed in range(cfg.seeds):
        runs["ab"].append(run_ab(crowd, lists, titles, seed, cfg, behaviour))
        runs["interleave"].append(run_interleave(crowd, lists, titles, seed, cfg, behaviour))
    med = {d: _median(r, cfg.max_requests) for d, r in runs.items()}
    result = {
        "config": asdict(cfg), "pair": {**asdict(pair_config or PairConfig()),
                                        "metrics": pair.metrics},
        "behaviour": asdict(behaviour), "members": len(crowd),
        "median_requests": med,
        "ratio_ab_over_interleave": med["ab"] / med["interleave"] if med["interleave"] else None,
        "runs": {d: [asdict(r) for r in rs] for d, rs in runs.items()},
        "strong_preferred": {d: sum(r.winner == "strong" for r in rs) for d, rs in runs.items()},
        "censored": {d: sum(r.requests is None for r in rs) for d, rs in runs.items()},
        "pair_build_s": round(build_s, 1), "seconds": round(time.monotonic() - t0, 1)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_experiments.json").write_text(json.dumps(result, indent=2))
    return result


def load_pair(data_dir: Path, pair_config: PairConfig | None = None) -> ModelPair:
    """The pair under ``data_dir``, built there first unless a build with the same config is
    already there."""
    cfg = pair_config or PairConfig()
    mark = data_dir / "pair.json"
    if mark.exists() and json.loads(mark.read_text()).get("config") == asdict(cfg):
        saved = json.loads(mark.read_text())
        return ModelPair(data_dir, data_dir / "models" / "strong.onnx",
                         data_dir / "models" / "weak.onnx", saved["users"],
                         cfg.world(), saved["metrics"])
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} holds something else than this model pair; give an "
                         "empty or missing folder (or the one a previous run built)")
    pair = build_pair(data_dir, cfg)
    mark.write_text(json.dumps({"config": asdict(cfg), "users": pair.users,
                                "metrics": pair.metrics}))
    return pair


def summary(result: dict[str, Any]) -> str:
    """The figures in a few lines."""
    med, cap = result["median_requests"], result["config"]["max_requests"]
    seeds = result["config"]["seeds"]
    lines = [f"requests to p < {result['config']['alpha']:g} (median of {seeds} seeds, "
             f"{result['members']} members, cap {cap:,}):"]
    for design in ("interleave", "ab"):
        per = ", ".join(str(r["requests"]) if r["requests"] is not None else f">{cap}"
                        for r in result["runs"][design])
        lines.append(f"  {design:<11}{med[design]:>9,.0f}   strong preferred in "
                     f"{result['strong_preferred'][design]}/{seeds}; runs: {per}")
    ratio = result["ratio_ab_over_interleave"]
    if ratio:
        lines.append(f"  A/B needs {ratio:.1f}x the requests of interleaving")
    return "\n".join(lines)
