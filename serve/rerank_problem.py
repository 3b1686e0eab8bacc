"""The re-ranking problem as data: the candidates (``Candidate``), the unblocked pool they make
(``Pool``, best first, as arrays), and the constraints as rules over it (``build_rules``), with
how to evaluate a list against them. Every stage (selection, ordering, the MILPs, the report)
reads the problem through these types, so a rule is built in one place.

A rule is a count over the chosen items (pins, the goal, group counts, shares) or a window over
slots (diversity); ``count_rows`` states every rule as counts, a window by the per-group cap it
implies on a list of k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter

import numpy as np

from serve.constraints import Constraints, Goal

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
