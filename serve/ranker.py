"""Ranking for one user, as plain classes the Ray deployment calls (and tests call directly).

Per request: the user's token sequence from the Feast online store (``user_tokens``) ->
in-session events tokenized with the flow's own ``tokenize_session`` -> the ONNX model
(batched by the caller) -> candidates from the full-catalogue scores minus seen and unreleased
titles -> exposure-aware adjustment from ``item_stats`` -> the goal re-ranker -> response.

Degrade, don't fail: an unknown user gets popular and fresh titles; an unreachable feature
store leaves the in-session events only (``degraded``); no model gives popular titles
(``degraded``) while ``/readyz`` says not ready.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve import metrics
from serve.config import ServeSettings
from serve.rerank import Candidate, GoalReranker, RerankResult
from serve.schemas import Check, RankedItemOut, RankRequest, RankResponse
from streams.contract.catalogue import read_catalogue
from streams.contract.layout import DataLayout
from streams.contract.tokens import DAY_MS, FACETS, Vocab

log = logging.getLogger(__name__)
SEEN_ACTIONS = ("watch", "complete", "abandon")


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
        self.model = model
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
        self._set_model(model)

    # ---- model ---------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The served model's version ("none" when no model is loaded)."""
        return self.model.version if self.model is not None else "none"

    def _set_model(self, model: Any | None) -> None:
        self.model = model
        if model is None:
            return
        names = model.vocab.items_by_id()
        self._model_items = names  # model id -> item id
        self._model_ids = {name: i for i, name in enumerate(names) if i >= 2}
        release = np.zeros(model.n_items, dtype=np.int64)
        for name, i in self._model_ids.items():
            if i < model.n_items and name in self.catalogue.items:
                release[i] = self.catalogue.items[name].release_ms
        self._release = release

    def load_model(self, path: Path, threads: int | None = None) -> str:
        """Load an ONNX model and swap it in (the old one serves until the swap)."""
        from models.onnx_runtime import OnnxRanker

        model = OnnxRanker(path, threads=threads or self.settings.onnx_threads)
        old = self.version
        self._set_model(model)
        metrics.MODEL_INFO.labels(old).set(0)
        metrics.MODEL_INFO.labels(model.version).set(1)
        log.info("model %s -> %s (%s)", old, model.version, path)
        return model.version

    def checks(self) -> dict[str, Check]:
        """Each dependency as it is now: the model loaded, the feature store answering a
        read (a probe key, so it costs one lookup).
        """
        model = (Check(ok=True, detail=f"model {self.version}") if self.model is not None
                 else Check(ok=False, detail="no model loaded; set model_path (marquee serve "
                            "--model) or roll one over"))
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
        p = Prepared(req, k, seq, history, now, degraded, fallback,
                     {"features": t1 - t0, "tokenize": time.perf_counter() - t1})
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
    def infer(self, batch: list[Prepared]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One ONNX call for the requests that have a sequence and a model."""
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(batch)
        todo = [i for i, p in enumerate(batch) if p.seq["item"] and self.model is not None]
        if todo:
            t0 = time.perf_counter()
            model = self.model
            length = min(model.max_len, max(len(batch[i].seq["item"]) for i in todo))
            arrays = {f: np.zeros((len(todo), length), np.int64) for f in FACETS}
            mask = np.zeros((len(todo), model.n_items), np.float32)
            for row, i in enumerate(todo):
                p = batch[i]
                for f in FACETS:
                    tail = p.seq[f][-length:]
                    arrays[f][row, length - len(tail):] = tail
                mask[row, self._release > p.now_ms] = 1.0  # not released yet
                seen = [self._model_ids[n] for n in p.history if n in self._model_ids]
                mask[row, [s for s in seen if s < model.n_items]] = 1.0
            emb, ids, scores = model.rank(arrays, mask)
            metrics.BATCH_SIZE.observe(len(todo))
            spent = time.perf_counter() - t0
            for row, i in enumerate(todo):
                out[i] = (emb[row], ids[row], scores[row])
                batch[i].timings["inference"] = spent
        return out  # type: ignore[return-value]

    # ---- stage 3: candidates, exposure, re-rank ------------------------------------------
    def finish(self, p: Prepared, inferred: tuple[np.ndarray, np.ndarray, np.ndarray] | None
               ) -> RankResponse:
        """Candidates -> exposure adjustment -> goal re-rank -> the response."""
        t0 = time.perf_counter()
        stats_ok = self.catalogue.refresh()
        if not stats_ok and self.store is not None and not p.degraded:
            p.degraded, p.fallback = True, p.fallback or "feature_store_unavailable"
        if p.candidates is not None:  # the same titles a full ranking leaves out (after refresh)
            keep = [c for c in p.candidates if self._eligible(c, p)]
            p.excluded, p.candidates = len(p.candidates) - len(keep), keep
        if inferred is None:
            if self.model is None:
                p.degraded, p.fallback = True, "no_model"
            scored = self._popular(p)
        else:
            scored = self._scored(p, *inferred)
        cands = self._candidates(scored, p)
        t1 = time.perf_counter()
        result = self.reranker.rerank(cands, p.k, p.request.goal) if cands else None
        t2 = time.perf_counter()
        p.timings.update({"candidates": t1 - t0, "rerank": t2 - t1})
        return self._response(p, result)

    def _scored(self, p: Prepared, emb: np.ndarray, ids: np.ndarray, scores: np.ndarray
                ) -> list[tuple[str, float]]:
        if p.candidates is not None:
            known = [c for c in p.candidates if c in self._model_ids
                     and self._model_ids[c] < self.model.n_items]
            vecs = self.model.item_embeddings[[self._model_ids[c] for c in known]]
            got = dict(zip(known, (vecs @ emb).tolist(), strict=True))
            floor = min(got.values(), default=0.0) - 1.0  # cold titles: last, but rankable
            return [(c, got.get(c, floor)) for c in p.candidates]
        out = []
        for i, s in zip(ids.tolist(), scores.tolist(), strict=True):
            if s > -1e8 and 2 <= i < len(self._model_items):
                out.append((self._model_items[i], s))
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

    def _response(self, p: Prepared, result: RerankResult | None) -> RankResponse:
        items = result.items if result else []
        reports = result.constraints if result else []
        out_items = []
        for it in items:
            info = self.catalogue.items.get(it.item_id, ItemInfo())
            out_items.append(RankedItemOut.of(it, info.genre, info.kind))
        self._record(p, result, out_items)
        explain = p.request.explain
        return RankResponse(
            user_id=p.request.user_id, model_version=self.version, items=out_items,
            binding=[c for c in reports if c.binding], relaxed=[c for c in reports if c.relaxed],
            explanation=result.explanation if result else "no candidates",
            degraded=p.degraded, fallback=p.fallback,
            latency_ms={k: v * 1e3 for k, v in p.timings.items()} if explain else None,
            constraints=reports if explain else None,
            unknown_candidates=len(p.unknown) if p.candidates is not None else None,
            unknown_candidate_ids=p.unknown[:5] if p.candidates is not None else None,
            excluded_candidates=p.excluded if p.candidates is not None else None)

    def _record(self, p: Prepared, result: RerankResult | None,
                items: list[RankedItemOut]) -> None:
        version = self.version
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
        known, ids = (self.model.known_items, self._model_ids) if self.model is not None \
            else (None, {})
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
        if self.model is None:
            raise LookupError("no model loaded")
        idx = self._model_ids.get(item_id)
        if idx is None or idx >= self.model.n_items:
            raise KeyError(item_id)
        vecs = self.model.item_embeddings
        norms = np.linalg.norm(vecs, axis=1) + 1e-9
        sims = vecs @ vecs[idx] / (norms * norms[idx])
        sims[:2] = -np.inf
        sims[idx] = -np.inf
        top = np.argsort(-sims)[:k]
        return [(self._model_items[i], float(sims[i])) for i in top if np.isfinite(sims[i])]
