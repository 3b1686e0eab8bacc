"""The re-ranker's MILPs (scipy HiGHS) and the exact reductions that keep them small.

Three models share one builder: **selection** (one binary per candidate: which k), **ordering**
(x[i, p]: the chosen k items to k slots) and **joint** (x[i, p] over all candidates: the exact
reference). Constraint rules are counts over the chosen items (pins, goal, group counts, shares,
the per-group cap a diversity window implies) or windows over slots (diversity).

Why these reductions are exact:

* **Dominance** (joint; the selection LP over all N columns costs less than computing it):
  item i dominates j if it scores at least as high, counts
  in every lower-bounded rule j counts in and in no upper-bounded rule j is not in. Swapping j
  for an unchosen dominator keeps every rule (also their violations, when relaxed) and does not
  lower the objective; an optimum that is maximal in the dominance order never holds an item
  with k dominators, so such items are dropped. With the constraints strict, an item with as
  many better same-signature items as its tightest cap (``hi``) is dropped likewise.
* **Order pruning** (ordering): see ``serve/rerank_order.py``.
* **Window rows** are left out where at most m items of the group can reach the window: each
  item takes one slot, so such a row can never bind (nor be violated, when relaxed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter

import numpy as np

from serve.constraints import Constraints, Goal
from serve.highs import Coo, Route, Solution, solve_lexicographic, solve_milp

TIER_POLICY, TIER_GOAL, TIER_PIN = 1, 2, 3  # relaxed first .. relaxed last
ATTRIBUTES = ("genre", "kind", "series")


@dataclass(frozen=True)
class Candidate:
    """One item to rank with what the constraints look at."""

    item_id: str
    score: float
    genre: str = ""
    kind: str = ""
    series: str = ""
    duration_s: int = 0
    is_new: bool = False  # released recently (a "new title")
    over_exposed: bool = False  # shown far more than its share lately
    familiar: bool = False  # the user already interacted with it (or its series)


class Pool:
    """Unblocked candidates, one per item id (its best score), best first, as arrays.

    Per-candidate arrays are built on first use: a request's rules read a few attributes, and
    reading one off N dataclasses is a good share of a whole re-rank.
    """

    def __init__(self, cands: list[Candidate], scores: np.ndarray) -> None:
        self.cands = cands
        self.scores = scores
        self.tables: dict[str, dict[str, int]] = {}  # attribute -> value -> code ("" -> -1)
        self.codes: dict[str, np.ndarray] = _Codes(self)  # attribute -> code per item

    @classmethod
    def build(cls, candidates: list[Candidate], blocked: set[str]) -> Pool:
        """Validate and index candidates (a non-finite score is the caller's bug: ValueError)."""
        scores = np.array([c.score for c in candidates], dtype=np.float64)
        if not np.isfinite(scores).all():
            c = candidates[int(np.argmin(np.isfinite(scores)))]
            raise ValueError(f"candidate {c.item_id}: score {c.score} is not finite")
        ids = [c.item_id for c in candidates]
        if len(set(ids)) == len(ids) and blocked.isdisjoint(ids):  # the usual case
            order = np.argsort(-scores, kind="stable")
            return cls([candidates[i] for i in order], scores[order])
        best: dict[str, Candidate] = {}
        for c in candidates:
            if c.item_id not in blocked and (c.item_id not in best
                                             or c.score > best[c.item_id].score):
                best[c.item_id] = c
        cands = sorted(best.values(), key=lambda c: -c.score)
        return cls(cands, np.array([c.score for c in cands], dtype=np.float64))

    @cached_property
    def index(self) -> dict[str, int]:
        """Item id -> position."""
        return {c.item_id: i for i, c in enumerate(self.cands)}

    @cached_property
    def is_new(self) -> np.ndarray:
        """Released recently."""
        return np.array([c.is_new for c in self.cands], dtype=bool)

    @cached_property
    def over(self) -> np.ndarray:
        """Over-exposed lately."""
        return np.array([c.over_exposed for c in self.cands], dtype=bool)

    @cached_property
    def familiar(self) -> np.ndarray:
        """Already seen by the user."""
        return np.array([c.familiar for c in self.cands], dtype=bool)

    @cached_property
    def duration_s(self) -> np.ndarray:
        """Duration in seconds."""
        return np.array([c.duration_s for c in self.cands], dtype=np.float64)

    def has(self, attribute: str, values: list[str]) -> np.ndarray:
        """Mask of items whose ``attribute`` is one of ``values``."""
        codes = self.codes[attribute]
        table = self.tables[attribute]
        out = np.zeros(len(codes), dtype=bool)
        for code in {table[v] for v in values if v and v in table}:
            out |= codes == code
        return out

    def __len__(self) -> int:
        return len(self.cands)


class _Codes(dict):
    """``pool.codes[attribute]``, coded on first use (values numbered in pool order)."""

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool

    def __missing__(self, attribute: str) -> np.ndarray:
        if attribute not in ATTRIBUTES:
            raise KeyError(attribute)
        values = list(map(attrgetter(attribute), self.pool.cands))
        table = self.pool.tables[attribute] = {"": -1}
        for v in dict.fromkeys(values):  # distinct values, first seen first
            if v not in table:
                table[v] = len(table) - 1
        codes = self[attribute] = np.fromiter(map(table.__getitem__, values), np.int64,
                                              len(values))
        return codes


@dataclass
class Rule:
    """One reported constraint. Count rules have a ``mask`` over the pool; ``diversity`` and
    ``pin`` rules are positional.
    """

    name: str
    family: str
    tier: int
    lo: int = 0
    hi: int | None = None
    mask: np.ndarray | None = None
    attribute: str = ""  # diversity
    window: int = 0
    pin_item: int = -1  # pool index of a pinned item
    pin_pos: int | None = None  # 0-based slot


def goal_mask(goal: Goal, pool: Pool) -> np.ndarray:
    """Which pool items pass the goal's filters."""
    g = goal.resolved()
    ok = np.ones(len(pool), dtype=bool)
    if g.kinds:
        ok &= pool.has("kind", list(g.kinds))
    if g.genres:
        ok &= pool.has("genre", g.genres)
    if g.exclude_genres:
        ok &= ~pool.has("genre", g.exclude_genres)
    if g.max_duration_minutes is not None:
        ok &= pool.duration_s <= g.max_duration_minutes * 60
    if g.min_duration_minutes is not None:
        ok &= pool.duration_s >= g.min_duration_minutes * 60
    if g.new_to_me:
        ok &= ~pool.familiar
    if g.new_releases:
        ok &= pool.is_new
    return ok


def build_rules(cons: Constraints, pool: Pool, k: int) -> list[Rule]:
    """The constraint model as rules over the pool for a list of length k (pins of items not
    in the pool, or past slot k, are left out: the caller reports them).
    """
    rules: list[Rule] = []
    for pin in cons.pinned:
        if pin.item_id in pool.index and (pin.position is None or pin.position <= k):
            where = f" at {pin.position}" if pin.position else ""
            rules.append(Rule(f"pin {pin.item_id}{where}", "pin", TIER_PIN, lo=1,
                              mask=np.arange(len(pool)) == pool.index[pin.item_id],
                              pin_item=pool.index[pin.item_id],
                              pin_pos=None if pin.position is None else pin.position - 1))
    if cons.goal is not None:
        rules.append(Rule(f"goal: {cons.goal.describe()}", "goal", TIER_GOAL, lo=k,
                          mask=goal_mask(cons.goal, pool)))
    for gc in cons.group_counts:
        bounds = ([f">= {gc.min}"] if gc.min else []) + (
            [f"<= {gc.max}"] if gc.max is not None else [])
        rules.append(Rule(f"{gc.attribute}={gc.value} {' and '.join(bounds)}", "group_count",
                          TIER_POLICY, lo=min(gc.min, k), hi=gc.max,
                          mask=pool.has(gc.attribute, [gc.value])))
    if cons.min_new_share:
        need = math.ceil(cons.min_new_share * k - 1e-9)
        rules.append(Rule(f"new titles >= {cons.min_new_share:.0%} ({need} of {k})",
                          "new_share", TIER_POLICY, lo=need, mask=pool.is_new))
    if cons.max_overexposed_share is not None:
        cap = math.floor(cons.max_overexposed_share * k + 1e-9)
        rules.append(Rule(f"over-exposed titles <= {cons.max_overexposed_share:.0%} "
                          f"({cap} of {k})", "overexposed_share", TIER_POLICY, hi=cap,
                          mask=pool.over))
    for d in cons.diversity:
        rules.append(Rule(f"at most {d.max_items} per {d.attribute} in any {d.window} slots",
                          "diversity", TIER_POLICY, hi=d.max_items, attribute=d.attribute,
                          window=d.window))
    return rules


def window_cap(m: int, w: int, k: int) -> int:
    """Most items of one group a list of k can hold with at most m in any w consecutive slots."""
    return m * (k // w) + min(m, k % w)


def evaluate(order: list[int], rules: list[Rule], pool: Pool) -> list[float]:
    """Each rule's value on an ordered list of pool indices: a count, the fullest window of
    any group, or 1.0/0.0 for a pin.
    """
    out = []
    chosen = np.array(order, dtype=np.int64)
    for r in rules:
        if r.family == "pin":
            ok = r.pin_item in order and (r.pin_pos is None
                                          or order.index(r.pin_item) == r.pin_pos)
            out.append(1.0 if ok else 0.0)
        elif r.family == "diversity":
            out.append(float(_fullest_window(pool.codes[r.attribute][chosen], r.window)))
        else:
            out.append(float(r.mask[chosen].sum()) if len(order) else 0.0)
    return out


def _fullest_window(codes: np.ndarray, window: int) -> int:
    """Most items of one group (code >= 0) in any ``window`` consecutive slots (a sliding count
    in plain Python: k is small, and numpy calls cost more than the loop).
    """
    seq = codes.tolist()
    counts: dict[int, int] = {}
    worst = 0
    for t, g in enumerate(seq):
        if t >= window and (old := seq[t - window]) >= 0:
            counts[old] -= 1
        if g >= 0:
            counts[g] = n = counts.get(g, 0) + 1
            worst = max(worst, n)
    return worst


def violation(rule: Rule, value: float) -> float:
    """How far ``value`` breaks ``rule`` (0 when it holds)."""
    over = max(0.0, value - rule.hi) if rule.hi is not None else 0.0
    return max(0.0, rule.lo - value) + over


@dataclass
class CountRow:
    """A row over chosen items: lo <= sum(mask[chosen]) <= hi, reported as ``rules[owner]``."""

    mask: np.ndarray
    lo: float
    hi: float
    owner: int


def count_rows(rules: list[Rule], pool: Pool, k: int) -> list[CountRow]:
    """Count rows of every rule; a diversity rule gives each group the cap its window implies."""
    rows = []
    for j, r in enumerate(rules):
        if r.family == "diversity":
            codes = pool.codes[r.attribute]
            cap = window_cap(r.hi, r.window, k)
            crowded = np.nonzero(np.bincount(codes[codes >= 0], minlength=1) > cap)[0]
            for mask in codes[None, :] == crowded[:, None]:
                rows.append(CountRow(mask, 0.0, float(cap), j))
        else:
            rows.append(CountRow(r.mask, float(r.lo), np.inf if r.hi is None else float(r.hi), j))
    return rows


def group_identity_rows(rules: list[Rule], pool: Pool, k: int) -> list[CountRow]:
    """Rows that only tell diversity groups apart, for ``dominance_keep`` over the joint
    model: where an item may sit depends on its group in every window rule, so an item is only
    replaceable by a better one of the same groups (a row both bounded below and capped makes
    dominance need equal membership). Never part of a solver model.
    """
    rows = []
    for j, r in enumerate(rules):
        if r.family == "diversity":
            codes = pool.codes[r.attribute]
            rows += [CountRow(codes == g, 1.0, float(k), j) for g in np.unique(codes)]
    return rows


def top_k_holds(rows: list[CountRow], k: int) -> bool:
    """Whether the k best items (pool order) satisfy every count row: then they are the best
    selection, since no k items score more in total.
    """
    return all(r.lo <= np.count_nonzero(r.mask[:k]) <= r.hi for r in rows)


def dominance_keep(rows: list[CountRow], n: int, k: int, strict: bool) -> np.ndarray:
    """Items that may be in an optimum (see the module docstring); pool order = score order."""
    if not rows:
        return np.arange(n) < k
    lo_bits = np.array([r.mask for r in rows if r.lo > 0], dtype=bool).reshape(-1, n).T
    hi_bits = np.array([r.mask for r in rows if np.isfinite(r.hi)], dtype=bool).reshape(-1, n).T
    sig = np.concatenate([lo_bits, hi_bits], axis=1)
    if sig.shape[1] <= 62:  # hash each signature into one int: np.unique(axis=0) is slow
        key = sig.astype(np.int64) @ (np.int64(1) << np.arange(sig.shape[1], dtype=np.int64))
        _, first, t_of = np.unique(key, return_index=True, return_inverse=True)
        types = sig[first]
    else:
        types, t_of = np.unique(sig, axis=0, return_inverse=True)
    t_of = t_of.reshape(-1)
    nlo = lo_bits.shape[1]
    tl, th = types[:, :nlo].astype(np.float64), types[:, nlo:].astype(np.float64)
    # dom[a, b]: type a dominates type b (no lower-bounded row b counts in that a does not,
    # no capped row a counts in that b does not), as bit counts by matrix products
    dom = ((1.0 - tl) @ tl.T == 0) & (th @ (1.0 - th).T == 0)
    onehot = np.zeros((n, len(types)))
    onehot[np.arange(n), t_of] = 1.0
    before = np.cumsum(onehot, axis=0) - onehot  # before[i, a]: better items of type a
    rows_n = np.arange(n)
    dominators = (before @ dom)[rows_n, t_of]
    keep = dominators < k
    if strict and hi_bits.shape[1]:
        his = np.array([r.hi for r in rows if np.isfinite(r.hi)])
        cap = np.where(hi_bits, his[None, :], np.inf).min(axis=1)
        keep &= before[rows_n, t_of] < cap
    return keep


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


def quick_infeasible(rows: list[CountRow], pool_size: int, k: int, pins: np.ndarray) -> bool:
    """A cheap proof that the strict selection is infeasible (one row cannot hold beside the
    pins), so the strict solve can be skipped. ``pins``: mask of pinned pool items.
    """
    n_pins = int(pins.sum())
    if n_pins > k:
        return True
    if not rows:
        return False
    masks = np.array([r.mask for r in rows], dtype=bool)
    lo, hi = np.array([r.lo for r in rows]), np.array([r.hi for r in rows])
    members, pinned_in = masks.sum(axis=1), (masks & pins).sum(axis=1)
    free = k - (n_pins - pinned_in)  # slots left once pins outside the row sit
    capped = np.isfinite(hi)
    return bool((lo > np.minimum(members, free)).any()
                or (capped & ((k - hi > pool_size - members) | (pinned_in > hi))).any())
