"""The re-ranker's rules read straight from the request, and brute force over small candidate
sets: the reference the re-ranker's tests compare against.

Nothing here imports the re-ranker's own code (no ``Pool``, rules, ``evaluate`` or position
weights): a rule the re-ranker builds wrongly would otherwise be built wrongly here too, and the
tests would agree with it. Only the request types (``Constraints``, ``Goal``, ``Candidate``) are
shared, and only as data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

from serve.constraints import Constraints, Goal
from serve.rerank import Candidate

# What each goal preset asks for, as the API documents it (explicit goal fields refine it).
PRESETS: dict[str, dict[str, object]] = {
    "short_episodes": {"kinds": ["episode"], "max_duration_minutes": 30},
    "new_to_me": {"new_to_me": True},
    "new_releases": {"new_releases": True},
    "movie_night": {"kinds": ["movie"], "min_duration_minutes": 80},
}


def passes_goal(c: Candidate, goal: Goal) -> bool:
    """Whether one candidate passes every filter of the goal."""
    f = {**(PRESETS[goal.preset] if goal.preset else {}),
         **goal.model_dump(exclude_unset=True, exclude={"preset"})}
    kinds, genres, exclude = f.get("kinds"), f.get("genres"), f.get("exclude_genres")
    longest, shortest = f.get("max_duration_minutes"), f.get("min_duration_minutes")
    return not ((kinds and c.kind not in kinds)
                or (genres and c.genre not in genres)
                or (exclude and c.genre in exclude)
                or (longest is not None and c.duration_s > 60 * longest)
                or (shortest is not None and c.duration_s < 60 * shortest)
                or (f.get("new_to_me") and c.familiar)
                or (f.get("new_releases") and not c.is_new))


@dataclass(frozen=True)
class Problem:
    """One request: the rankable candidates (unblocked, best score per id), k and the rules."""

    cands: dict[str, Candidate]
    k: int  # the list's length: min(k asked, candidates left)
    cons: Constraints

    @classmethod
    def of(cls, candidates: list[Candidate], k: int, cons: Constraints) -> Problem:
        """The problem a request poses."""
        best: dict[str, Candidate] = {}
        for c in candidates:
            if c.item_id not in cons.blocked and (c.item_id not in best
                                                  or c.score > best[c.item_id].score):
                best[c.item_id] = c
        return cls(best, min(k, len(best)), cons)

    def reachable(self, pin_id: str, position: int | None) -> bool:
        """A pin some list can keep; the others are dropped whole (and reported relaxed)."""
        return pin_id in self.cands and (position is None or position <= self.k)

    @property
    def unreachable_pins(self) -> bool:
        """Some pin no list can keep."""
        return any(not self.reachable(p.item_id, p.position) for p in self.cons.pinned)

    def by_family(self, ids: list[str]) -> dict[str, float]:
        """How far a list breaks each family of rules: the sum of its rules' shortfalls and
        excesses. A pin at a position counts twice when its item is missing (absent, and not at
        its slot); a window rule sums the excess of every window.
        """
        assert len(ids) == len(set(ids)) == self.k and set(ids) <= set(self.cands)
        items = [self.cands[i] for i in ids]
        cons, k = self.cons, self.k
        out = dict.fromkeys(("pin", "goal", "group_count", "new_share", "overexposed_share",
                             "diversity"), 0.0)
        for p in cons.pinned:
            if self.reachable(p.item_id, p.position):
                out["pin"] += p.item_id not in ids
                if p.position is not None:
                    out["pin"] += p.item_id not in ids or ids.index(p.item_id) != p.position - 1
        if cons.goal is not None:
            out["goal"] = float(sum(not passes_goal(c, cons.goal) for c in items))
        for gc in cons.group_counts:
            n = sum(getattr(c, gc.attribute) == gc.value for c in items)
            out["group_count"] += max(0, min(gc.min, k) - n)  # a min past k asks for every slot
            out["group_count"] += max(0, n - gc.max) if gc.max is not None else 0
        if cons.min_new_share is not None:
            need = math.ceil(cons.min_new_share * k - 1e-9)
            out["new_share"] = max(0, need - sum(c.is_new for c in items))
        if cons.max_overexposed_share is not None:
            cap = math.floor(cons.max_overexposed_share * k + 1e-9)
            out["overexposed_share"] = max(0, sum(c.over_exposed for c in items) - cap)
        for d in cons.diversity:
            values = [getattr(c, d.attribute) for c in items]
            for t in range(max(1, k - d.window + 1)):  # a list shorter than w: one window
                window = values[t:t + d.window]
                out["diversity"] += sum(max(0, window.count(g) - d.max_items)
                                        for g in set(window) if g != "")  # "" is no group
        return out

    def violations(self, ids: list[str]) -> tuple[float, float, float]:
        """How far a list breaks the rules by priority (pins, goal, business rules): what the
        re-ranker minimises, in that order, when not every rule can hold.
        """
        f = self.by_family(ids)
        return f["pin"], f["goal"], sum(v for n, v in f.items() if n not in ("pin", "goal"))

    def broken(self, ids: list[str]) -> set[str]:
        """The families a list breaks, with "pin" for a pin no list can keep."""
        out = {n for n, v in self.by_family(ids).items() if v > 0}
        return out | ({"pin"} if self.unreachable_pins else set())

    def holds(self, ids: list[str]) -> bool:
        """Whether a list keeps every rule."""
        return self.violations(ids) == (0, 0, 0)

    def value(self, ids: list[str]) -> float:
        """Position-weighted relevance: sum over slots p = 1.. of score / log2(p + 1)."""
        return sum(self.cands[i].score / math.log2(p + 2) for p, i in enumerate(ids))

    def lists(self) -> list[list[str]]:
        """Every list of k distinct candidates (small sets only)."""
        return [list(o) for o in itertools.permutations(self.cands, self.k)]

    def optimum(self) -> tuple[tuple[float, float, float], float]:
        """The joint optimum: the least violation (pins, then goal, then business rules), and
        the best value among the lists that reach it.
        """
        best = min((self.violations(o), -self.value(o)) for o in self.lists())
        return best[0], -best[1]

    # ---- fast mode's two stages ----------------------------------------------------------
    def selectable(self, ids: tuple[str, ...]) -> bool:
        """Whether a set keeps every rule that counts items (pins as "in the list", the goal,
        group counts, shares) and holds no more of a group than its windows leave room for.
        """
        relaxed_pins = self.cons.model_copy(update={"pinned": [
            p.model_copy(update={"position": None}) for p in self.cons.pinned
            if self.reachable(p.item_id, p.position)]})
        counts = Problem(self.cands, self.k, relaxed_pins.model_copy(update={"diversity": []}))
        if not counts.holds(list(ids)):
            return False
        for d in self.cons.diversity:
            values = [getattr(self.cands[i], d.attribute) for i in ids]
            room = most_in_windows(self.k, d.window, d.max_items)
            if any(values.count(g) > room for g in set(values) if g != ""):
                return False
        return True

    def best_order(self, ids: tuple[str, ...]) -> float | None:
        """The best value of an order of ``ids`` that keeps every rule (None: no order does)."""
        values = [self.value(list(o)) for o in itertools.permutations(ids) if self.holds(list(o))]
        return max(values) if values else None


@cache
def most_in_windows(k: int, window: int, most: int) -> int:
    """The most slots of k one group can fill with at most ``most`` in any ``window``
    consecutive slots, by trying every pattern.
    """
    best = 0
    for pattern in itertools.product((0, 1), repeat=k):
        if all(sum(pattern[t:t + window]) <= most for t in range(max(1, k - window + 1))):
            best = max(best, sum(pattern))
    return best
