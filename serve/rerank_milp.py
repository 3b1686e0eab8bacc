"""The re-ranker's assignment MILP, built from the problem's rules and solved with HiGHS
(``serve/highs.py``), strict or elastic.

Three models share one builder: **selection** (one binary per candidate: which k), **ordering**
(x[i, p]: the chosen k items to k slots) and **joint** (x[i, p] over all candidates: the exact
reference). Count rules become rows over the chosen items; diversity rules become rows over
windows of slots. **Window rows** are left out where at most m items of the group can reach the
window: each item takes one slot, so such a row can never bind (nor be violated, when relaxed).

``Solver`` is one request's use of it: the configured route and time limit for every model, and
the tally of calls the result reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serve.highs import Coo, Route, Solution, solve_lexicographic, solve_milp
from serve.rerank_problem import CountRow, Pool, Rule


@dataclass
class Model:
    """Assignment of ``items`` (ascending pool indices) to ``slots`` with count and window rows.

    ``slots == 1``: selection (one binary per item, k of them). Otherwise x[i, p] puts item i at
    slot p; every slot is filled once and every item used at most once (exactly once when
    ``place_all``, the ordering model). ``allowed`` prunes (item, slot) pairs.
    """

    pool: Pool
    items: np.ndarray
    slots: int
    k: int
    weights: np.ndarray
    rules: list[Rule]
    rows: list[CountRow]
    allowed: np.ndarray | None = None
    place_all: bool = False
    select_only: bool = False  # the selection model: one column per item, no slots
    staircase: bool = False  # ordering: start the LP from the score order's staircase basis
    time_limit: float = 0.25
    route: Route = "core"
    lp_first: bool = True
    calls: int = 0
    mip_calls: int = 0  # calls the LP relaxation did not settle
    gave_up: bool = False  # the last solve hit the time limit with no solution at all
    optimal: bool = True
    col_i: np.ndarray = field(init=False)
    col_p: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        allowed = (np.ones((len(self.items), self.slots), bool) if self.allowed is None
                   else self.allowed)
        if self.staircase:  # (r, r) and (r, r+1) by score rank: more columns, still exact
            allowed = allowed.copy()
            rank = np.arange(min(len(self.items), self.slots))
            allowed[rank, rank] = True
            allowed[rank[:-1], rank[:-1] + 1] = True
        local_i, self.col_p = np.nonzero(allowed)
        self.col_i = self.items[local_i]  # pool index per column

    def _matrix(self) -> tuple[Coo, np.ndarray, np.ndarray, np.ndarray]:
        """Rows, their bounds, and the rule each row reports to (-1 = structural)."""
        ncol, ci, cp = len(self.col_i), self.col_i, self.col_p
        r_idx: list[np.ndarray] = []
        c_idx: list[np.ndarray] = []
        lo: list[float] = []
        hi: list[float] = []
        owner: list[int] = []

        def add(cols: np.ndarray, low: float, high: float, who: int) -> None:
            r_idx.append(np.full(len(cols), len(lo)))
            c_idx.append(cols)
            lo.append(low)
            hi.append(high)
            owner.append(who)

        every = np.arange(ncol)
        if self.select_only:
            add(every, self.k, self.k, -1)
        else:  # one row per slot, then one per item (rows built in one go: this runs per request)
            local = np.searchsorted(self.items, ci)
            r_idx += [cp, self.slots + local]
            c_idx += [every, every]
            lo += [1.0] * self.slots + [1.0 if self.place_all else 0.0] * len(self.items)
            hi += [1.0] * (self.slots + len(self.items))
            owner += [-1] * (self.slots + len(self.items))
        if self.rows:  # count rows, all at once
            hits = np.array([row.mask for row in self.rows])[:, ci]
            used = hits.any(axis=1) | np.array([row.lo > 0 for row in self.rows])
            at, cols = np.nonzero(hits[used])
            r_idx.append(len(lo) + at)
            c_idx.append(cols)
            for row in (row for row, u in zip(self.rows, used, strict=True) if u):
                lo.append(row.lo)
                hi.append(row.hi)
                owner.append(row.owner)
        if not self.select_only:
            self._windows(r_idx, c_idx, lo, hi, owner)
            for j, r in enumerate(self.rules):
                if r.family == "pin" and r.pin_pos is not None and not self.place_all:
                    add(every[(ci == r.pin_item) & (cp == r.pin_pos)], 1.0, np.inf, j)
        rows = np.concatenate(r_idx)
        a = Coo(rows, np.concatenate(c_idx), np.ones(len(rows)), (len(lo), ncol))
        return a, np.array(lo), np.array(hi), np.array(owner)

    def _windows(self, r_idx: list[np.ndarray], c_idx: list[np.ndarray], lo: list[float],
                 hi: list[float], owner: list[int]) -> None:
        """Rows "at most m of group g in slots t..t+w-1" for every window that more than m
        items of g can reach.
        """
        ci, cp, n_items = self.col_i, self.col_p, len(self.pool)
        for j, r in enumerate(self.rules):
            if r.family != "diversity":
                continue
            codes = self.pool.codes[r.attribute][ci]
            n_windows = max(1, self.slots - r.window + 1)
            cols = np.nonzero(codes >= 0)[0]
            # column at slot p is in windows max(0, p-w+1) .. min(p, n_windows-1)
            first = np.maximum(0, cp[cols] - r.window + 1)
            last = np.minimum(cp[cols], n_windows - 1)
            reps = np.maximum(0, last - first + 1)
            col_rep = np.repeat(cols, reps)
            offset = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
            cell = codes[col_rep] * n_windows + np.repeat(first, reps) + offset  # (group, window)
            # every item sits in one slot at most, so a window that at most m distinct items
            # of its group can reach cannot break: leave its row out
            pairs = np.unique(cell * n_items + ci[col_rep])
            live = np.bincount(pairs // n_items, minlength=1) > r.hi
            on = live[cell]
            if not on.any():
                continue
            row_of = np.cumsum(live) - 1 + len(lo)
            r_idx.append(row_of[cell[on]])
            c_idx.append(col_rep[on])
            n_live = int(live.sum())
            lo += [0.0] * n_live
            hi += [float(r.hi)] * n_live
            owner += [j] * n_live

    def _count(self, sol: Solution) -> Solution:
        self.calls += 1
        self.mip_calls += sol.how == "mip"
        if sol.status == "time_limit":
            self.optimal = False  # the best found so far
        elif sol.status == "error":
            raise RuntimeError("HiGHS failed on the re-rank model; this is a bug")
        return sol

    def solve(self, strict: bool = True) -> list[int] | None:
        """The best list (pool indices, slot order; selection: score order). ``strict=True``
        returns None when the constraints cannot all hold; ``strict=False`` solves the elastic
        model: the least violation first, then the best list. Either returns None with
        ``gave_up`` set when the time limit passed before any solution was found.
        """
        a, lo, hi, owner = self._matrix()
        ncol = a.shape[1]
        value = self.pool.scores[self.col_i] * self.weights[self.col_p]
        if strict:
            x = self._count(solve_milp(-value, a, lo, hi, np.ones(ncol), self.time_limit,
                                       self.route, self.lp_first, basic=self._start())).x
        else:
            x = self._solve_elastic(a, lo, hi, owner, value)
        if x is None:
            self.gave_up = not self.optimal  # the time limit, not infeasibility
            return None
        return self._decode(x[:ncol])

    def _start(self) -> tuple[np.ndarray, int] | None:
        """The staircase basis (ordering model): item r at slots r and r+1 basic, one item
        row's logical basic, the windows' logicals basic. Position weights times scores, both
        decreasing, make the assignment costs a Monge array, for which this basis (the
        north-west corner rule's) is dual feasible: dual simplex then only repairs the
        windows the score order breaks, a few iterations instead of dozens.
        """
        if not self.staircase:
            return None
        rank = np.searchsorted(self.items, self.col_i)
        k = self.slots
        return (self.col_p == rank) | (self.col_p == rank + 1), 2 * k - 1

    def _solve_elastic(self, a: Coo, lo: np.ndarray, hi: np.ndarray, owner: np.ndarray,
                       value: np.ndarray) -> np.ndarray | None:
        """Phase 1: least tier-weighted violation; phase 2: the best list within it (see
        ``solve_lexicographic``).
        """
        (nrow, ncol), ruled = a.shape, owner >= 0
        short = np.nonzero(ruled & (lo > 0))[0]  # shortfall slack, +1
        excess = np.nonzero(ruled & np.isfinite(hi))[0]  # excess slack, -1
        rows = np.concatenate([short, excess])
        ns = len(rows)
        base = ns * self.k + 1.0
        tiers = np.array([self.rules[o].tier for o in owner[rows]], dtype=np.float64)
        tier_w = base ** (tiers - 1)
        a2 = Coo(np.concatenate([a.row, rows]), np.concatenate([a.col, ncol + np.arange(ns)]),
                 np.concatenate([a.val, np.ones(len(short)), -np.ones(len(excess))]),
                 (nrow, ncol + ns))
        ub = np.concatenate([np.ones(ncol), np.full(ns, float(self.k))])
        c1 = np.concatenate([np.zeros(ncol), tier_w])
        sols = [self._count(sol) for sol in solve_lexicographic(
            c1, np.concatenate([-value, np.zeros(ns)]), a2, lo, hi, ub, self.time_limit,
            self.route, self.lp_first)]
        if sols[0].x is None:
            if sols[0].status == "time_limit":
                return None
            raise RuntimeError("elastic re-rank model infeasible; this is a bug")
        return sols[-1].x if sols[-1].x is not None else sols[0].x

    def _decode(self, x: np.ndarray) -> list[int]:
        on = x > 0.5
        items, slots = self.col_i[on], self.col_p[on]
        if self.select_only:
            return sorted(int(i) for i in items)
        return [int(i) for _, i in sorted(zip(slots, items, strict=True))]


@dataclass
class Solver:
    """One request's models: built with the configured HiGHS route and time limit, their
    solver calls summed (a model may be solved twice) for the result's report.
    """

    time_limit: float
    route: Route
    lp_first: bool
    calls: int = 0
    mip_calls: int = 0  # calls whose LP relaxation was fractional (branch and bound ran)
    optimal: bool = True  # every call solved to optimality (no time limit hit)

    def model(self, pool: Pool, items: np.ndarray, slots: int, k: int, w: np.ndarray,
              rules: list[Rule], rows: list[CountRow], **kw: object) -> Model:
        """A ``Model`` with this request's solver settings."""
        return Model(pool, items, slots, k, w, rules, rows, time_limit=self.time_limit,
                     route=self.route, lp_first=self.lp_first, **kw)

    def solve(self, model: Model, strict: bool) -> list[int] | None:
        """``model.solve``, its calls added to the tally."""
        calls, mips = model.calls, model.mip_calls
        try:
            return model.solve(strict=strict)
        finally:
            self.calls += model.calls - calls
            self.mip_calls += model.mip_calls - mips
            self.optimal &= model.optimal
