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

Modules, one idea each: ``rerank_problem`` (candidates, pool, rules), ``rerank_select`` (set
selection and the joint model), ``rerank_order`` (ordering), ``rerank_milp`` (the MILP over
HiGHS), ``rerank_explain`` (reports and explanation); this one puts them together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve.constraints import Constraints
from serve.rerank_explain import ConstraintReport, constraint_reports, explanation
from serve.rerank_milp import Solver
from serve.rerank_order import arrange
from serve.rerank_problem import (
    Candidate,
    CountRow,
    Pool,
    Rule,
    build_rules,
    count_rows,
    evaluate,
    violation,
)
from serve.rerank_select import joint, quick_infeasible, select

__all__ = ["Candidate", "ConstraintReport", "GoalReranker", "RankedItem", "RerankConfig",
           "RerankResult", "position_weights"]


@dataclass(frozen=True)
class RankedItem:
    """An item in the final list (position is 1-based)."""

    # Also the API's schema (serve/schemas.py): pydantic publishes these descriptions.
    item_id: Annotated[str, Field(description="the title")]
    score: Annotated[float, Field(description="the relevance score the list was ranked by")]
    position: Annotated[int, Field(description="slot in the list, from 1")]


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
        solver = Solver(self.config.time_limit_s, self.config.solver, self.config.lp_first)
        base = evaluate(plain, rules, pool)
        if all(violation(r, v) == 0 for r, v in zip(rules, base, strict=True)):
            order = plain
        else:
            rows = count_rows(rules, pool, k_eff)
            pins = np.zeros(len(pool), dtype=bool)
            pins[[r.pin_item for r in rules if r.family == "pin"]] = True
            strict = not quick_infeasible(rows, len(pool), k_eff, pins)
            solve = joint if self.config.mode == "exact" else _two_stage
            order = solve(solver, pool, rules, rows, k_eff, w, strict)
        got = base if order == plain else evaluate(order, rules, pool)
        reports = constraint_reports(rules, got, base, cons, pool, k_eff)
        objective = float(w[:len(order)] @ pool.scores[order]) if order else 0.0
        baseline = float(w[:k_eff] @ pool.scores[:k_eff]) if k_eff else 0.0
        items = [RankedItem(pool.cands[i].item_id, pool.cands[i].score, p + 1)
                 for p, i in enumerate(order)]
        return RerankResult(items, objective, baseline, reports,
                            explanation(reports, solver.optimal), solver.optimal, solver.calls,
                            time.perf_counter() - start, solver.mip_calls)


def _two_stage(solver: Solver, pool: Pool, rules: list[Rule], rows: list[CountRow], k: int,
               w: np.ndarray, strict: bool) -> list[int]:
    """Fast mode: the best set, then its best order. When no order of that set keeps the
    windows (another set's may), the joint model decides: it relaxes a rule only when no list
    at all keeps every rule.
    """
    chosen = select(solver, pool, rules, rows, k, strict)
    order = arrange(solver, pool, rules, chosen, k, w, strict)
    return order if order is not None else joint(solver, pool, rules, rows, k, w, strict)
