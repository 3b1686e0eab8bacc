"""The goal re-ranker: choose and order k of N candidates to maximise position-weighted
relevance, sum_p w_p * score(item at p), under business constraints and the user's goal.

It is a plain class (no Ray, no HTTP) solved with scipy's HiGHS (``serve/highs.py``):

* ``mode="fast"`` (the service default) solves two small MILPs. **Selection**: which k items,
  maximising total relevance under the count, share, pin and goal constraints (one binary per
  candidate; diversity windows enter as the count cap they imply). **Ordering**: the best
  position-weighted order of those k items under pins and diversity windows; when the score order
  already satisfies them it is optimal (rearrangement inequality) and no solver runs, otherwise an
  assignment MILP over the k items, pruned by an exchange argument (items that no window can
  tell apart keep their score order) and by where the windows let a group's r-th item sit,
  its LP started from the score order's staircase basis (or, with positional pins, pruned by
  the value of a feasible order found by search).
  Each stage is solved exactly; the pair is exact for the lexicographic problem "best set, then
  best order of it", not always for the joint one (a set with a lower total can order into a
  higher weighted sum). ``marquee bench rerank`` measures the gap to the joint optimum. When no
  order of the best set keeps the windows (another set's may), the joint model decides: fast
  mode relaxes a rule only when no list at all keeps every rule.
* ``mode="exact"`` solves the joint problem as one assignment MILP (N x k binaries): the true
  optimum, at ~5x the time; used by the tests and the benchmark as the reference. Its
  dominance reduction only lets an item stand in for one of the same diversity groups (where
  an item may sit depends on them).

Exact shortcuts, checked per request, skip solver calls that cannot change the answer: the plain
score order when it keeps every rule; the top k by score as the selection when they keep every
count (no k items score more); the score order of the chosen set around its pins when it keeps
every window. Every MILP first goes to HiGHS as its LP relaxation, and branch and bound runs
only when that LP optimum is fractional (``serve/highs.py`` says why this is exact); on our
models it almost never is.

Both are exact over the full candidate set: nothing is pruned that could be chosen. If the
constraints cannot all hold, nothing raises: a second, elastic solve finds the relaxation with the
least violation (pins are kept before the user's goal, the goal before business constraints),
then the best list under it, and ``explanation`` says what was relaxed and by how much.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve.constraints import Constraints
from serve.rerank_order import bound_pruning, greedy_order, order_pruning
from serve.rerank_problem import (
    Candidate,
    Model,
    Pool,
    Rule,
    build_rules,
    count_rows,
    dominance_keep,
    evaluate,
    group_identity_rows,
    quick_infeasible,
    top_k_holds,
    violation,
)

__all__ = ["Candidate", "ConstraintReport", "GoalReranker", "RankedItem", "RerankConfig",
           "RerankResult", "position_weights"]


@dataclass(frozen=True)
class RankedItem:
    """An item in the final list (position is 1-based)."""

    item_id: str
    score: float
    position: int


@dataclass(frozen=True)
class ConstraintReport:
    """How one constraint fared: ``binding`` = holds with equality (the textbook sense);
    ``changed_ranking`` = the plain score order breaks it, so it shaped the list.
    """

    name: str
    family: str
    bound: str
    value: float
    binding: bool
    relaxed: bool
    changed_ranking: bool
    message: str = ""


@dataclass
class RerankResult:
    """The list, its objective, and how every constraint fared."""

    items: list[RankedItem]
    objective: float
    baseline_objective: float  # the plain score order's objective (the unconstrained optimum)
    constraints: list[ConstraintReport]
    explanation: str
    exact: bool  # solved to optimality by every stage (no time limit hit)
    solver_calls: int
    seconds: float = 0.0
    mip_calls: int = 0  # solver calls whose LP relaxation was fractional (branch and bound ran)

    @property
    def feasible(self) -> bool:
        """True when no constraint had to be relaxed."""
        return not any(c.relaxed for c in self.constraints)

    @property
    def binding(self) -> list[ConstraintReport]:
        """Constraints that hold with equality."""
        return [c for c in self.constraints if c.binding]

    @property
    def relaxed(self) -> list[ConstraintReport]:
        """Constraints that could not hold, with the violation in ``message``."""
        return [c for c in self.constraints if c.relaxed]


class RerankConfig(BaseModel):
    """How the re-ranker weighs positions and how hard it tries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discount: Literal["dcg", "linear"] = Field(
        "dcg", description="position weights: 1/log2(p+1) or linear from 1 down")
    mode: Literal["fast", "exact"] = "fast"
    time_limit_s: float = Field(0.25, gt=0, le=30, description="per HiGHS call")
    solver: Literal["core", "milp"] = Field(
        "core", description="HiGHS route: scipy's bundled core directly, or scipy.optimize.milp")
    lp_first: bool = Field(
        True, description="core route: solve the LP relaxation first and skip branch and bound "
                          "when its optimum is integral (exact; see serve/highs.py)")


def position_weights(k: int, discount: str = "dcg") -> np.ndarray:
    """Strictly decreasing positive weights of slots 1..k."""
    p = np.arange(1, k + 1, dtype=np.float64)
    if discount == "dcg":
        return 1.0 / np.log2(p + 1.0)
    return (k + 1.0 - p) / k


class GoalReranker:
    """Chooses and orders k of N candidates under constraints; see the module docstring."""

    def __init__(self, config: RerankConfig | None = None,
                 constraints: Constraints | None = None) -> None:
        self.config = config or RerankConfig()
        self.defaults = constraints or Constraints()

    def rerank(self, candidates: list[Candidate], k: int,
               constraints: Constraints | None = None) -> RerankResult:
        """The best list of ``min(k, N)`` items; never raises on infeasible constraints."""
        start = time.perf_counter()
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one item")
        cons = self.defaults.merged(constraints)
        pool = Pool.build(candidates, set(cons.blocked))
        k_eff = min(k, len(pool))
        w = position_weights(k_eff, self.config.discount)
        rules = build_rules(cons, pool, k_eff)
        plain = list(range(k_eff))
        tally = _Tally()
        base = evaluate(plain, rules, pool)
        if all(violation(r, v) == 0 for r, v in zip(rules, base, strict=True)):
            order = plain
        else:
            rows = count_rows(rules, pool, k_eff)
            pins = np.zeros(len(pool), dtype=bool)
            pins[[r.pin_item for r in rules if r.family == "pin"]] = True
            strict = not quick_infeasible(rows, len(pool), k_eff, pins)
            solve = self._joint if self.config.mode == "exact" else self._two_stage
            order = solve(pool, rules, rows, k_eff, w, strict, tally)
        return self._result(pool, order, base, w, rules, cons, k_eff, tally, start)

    def _solve(self, tally: _Tally, model: Model, strict: bool) -> list[int] | None:
        calls, mips = model.calls, model.mip_calls  # a model may be solved twice
        try:
            return model.solve(strict=strict)
        finally:
            tally.calls += model.calls - calls
            tally.mip_calls += model.mip_calls - mips
            tally.optimal &= model.optimal

    def _model(self, pool: Pool, items: np.ndarray, slots: int, k: int, w: np.ndarray,
               rules: list[Rule], rows: list, **kw: object) -> Model:
        return Model(pool, items, slots, k, w, rules, rows, time_limit=self.config.time_limit_s,
                     route=self.config.solver, lp_first=self.config.lp_first, **kw)

    def _select(self, pool: Pool, rules: list[Rule], rows: list, k: int, w: np.ndarray,
                strict: bool, tally: _Tally, joint: bool = False) -> list[int]:
        """Solve the selection (slots=1) or joint (slots=k) model; a strict solve that turns
        out infeasible is redone as the elastic model. The joint model (N x k columns) is
        solved over the dominance-reduced pool; the selection LP over all N columns costs less
        than computing that reduction.
        """
        slots = k if joint else 1
        model_rows = rows if not joint else [r for r in rows
                                              if rules[r.owner].family != "diversity"]
        if strict and not joint and top_k_holds(rows, k):
            return list(range(k))  # the best k by score, and it keeps every count: optimal
        signature = model_rows + group_identity_rows(rules, pool, k) if joint else []
        for attempt in ([True] if strict else []) + [False]:
            items = (np.nonzero(dominance_keep(signature, len(pool), k, strict=attempt))[0]
                     if joint else np.arange(len(pool)))
            model = self._model(pool, items, slots, k, w, rules, model_rows,
                                select_only=not joint)
            order = self._solve(tally, model, strict=attempt)
            if order is not None:
                return order
            if model.gave_up:  # degrade, don't fail: the score order, its breaches reported
                return list(range(k))
        raise RuntimeError("the elastic re-rank model returned nothing; this is a bug")

    def _joint(self, pool: Pool, rules: list[Rule], rows: list, k: int, w: np.ndarray,
               strict: bool, tally: _Tally) -> list[int]:
        return self._select(pool, rules, rows, k, w, strict, tally, joint=True)

    def _two_stage(self, pool: Pool, rules: list[Rule], rows: list, k: int, w: np.ndarray,
                   strict: bool, tally: _Tally) -> list[int]:
        chosen = self._select(pool, rules, rows, k, np.ones(1), strict, tally)
        items = np.array(chosen, dtype=np.int64)
        in_set = set(chosen)
        order_rules = [r for r in rules if r.family == "diversity"
                       or (r.family == "pin" and r.pin_pos is not None and r.pin_item in in_set)]
        fixed = {r.pin_pos: r.pin_item for r in order_rules if r.family == "pin"}
        rest = iter(i for i in chosen if i not in set(fixed.values()))
        by_score = [fixed[p] if p in fixed else next(rest) for p in range(k)]
        if all(violation(r, v) == 0
               for r, v in zip(order_rules, evaluate(by_score, order_rules, pool), strict=True)):
            return by_score  # score order around the pins: optimal
        allowed = order_pruning(items, k, order_rules, pool, windows_hold=True)
        # Without positional pins the LP starts from the score order's staircase basis and
        # needs a few iterations whatever its size; with them it starts cold, so it is pruned
        # further by the value of a feasible order (the search costs more than it saves
        # otherwise). The search's order is also the fallback if the time limit passes.
        feasible = greedy_order(items, k, order_rules, pool) if fixed else None
        if feasible is not None:  # exact pruning by the value of a known feasible order
            lower = float(w @ pool.scores[feasible])
            allowed &= bound_pruning(pool.scores[items], w, lower)
        arrange = self._model(pool, items, k, k, w, order_rules, [], allowed=allowed,
                              place_all=True, staircase=not fixed)
        order = None
        if allowed.any(axis=1).all() and allowed.any(axis=0).all():  # else: no order fits
            order = self._solve(tally, arrange, strict=True)
        if order is None and not arrange.gave_up and strict:
            # No order of the best set keeps the windows, but another set may: the joint model
            # decides (it relaxes only when no list at all keeps every rule).
            return self._joint(pool, rules, rows, k, w, strict, tally)
        if order is None and not arrange.gave_up:  # the windows cannot all hold: relax them
            relax = self._model(pool, items, k, k, w, order_rules, [],  # as little as possible
                                allowed=order_pruning(items, k, order_rules, pool),
                                place_all=True)
            order = self._solve(tally, relax, strict=False)
        if order is None:  # time limit, nothing found: the best order known, not proven best
            if feasible is None:
                feasible = greedy_order(items, k, order_rules, pool)
            order = feasible if feasible is not None else by_score
        return order

    def _result(self, pool: Pool, order: list[int], base: list[float], w: np.ndarray,
                rules: list[Rule], cons: Constraints, k: int, tally: _Tally,
                start: float) -> RerankResult:
        """``base``: every rule's value on the plain score order (the first k)."""
        got = base if len(order) == k and order == list(range(k)) else evaluate(order, rules,
                                                                                  pool)
        reports = []
        for r, v, b in zip(rules, got, base, strict=True):
            broken, changed = violation(r, v) > 0, violation(r, b) > 0
            tight = (r.lo > 0 and v == r.lo) or (r.hi is not None and v == r.hi)
            binding = changed if r.family == "pin" else tight
            bound = " and ".join(([f">= {r.lo}"] if r.lo else [])
                                 + ([f"<= {r.hi}"] if r.hi is not None else []))
            reports.append(ConstraintReport(r.name, r.family, bound, v, binding and not broken,
                                            broken, changed,
                                            _relax_message(r, v, k) if broken else ""))
        for pin in cons.pinned:
            if pin.item_id not in pool.index or (pin.position is not None and pin.position > k):
                why = ("not among the candidates" if pin.item_id not in pool.index
                       else f"position {pin.position} is past the list's end ({k})")
                reports.append(ConstraintReport(f"pin {pin.item_id}", "pin", ">= 1", 0.0, False,
                                                True, False, f"pin {pin.item_id}: {why}"))
        objective = float(w[:len(order)] @ pool.scores[order]) if order else 0.0
        baseline = float(w[:k] @ pool.scores[:k]) if k else 0.0
        relaxed = [c.message for c in reports if c.relaxed]
        shaped = [c.name for c in reports if c.changed_ranking and not c.relaxed]
        if relaxed:
            explanation = "could not satisfy every constraint: " + "; ".join(relaxed)
        elif shaped:
            explanation = "re-ranked to satisfy: " + "; ".join(shaped)
        else:
            explanation = "the score order satisfies every constraint"
        if not tally.optimal:
            explanation += " (solver time limit hit: the best list found, not proven optimal)"
        items = [RankedItem(pool.cands[i].item_id, pool.cands[i].score, p + 1)
                 for p, i in enumerate(order)]
        return RerankResult(items, objective, baseline, reports, explanation, tally.optimal,
                            tally.calls, time.perf_counter() - start, tally.mip_calls)


@dataclass
class _Tally:
    """Solver calls of one request, summed over its models."""

    calls: int = 0
    mip_calls: int = 0
    optimal: bool = True


def _relax_message(rule: Rule, value: float, k: int) -> str:
    if rule.family == "goal":
        return (f"{rule.name}: only {value:g} of {k} candidates match, the other "
                f"{k - value:g} are the best of the rest")
    if rule.family == "pin":
        return f"{rule.name}: dropped (more pins than slots, or they clash)"
    if rule.family == "diversity":
        return f"{rule.name}: relaxed to {value:g} (no order of the chosen items satisfies it)"
    return (f"{rule.name}: got {value:g} (the candidates cannot satisfy it together with "
            "higher-priority constraints)")
