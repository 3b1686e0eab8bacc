"""``marquee bench experiments``: how many simulated requests A/B and team-draft interleaving
each need to tell a strong model from a weaker one at p < 0.01.

The pair (``infra.model_pair``: the same model trained on every user, and on a tenth of them)
ranks every member once through the service's own ``Ranker`` (features from the Feast store,
ONNX inference, exposure adjustment, goal re-ranker), in process. Then, per seed, a stream of
requests from randomly drawn members of the simulated audience (``infra.audience.react``):

- **interleave**: the two lists team-draft interleaved (``serve.experiments.team_draft``, a
  coin seeded per request), each request credited to the team with more played items (the
  flow's rule); the sign test of the decided requests (``infra.stats.sign_test``);
- **ab**: members split by the service's stable hash (``serve.experiments.allocate``), plays
  per impression with impressions as independent trials (``infra.stats.diff_proportions``):
  what a test that ignores the assignment unit would claim;
- **ab_users**: the same A/B stream tested with users as the unit (the delta method,
  ``infra.stats.diff_ratios_clustered``), the report's test: what an A/B that assigns users
  can honestly claim.

**Fixed horizons, not peeking.** Each test is taken once at each of a geometric grid of
request counts (a stream's prefix, so one stream per seed serves every horizon). A design
*needs* the smallest horizon at which at least half the seeds give p < 0.01 with the strong
model ahead: the median seed's answer. The same runs with the weak model on both sides (A/A)
give each test's false-decision rate at those horizons, which should be about 1%.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra import stats
from infra.audience import Behaviour, Member, members, react
from infra.model_pair import ModelPair, PairConfig, build_pair
from infra.synthetic import SyntheticWorld
from serve.experiments import allocate, team_draft

ALPHA = 0.01
ARMS = ("strong", "weak")
DESIGNS = ("interleave", "ab", "ab_users")


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    seeds: int = 9
    k: int = 10
    first: int = 20  # the smallest horizon (requests)
    factor: float = 1.25  # each horizon this much longer than the last
    max_requests: int = 20_000
    alpha: float = ALPHA

    def horizons(self) -> list[int]:
        """The request counts at which every test is taken."""
        out, n = [], float(self.first)
        while round(n) <= self.max_requests:
            if not out or round(n) != out[-1]:
                out.append(round(n))
            n *= self.factor
        return out


Trace = dict[str, list[tuple[float, bool]]]  # design -> per horizon (p, strong ahead)


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


def run_ab(crowd: list[Member], lists: dict[str, dict[str, list[str]]], titles: dict,
           seed: int, cfg: BenchConfig, behaviour: Behaviour) -> Trace:
    """One A/B stream by user, both tests at every horizon."""
    rng = random.Random(f"ab:{seed}")
    index = {m.user_id: i for i, m in enumerate(crowd)}
    plays = {arm: np.zeros(len(crowd)) for arm in ARMS}
    shown = {arm: np.zeros(len(crowd)) for arm in ARMS}
    out: Trace = {"ab": [], "ab_users": []}
    horizons = cfg.horizons()
    for n in range(1, horizons[-1] + 1):
        member = crowd[rng.randrange(len(crowd))]
        arm = ARMS[allocate(f"bench-{seed}", member.user_id, [1, 1])]
        events = react(member, lists[arm][member.user_id], titles, rng, behaviour)
        u = index[member.user_id]
        shown[arm][u] += sum(e["action"] == "impression" for e in events)
        plays[arm][u] += sum(e["action"] == "play" for e in events)
        if n not in horizons:
            continue
        s_in, w_in = shown["strong"] > 0, shown["weak"] > 0
        for name, d in (
                ("ab", stats.diff_proportions(int(plays["strong"].sum()),
                                              int(shown["strong"].sum()),
                                              int(plays["weak"].sum()),
                                              int(shown["weak"].sum()))),
                ("ab_users", stats.diff_ratios_clustered(
                    plays["strong"][s_in], shown["strong"][s_in], plays["weak"][w_in],
                    shown["weak"][w_in]))):
            p = 1.0 if d.p is None or math.isnan(d.value) else d.p
            out[name].append((p, d.value > 0))
    return out


def run_interleave(crowd: list[Member], lists: dict[str, dict[str, list[str]]], titles: dict,
                   seed: int, cfg: BenchConfig, behaviour: Behaviour) -> Trace:
    """One stream of team-draft interleaved requests, the sign test at every horizon."""
    rng = random.Random(f"il:{seed}")
    wins = dict.fromkeys(ARMS, 0)
    out: Trace = {"interleave": []}
    horizons = cfg.horizons()
    for n in range(1, horizons[-1] + 1):
        member = crowd[rng.randrange(len(crowd))]
        merged = team_draft(lists["strong"][member.user_id], lists["weak"][member.user_id],
                            f"{seed}:{n}", limit=cfg.k)
        team = {item: ARMS[t] for item, t in merged}
        events = react(member, [item for item, _ in merged], titles, rng, behaviour)
        got = {arm: len({e["item_id"] for e in events if e["action"] == "play"
                         and team[e["item_id"]] == arm}) for arm in ARMS}
        if got["strong"] != got["weak"]:
            wins["strong" if got["strong"] > got["weak"] else "weak"] += 1
        if n in horizons:
            out["interleave"].append((stats.sign_test(wins["strong"], wins["weak"]),
                                      wins["strong"] > wins["weak"]))
    return out


def needed(traces: list[list[tuple[float, bool]]], horizons: list[int], alpha: float,
           share: float = 0.5) -> int | None:
    """The smallest horizon at which at least ``share`` of the seeds decide for the strong
    model (p < alpha, strong ahead); None if no horizon does.
    """
    for i, n in enumerate(horizons):
        if sum(t[i][0] < alpha and t[i][1] for t in traces) >= share * len(traces):
            return n
    return None


def run_bench(data_dir: Path, out: Path | None = None, config: BenchConfig | None = None,
              pair_config: PairConfig | None = None,
              behaviour: Behaviour | None = None) -> dict[str, Any]:
    """Build (or reuse) the model pair under ``data_dir``, run both designs on every seed;
    the figures (also written to ``out/bench_experiments.json``).
    """
    cfg, behaviour = config or BenchConfig(), behaviour or Behaviour()
    t0 = time.monotonic()
    pair = load_pair(data_dir, pair_config)
    build_s = time.monotonic() - t0
    lists = served_lists(pair, cfg.k)
    world = SyntheticWorld(pair.world)
    titles = {t.item_id: t for t in world.catalogue}
    crowd = [m for m in members(world) if m.user_id in lists["strong"]]
    twin = {"strong": lists["weak"], "weak": lists["weak"]}  # A/A: the weak model twice
    traces: dict[str, list] = {d: [] for d in DESIGNS}
    same: dict[str, list] = {d: [] for d in DESIGNS}
    for seed in range(cfg.seeds):
        for target, pair_lists in ((traces, lists), (same, twin)):
            for run in (run_ab, run_interleave):
                for design, trace in run(crowd, pair_lists, titles, seed, cfg, behaviour).items():
                    target[design].append(trace)
    horizons = cfg.horizons()
    med = {d: needed(traces[d], horizons, cfg.alpha) for d in DESIGNS}
    p80 = {d: needed(traces[d], horizons, cfg.alpha, 0.8) for d in DESIGNS}
    looks = len(horizons) * cfg.seeds
    result = {
        "config": asdict(cfg), "horizons": horizons,
        "pair": {**asdict(pair_config or PairConfig()), "metrics": pair.metrics},
        "behaviour": asdict(behaviour), "members": len(crowd),
        "median_requests": med, "requests_80pct": p80,
        "ratio_over_interleave": {d: med[d] / med["interleave"] for d in DESIGNS[1:]
                                  if med[d] and med["interleave"]},
        "aa_false_decision_rate": {d: sum(p < cfg.alpha for t in ts for p, _ in t) / looks
                                   for d, ts in same.items()},
        "first_decision_per_seed": {d: [next((n for n, (p, up) in zip(horizons, t,
                                                                      strict=True)
                                              if p < cfg.alpha and up), None) for t in ts]
                                    for d, ts in traces.items()},
        "pair_build_s": round(build_s, 1), "seconds": round(time.monotonic() - t0, 1)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_experiments.json").write_text(json.dumps(result, indent=2))
    return result


def load_pair(data_dir: Path, pair_config: PairConfig | None = None) -> ModelPair:
    """The pair under ``data_dir``, built there first unless a build with the same config is
    already there.
    """
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
    cfg = result["config"]
    lines = [f"requests until the median of {cfg['seeds']} seeds decides for the strong model "
             f"at p < {cfg['alpha']:g} ({result['members']} members; horizons "
             f"{result['horizons'][0]}..{result['horizons'][-1]} x{cfg['factor']}):"]
    for d in DESIGNS:
        med, p80 = result["median_requests"][d], result["requests_80pct"][d]
        ratio = result["ratio_over_interleave"].get(d)
        lines.append(f"  {d:<11}{_n(med):>8}" + (f" ({ratio:.1f}x)" if ratio else " " * 7)
                     + f"   80% of seeds: {_n(p80):>7}   A/A false decisions "
                     f"{result['aa_false_decision_rate'][d]:.1%}")
    return "\n".join(lines)


def _n(n: int | None) -> str:
    return f"{n:,}" if n is not None else "never"
