"""Ranking for one user, as plain classes the Ray deployment calls (and tests call directly).

Per request: the user's token sequence from the Feast online store (``user_tokens``) ->
in-session events tokenized with the flow's own ``tokenize_session`` -> the ONNX model
(batched by the caller) -> candidates from the full-catalogue scores minus seen and unreleased
titles -> exposure-aware adjustment from ``item_stats`` -> the goal re-ranker -> response.

Experiments: each request gets its ``arms``, the variants that rank it (the default model
without an experiment, the user's A/B arm, or two teams to interleave; ``serve.experiments``),
each an ONNX model of its own or the popular control. Inference batches per model; the teams'
candidate lists are team-draft interleaved before the re-rank, and every item keeps its team.

Degrade, don't fail: an unknown user gets popular and fresh titles; an unreachable feature
store leaves the in-session events only (``degraded``); no model gives popular titles
(``degraded``) while ``/readyz`` says not ready.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from serve import metrics
from serve.config import ServeSettings
from serve.experiment_config import Experiment, Mode
from serve.experiments import allocate, team_draft
from serve.rerank import Candidate, GoalReranker, RerankResult
from serve.schemas import Check, RankedItemOut, RankRequest, RankResponse
from streams.contract.catalogue import read_catalogue
from streams.contract.layout import DataLayout
from streams.contract.tokens import DAY_MS, FACETS, Vocab

log = logging.getLogger(__name__)
SEEN_ACTIONS = ("watch", "complete", "abandon")
DEFAULT_VARIANT = "default"  # the variant name of every list when no experiment runs
POPULAR_VERSION = "popular"  # the model version of the popular-titles control


@dataclass
class ItemInfo:
    """What ranking needs to know about a title: its catalogue fields, refreshed by the
    ``item_stats`` columns of the same names.
    """

    genre: str = ""
    kind: str = ""
    series: str = ""
    duration_s: int = 0
    release_ms: int = 0
    plays_24h: int = 0
    impressions_24h: int = 0

    def update(self, row: dict[str, Any]) -> None:
        """Take the ``item_stats`` values this record holds: counters always (a missing one is
        0), catalogue fields only when the store knows them (an empty one keeps the catalogue's).
        """
        for name in ("plays_24h", "impressions_24h"):
            setattr(self, name, int(row.get(name) or 0))
        for name in ("genre", "kind", "duration_s", "release_ms"):
            value = row.get(name)
            if value:
                setattr(self, name, type(getattr(self, name))(value))


@dataclass(frozen=True)
class Arm:
    """One variant as the ranker uses it: its model (None: the popular control, or no model
    loaded yet) and the model's id tables, built once when the model is loaded.
    """

    name: str
    model: Any | None = None
    control: bool = False  # popular titles by design (not a degraded answer)
    items: list[str] = field(default_factory=list)  # model id -> item id
    ids: dict[str, int] = field(default_factory=dict)  # item id -> model id (>= 2)
    release: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def version(self) -> str:
        """The model version this arm serves (``popular`` for the control)."""
        if self.model is not None:
            return self.model.version
        return POPULAR_VERSION if self.control else "none"


@dataclass(frozen=True)
class Plan:
    """The running experiment with its variants' arms (swapped whole on a config change)."""

    experiment: Experiment
    arms: dict[str, Arm]
    weights: tuple[float, ...]


@dataclass
class Prepared:
    """One request after feature assembly, ready for (batched) inference."""

    request: RankRequest
    k: int
    seq: dict[str, list[int]]  # facet -> ids, oldest first
    history: set[str]  # item ids the user watched (stored + session)
    now_ms: int
    degraded: bool = False
    fallback: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() after which it is not worth computing
    candidates: list[str] | None = None  # the request's, known to the catalogue, deduplicated
    unknown: list[str] = field(default_factory=list)  # the request's, known to no catalogue
    excluded: int = 0  # known candidates left out: watched or not released yet
    request_id: str = ""
    arms: list[Arm] = field(default_factory=list)  # one, or the two interleaved teams
    plan: Plan | None = None  # the experiment that chose ``arms`` (None: no experiment)


_SHOWN = {segment: metrics.SHOWN.labels(segment) for segment in ("all", "popular", "new",
                                                                  "cold")}


def _reader(store: Any | None) -> Any:
    """The feature store's fast reader (None without a store: every read degrades)."""
    if store is None:
        return None
    from feature_repo.store import FeatureReader

    try:
        return FeatureReader(store)
    except Exception as exc:  # noqa: BLE001 - reads then fail, and each one degrades
        log.warning("feature store reader unavailable: %s", exc)
        return None


class ItemCatalogue:
    """Title metadata and exposure stats, re-read from the feature store every ``ttl`` seconds
    (stats are global, not per user, so one read serves every request in between).
    """

    def __init__(self, settings: ServeSettings, store: Any | None, item_ids: list[str]) -> None:
        self.settings = settings
        self.store = store
        self.items: dict[str, ItemInfo] = {}
        self.reader = _reader(store)
        self._read_at = -math.inf
        self._lock = threading.Lock()
        for t in read_catalogue(DataLayout(settings.data_dir).catalogue).values():
            self.items[t.item_id] = ItemInfo(t.genre, t.kind, t.series_id, t.duration_s,
                                             t.release_ms)
        for item_id in item_ids:
            self.items.setdefault(item_id, ItemInfo())
        self.mean_impressions = 0.0
        self.overexposed_at = math.inf

    def refresh(self, force: bool = False) -> bool:
        """Re-read item stats if stale; False when the store could not be read."""
        if self.store is None:
            return False
        if not force and time.monotonic() - self._read_at < self.settings.item_stats_ttl_s:
            return True
        with self._lock:
            try:
                rows = self.reader.items(list(self.items))
            except Exception as exc:  # noqa: BLE001 - any store failure means "degrade"
                log.warning("item stats unavailable: %s", exc)
                self._read_at = time.monotonic()  # do not hammer a dead store
                return False
            for item_id, row in rows.items():
                self.items[item_id].update(row)
            impressions = np.array([i.impressions_24h for i in self.items.values()], float)
            self.mean_impressions = float(impressions.mean()) if len(impressions) else 0.0
            positive = impressions[impressions > 0]
            self.overexposed_at = (float(np.quantile(positive, self.settings.overexposed_quantile))
                                   if len(positive) else math.inf)
            self._read_at = time.monotonic()
        return True


class Ranker:
    """Feature assembly, inference, candidates, exposure adjustment and re-ranking."""

    def __init__(self, settings: ServeSettings, store: Any | None = None,
                 model: Any | None = None) -> None:
        self.settings = settings
        self.store = store
        vocab_path = DataLayout(settings.data_dir).vocab
        self.vocab = (Vocab.load(vocab_path) if vocab_path.exists()
                      else model.vocab if model is not None else Vocab())
        ids = list(self.vocab.tables["item"]) or (list(model.vocab.tables["item"]) if model
                                                  else [])
        self.catalogue = ItemCatalogue(settings, store, ids)
        self.reader = self.catalogue.reader
        self._names = self.vocab.items_by_id()  # serving never grows the vocabulary
        self._watched = {self.vocab.tables["action"][a] for a in SEEN_ACTIONS
                         if a in self.vocab.tables["action"]}
        self.reranker = GoalReranker(settings.rerank, settings.constraints)
        self._shown: set[str] = set()
        self._store_retry_at = -math.inf  # while the store is away: when to try it again
        self._plan: Plan | None = None  # the running experiment (swapped whole)
        self._published: set[str] = set()  # versions marquee_model_info says are serving
        self._set_model(model)
        self._publish_versions()

    # ---- model ---------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The served model's version ("none" when no model is loaded)."""
        return self.default.version

    @property
    def plan(self) -> Plan | None:
        """The running experiment (None: the default model ranks every request)."""
        return self._plan

    @plan.setter
    def plan(self, plan: Plan | None) -> None:
        self._plan = plan
        self._publish_versions()

    def _publish_versions(self) -> None:
        """``marquee_model_info``: 1 for every model version that ranks requests now (each
        variant's while an experiment runs, else the default model's), 0 for the ones before.
        """
        arms = self._plan.arms.values() if self._plan is not None else [self.default]
        now = {a.version for a in arms if a.model is not None}
        for version in self._published - now:
            metrics.MODEL_INFO.labels(version).set(0)
        for version in now:
            metrics.MODEL_INFO.labels(version).set(1)
        self._published = now

    @property
    def model(self) -> Any | None:
        """The model of ``model_path`` (what serves when no experiment runs)."""
        return self.default.model

    def arm(self, name: str, model: Any | None, control: bool = False) -> Arm:
        """``model`` with its id tables for this catalogue (``model=None``: no model)."""
        if model is None:
            return Arm(name, None, control)
        names = model.vocab.items_by_id()
        ids = {item: i for i, item in enumerate(names) if i >= 2}
        release = np.zeros(model.n_items, dtype=np.int64)
        for item, i in ids.items():
            if i < model.n_items and item in self.catalogue.items:
                release[i] = self.catalogue.items[item].release_ms
        return Arm(name, model, control, names, ids, release)

    def _set_model(self, model: Any | None) -> None:
        self.default = self.arm(DEFAULT_VARIANT, model)

    def load_model(self, path: Path, threads: int | None = None) -> str:
        """Load an ONNX model and swap it in (the old one serves until the swap)."""
        model = self._open(path, threads)
        old = self.version
        self._set_model(model)
        self._publish_versions()
        log.info("model %s -> %s (%s)", old, model.version, path)
        return model.version

    def _open(self, path: Path, threads: int | None = None) -> Any:
        from models.onnx_runtime import OnnxRanker

        return OnnxRanker(path, threads=threads or self.settings.onnx_threads)

    def build_plan(self, experiment: Experiment | None) -> Plan | None:
        """Load the experiment's models (a file already loaded for the running plan or as
        the default model is reused, not opened again); swap it in with ``self.plan = ...``.
        """
        if experiment is None:
            return None
        loaded = {str(Path(a.model.path).resolve()): a.model
                  for a in [self.default, *(self.plan.arms.values() if self.plan else [])]
                  if a.model is not None}
        arms = {}
        for v in experiment.variants:
            if not v.is_model:
                arms[v.name] = self.arm(v.name, None, control=True)
                continue
            key = str(Path(v.model).resolve())
            if key not in loaded:
                loaded[key] = self._open(Path(v.model))
            arms[v.name] = self.arm(v.name, loaded[key])
        log.info("experiment %s (%s): %s", experiment.name, experiment.mode.value,
                 ", ".join(f"{n}={a.version}" for n, a in arms.items()))
        return Plan(experiment, arms, tuple(v.weight for v in experiment.variants))

    def arms_for(self, user_id: str) -> tuple[list[Arm], Plan | None]:
        """The variants that rank for this user now: the A/B arm of the user, the two
        interleaved teams, or the default model when no experiment runs.
        """
        plan = self.plan
        if plan is None:
            return [self.default], None
        arms = list(plan.arms.values())
        if plan.experiment.mode is Mode.INTERLEAVE:
            return arms, plan
        return [arms[allocate(plan.experiment.hash_salt, user_id, plan.weights)]], plan

    def checks(self) -> dict[str, Check]:
        """Each dependency as it is now: the model loaded, the feature store answering a
        read (a probe key, so it costs one lookup).
        """
        plan = self.plan
        if plan is not None:  # every request is ranked by the experiment's variants
            model = Check(ok=True, detail=f"experiment {plan.experiment.name}: " + ", ".join(
                f"{n}={a.version}" for n, a in plan.arms.items()))
        elif self.model is not None:
            model = Check(ok=True, detail=f"model {self.version}")
        else:
            model = Check(ok=False, detail="no model loaded; set model_path (marquee serve "
                          "--model) or roll one over")
        if self.store is None:
            return {"model": model, "feature_store": Check(
                ok=False, detail="not opened at start; see the replica log, check "
                "MARQUEE_ONLINE_STORE / the Redis URL")}
        t0 = time.perf_counter()
        try:
            self.reader.users(["__readyz__"])
            store = Check(ok=True, detail="read answered")
        except Exception as exc:  # noqa: BLE001 - any failure is "not reachable"
            store = Check(ok=False, detail=f"read failed: {exc}"[:300])
        store.latency_ms = (time.perf_counter() - t0) * 1e3
        return {"model": model, "feature_store": store}

    # ---- stage 1: features ---------------------------------------------------------------
    def prepare(self, req: RankRequest) -> Prepared:
        """The user's stored tokens plus their in-session events, as facet id sequences."""
        from streams.contract.tokenizer import tokenize_session

        t0 = time.perf_counter()
        k = req.k or self.settings.k_default
        if k > self.settings.k_max:
            raise ValueError(f"k={k} is more than k_max={self.settings.k_max}; ask for fewer")
        foreign = [e.event_id for e in req.events if e.user_id != req.user_id]
        if foreign:
            raise ValueError(f"events {foreign[:3]} belong to another user than {req.user_id}; "
                             "send only this user's events")
        seq: dict[str, list[int]] = {f: [] for f in FACETS}
        last_ts, degraded, fallback = None, False, None
        row = self._stored(req.user_id)
        if row is None:
            degraded, fallback = True, "feature_store_unavailable"
        else:
            seq = {f: list(row[f"{f}_seq"]) for f in FACETS}
            last_ts = row.get("last_ts") or None
        t1 = time.perf_counter()
        tokens = tokenize_session(list(req.events), self.vocab, last_ts)
        for tok in tokens:
            for f, v in zip(FACETS, tok.facet_ids(), strict=True):
                seq[f].append(v)
        names, watched = self._names, self._watched
        history = {names[i] for i, a in zip(seq["item"], seq["action"], strict=True)
                   if a in watched and 2 <= i < len(names)}
        history |= {e.item_id for e in req.events if e.item_id and e.action.value in
                    ("play", "stop", "complete")}
        times = [e.ts for e in req.events] + ([last_ts] if last_ts else [])
        now = max(times) if times else int(time.time() * 1000)
        if not seq["item"] and fallback is None:
            fallback = "unknown_user"
        arms, plan = self.arms_for(req.user_id)
        p = Prepared(req, k, seq, history, now, degraded, fallback,
                     {"features": t1 - t0, "tokenize": time.perf_counter() - t1},
                     request_id=uuid.uuid4().hex, arms=arms, plan=plan)
        if req.candidates is not None:  # an id no catalogue holds is reported, never ranked
            requested = list(dict.fromkeys(req.candidates))
            p.candidates = [c for c in requested if c in self.catalogue.items]
            p.unknown = [c for c in requested if c not in self.catalogue.items]
        return p

    def _stored(self, user_id: str) -> dict[str, Any] | None:
        """The user's stored row; None when the store is away. After a failed read the store
        is left alone for ``store_retry_s`` (each read would cost a timeout on the event loop),
        then the next request tries it: the outage ends with the first read that succeeds.
        """
        if self.store is None or time.monotonic() < self._store_retry_at:
            return None
        try:
            row = self.reader.users([user_id])[user_id]
        except Exception as exc:  # noqa: BLE001 - any store failure means "degrade"
            if self._store_retry_at == -math.inf:
                log.warning("feature store read failed (%s); degrading to in-session events, "
                            "trying again every %g s", exc, self.settings.store_retry_s)
            self._store_retry_at = time.monotonic() + self.settings.store_retry_s
            return None
        if self._store_retry_at != -math.inf:
            log.warning("feature store answers again; no longer degraded")
            self._store_retry_at = -math.inf
        return row

    # ---- stage 2: inference (batched) ----------------------------------------------------
    def infer(self, batch: list[Prepared]
              ) -> list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """One ONNX call per model for the requests that have a sequence: per request,
        variant name -> (user embedding, top ids, top scores); a variant without a model (or
        a request without a sequence) has no entry.
        """
        out: list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = [{} for _ in batch]
        groups: dict[int, list[tuple[int, Arm]]] = {}
        for i, p in enumerate(batch):
            if p.seq["item"]:
                for arm in p.arms:
                    if arm.model is not None:
                        groups.setdefault(id(arm.model), []).append((i, arm))
        for jobs in groups.values():
            t0 = time.perf_counter()
            model = jobs[0][1].model
            length = min(model.max_len, max(len(batch[i].seq["item"]) for i, _ in jobs))
            arrays = {f: np.zeros((len(jobs), length), np.int64) for f in FACETS}
            mask = np.zeros((len(jobs), model.n_items), np.float32)
            for row, (i, arm) in enumerate(jobs):
                p = batch[i]
                for f in FACETS:
                    tail = p.seq[f][-length:]
                    arrays[f][row, length - len(tail):] = tail
                mask[row, arm.release > p.now_ms] = 1.0  # not released yet
                seen = [arm.ids[n] for n in p.history if n in arm.ids]
                mask[row, [s for s in seen if s < model.n_items]] = 1.0
            emb, ids, scores = model.rank(arrays, mask)
            metrics.BATCH_SIZE.observe(len(jobs))
            spent = time.perf_counter() - t0
            for row, (i, arm) in enumerate(jobs):
                out[i][arm.name] = (emb[row], ids[row], scores[row])
                timings = batch[i].timings
                timings["inference"] = timings.get("inference", 0.0) + spent
        return out

    # ---- stage 3: candidates, exposure, re-rank ------------------------------------------
    def finish(self, p: Prepared,
               inferred: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None
               ) -> RankResponse:
        """Candidates per variant -> exposure adjustment -> (interleaving) -> goal re-rank ->
        the response.
        """
        t0 = time.perf_counter()
        stats_ok = self.catalogue.refresh()
        if not stats_ok and self.store is not None and not p.degraded:
            p.degraded, p.fallback = True, p.fallback or "feature_store_unavailable"
        if p.candidates is not None:  # the same titles a full ranking leaves out (after refresh)
            keep = [c for c in p.candidates if self._eligible(c, p)]
            p.excluded, p.candidates = len(p.candidates) - len(keep), keep
        lists = []
        for arm in p.arms:
            got = (inferred or {}).get(arm.name)
            if got is None:
                if arm.model is None and not arm.control:
                    p.degraded, p.fallback = True, "no_model"
                scored = self._popular(p)
            else:
                scored = self._scored(p, arm, *got)
            lists.append(self._candidates(scored, p))
        if len(lists) == 1:
            cands, teams = lists[0], None
        else:
            cands, teams = self._interleave(p, lists)
        t1 = time.perf_counter()
        result = self.reranker.rerank(cands, p.k, p.request.goal) if cands else None
        t2 = time.perf_counter()
        p.timings.update({"candidates": t1 - t0, "rerank": t2 - t1})
        return self._response(p, result, teams)

    def _interleave(self, p: Prepared, lists: list[list[Candidate]]
                    ) -> tuple[list[Candidate], dict[str, str]]:
        """Team-draft interleave the two variants' candidate lists (each best first, by its
        exposure-adjusted score) into one list scored by its interleaved rank, and the team
        of each item, for the re-ranker to choose from.
        """
        a, b = (sorted(c, key=lambda x: -x.score) for c in lists)
        by_id = {c.item_id: c for c in b} | {c.item_id: c for c in a}
        merged = team_draft([c.item_id for c in a], [c.item_id for c in b], p.request_id)
        names = (p.arms[0].name, p.arms[1].name)
        n = len(merged)
        cands = [replace(by_id[item], score=float(n - rank))
                 for rank, (item, _) in enumerate(merged)]
        return cands, {item: names[team] for item, team in merged}

    def _scored(self, p: Prepared, arm: Arm, emb: np.ndarray, ids: np.ndarray,
                scores: np.ndarray) -> list[tuple[str, float]]:
        model, model_ids = arm.model, arm.ids
        if p.candidates is not None:
            known = [c for c in p.candidates if c in model_ids and model_ids[c] < model.n_items]
            vecs = model.item_embeddings[[model_ids[c] for c in known]]
            got = dict(zip(known, (vecs @ emb).tolist(), strict=True))
            floor = min(got.values(), default=0.0) - 1.0  # cold titles: last, but rankable
            return [(c, got.get(c, floor)) for c in p.candidates]
        out, names = [], arm.items
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True):
            if s > -1e8 and 2 <= i < len(names):
                out.append((names[i], s))
        return out

    def _popular(self, p: Prepared) -> list[tuple[str, float]]:
        """Popular and fresh titles for a user the store does not know (or no model)."""
        pool = p.candidates if p.candidates is not None else list(self.catalogue.items)
        out = []
        for item_id in pool:
            info = self.catalogue.items.get(item_id, ItemInfo())
            if not self._eligible(item_id, p):
                continue
            fresh = 1.0 if 0 <= p.now_ms - info.release_ms < self.settings.new_title_days * DAY_MS \
                else 0.0
            out.append((item_id, math.log1p(info.plays_24h) + fresh))
        return out

    def _eligible(self, item_id: str, p: Prepared) -> bool:
        """Released by the request's time and not watched by the user (the model's mask)."""
        info = self.catalogue.items.get(item_id, ItemInfo())
        return info.release_ms <= p.now_ms and item_id not in p.history

    def _candidates(self, scored: list[tuple[str, float]], p: Prepared) -> list[Candidate]:
        """Each scored title with what the re-ranker's rules read (one pass, hoisted lookups:
        this runs for every title the model proposes, on every request).
        """
        items, default = self.catalogue.items, ItemInfo()
        watched_series = {items[h].series for h in p.history if h in items and items[h].series}
        lam, mean = self.settings.exposure_strength, self.catalogue.mean_impressions
        penalise = bool(lam and mean > 0)  # popularity-bias control: exposure above average
        over_at, new_ms, now, history = (self.catalogue.overexposed_at,
                                         self.settings.new_title_days * DAY_MS, p.now_ms,
                                         p.history)
        out = []
        for item_id, score in scored:
            info = items.get(item_id, default)
            if penalise:
                score -= lam * math.log1p(info.impressions_24h / mean)
            age = now - info.release_ms
            out.append(Candidate(item_id, float(score), info.genre, info.kind, info.series,
                                 info.duration_s, bool(0 <= age < new_ms and info.release_ms),
                                 info.impressions_24h >= over_at,
                                 item_id in history or info.series in watched_series))
        return out

    def _response(self, p: Prepared, result: RerankResult | None,
                  teams: dict[str, str] | None) -> RankResponse:
        items = result.items if result else []
        reports = result.constraints if result else []
        out_items = []
        only = p.arms[0].name
        for it in items:
            info = self.catalogue.items.get(it.item_id, ItemInfo())
            team = teams[it.item_id] if teams is not None else only
            out_items.append(RankedItemOut.of(it, info.genre, info.kind, team))
        version = "+".join(a.version for a in p.arms)
        self._record(p, result, out_items, version)
        explain = p.request.explain
        return RankResponse(
            request_id=p.request_id, user_id=p.request.user_id, model_version=version,
            experiment=p.plan.experiment.name if p.plan is not None else None,
            variants=[a.name for a in p.arms], items=out_items,
            binding=[c for c in reports if c.binding], relaxed=[c for c in reports if c.relaxed],
            explanation=result.explanation if result else "no candidates",
            degraded=p.degraded, fallback=p.fallback,
            latency_ms={k: v * 1e3 for k, v in p.timings.items()} if explain else None,
            constraints=reports if explain else None,
            unknown_candidates=len(p.unknown) if p.candidates is not None else None,
            unknown_candidate_ids=p.unknown[:5] if p.candidates is not None else None,
            excluded_candidates=p.excluded if p.candidates is not None else None)

    def _record(self, p: Prepared, result: RerankResult | None,
                items: list[RankedItemOut], version: str) -> None:
        if p.plan is not None:
            name = p.plan.experiment.name
            for arm in p.arms:  # interleaving: once under each team
                metrics.EXPERIMENT_REQUESTS.labels(name, arm.name).inc()
        for stage, seconds in p.timings.items():
            metrics.REQUEST_SECONDS.labels(stage, version).observe(seconds)
        if p.fallback:
            metrics.FALLBACKS.labels(p.fallback).inc()
        if p.degraded:
            metrics.DEGRADED.inc()
        if result is not None:
            metrics.RERANK_SOLVE_SECONDS.observe(result.seconds)
            if result.relaxed:
                metrics.RERANK_INFEASIBLE.inc()
            for c in result.constraints:
                outcome = "relaxed" if c.relaxed else "binding" if c.binding else "satisfied"
                metrics.CONSTRAINTS.labels(c.family, outcome).inc()
                if c.relaxed:
                    metrics.RERANK_RELAXATIONS.labels(c.family).inc()
        cat, default, new_ms = self.catalogue, ItemInfo(), self.settings.new_title_days * DAY_MS
        arm = next((a for a in p.arms if a.model is not None), None)
        known, ids = (arm.model.known_items, arm.ids) if arm is not None else (None, {})
        popular = new = cold = 0
        for it in items:  # one pass: this runs on every response
            info = cat.items.get(it.item_id, default)
            popular += info.impressions_24h >= cat.overexposed_at
            new += 0 <= p.now_ms - info.release_ms < new_ms
            if known is not None:
                idx = ids.get(it.item_id, len(known))
                cold += idx >= len(known) or known[idx] == 0
        shown = _SHOWN
        shown["all"].inc(len(items))
        shown["popular"].inc(popular)
        shown["new"].inc(new)
        if known is not None:
            shown["cold"].inc(cold)
        self._shown.update(i.item_id for i in items)
        if cat.items:
            metrics.COVERAGE.set(len(self._shown) / len(cat.items))

    # ---- similar items -------------------------------------------------------------------
    def similar(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Nearest titles by cosine in the model's item space (KeyError: unknown item)."""
        arm = self.default
        if arm.model is None:
            raise LookupError("no model loaded")
        idx = arm.ids.get(item_id)
        if idx is None or idx >= arm.model.n_items:
            raise KeyError(item_id)
        vecs = arm.model.item_embeddings
        norms = np.linalg.norm(vecs, axis=1) + 1e-9
        sims = vecs @ vecs[idx] / (norms * norms[idx])
        sims[:2] = -np.inf
        sims[idx] = -np.inf
        top = np.argsort(-sims)[:k]
        return [(arm.items[i], float(sims[i])) for i in top if np.isfinite(sims[i])]
