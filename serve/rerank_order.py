"""Ordering: the best position-weighted order of the chosen k items under pins and diversity
windows (fast mode's second stage), and the exact reductions that keep its assignment MILP
small: which (item, slot) pairs an optimal order can use, and a feasible order to bound it with.

When the score order already keeps the windows it is optimal (rearrangement inequality) and no
solver runs. Otherwise the assignment MILP is pruned by an exchange argument (items that no
window can tell apart keep their score order) and by where the windows let a group's r-th item
sit; its LP starts from the score order's staircase basis, or, with positional pins, is pruned
further by the value of a feasible order found by search.
"""

from __future__ import annotations

import numpy as np

from serve.rerank_milp import Solver
from serve.rerank_problem import Pool, Rule, evaluate, violation, window_cap


def arrange(solver: Solver, pool: Pool, rules: list[Rule], chosen: list[int], k: int,
            w: np.ndarray, strict: bool) -> list[int] | None:
    """The best order of ``chosen`` (ascending pool indices) under its windows and pins; None
    when ``strict`` and no order of it keeps them (another set's may: the caller decides).
    """
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
    model = solver.model(pool, items, k, k, w, order_rules, [], allowed=allowed,
                         place_all=True, staircase=not fixed)
    order = None
    if allowed.any(axis=1).all() and allowed.any(axis=0).all():  # else: no order fits
        order = solver.solve(model, strict=True)
    if order is None and not model.gave_up and strict:
        return None
    if order is None and not model.gave_up:  # the windows cannot all hold: relax them
        relax = solver.model(pool, items, k, k, w, order_rules, [],  # as little as possible
                             allowed=order_pruning(items, k, order_rules, pool),
                             place_all=True)
        order = solver.solve(relax, strict=False)
    if order is None:  # time limit, nothing found: the best order known, not proven best
        if feasible is None:
            feasible = greedy_order(items, k, order_rules, pool)
        order = feasible if feasible is not None else by_score
    return order


def order_pruning(items: np.ndarray, k: int, rules: list[Rule], pool: Pool,
                  windows_hold: bool = False) -> np.ndarray:
    """Allowed (item, slot) pairs when ordering the chosen ``items`` (ascending pool index =
    score order).

    Exchange argument: two unpinned items that share their group under every diversity rule
    where that group is crowded (more than m chosen; other groups can never break a window) can
    swap slots without changing any window count, so in an optimum they keep their score order:
    the r-th of n such items sits in slots r .. k-1-(n-1-r). Pinned items sit at their pin and
    nobody else does.

    ``windows_hold`` (the strict model only): in any order that keeps "at most m of a group in
    any w slots", the group's r-th item (by slot) sits at slot >= (r // m) * w + r % m, and
    likewise counted from the end. An exchange class is part of a group, so its r-th item sits
    no earlier than the group's r-th: the same bounds hold for it.
    """
    n = len(items)
    pinned_at = {r.pin_item: r.pin_pos for r in rules
                 if r.family == "pin" and r.pin_pos is not None}
    keys, spacing = [], []
    for r in rules:
        if r.family == "diversity":
            codes = pool.codes[r.attribute][items]
            counts = np.bincount(codes[codes >= 0], minlength=1)
            crowded = (codes >= 0) & (counts[np.maximum(codes, 0)] > r.hi)
            keys.append(np.where(crowded, codes, -1))
            spacing.append((crowded, r.hi, r.window))
    pinned = np.isin(items, list(pinned_at))
    # one class per key tuple (pinned items each alone), items already in score order
    key_rows = np.array(keys + [np.where(pinned, np.arange(n), -1)]).T + 1
    cls = _row_ids(key_rows)
    by_class = np.lexsort((np.arange(n), cls))
    size = np.bincount(cls)
    first = np.cumsum(size) - size
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - first[cls[by_class]]
    earliest, latest = rank.copy(), k - size[cls] + rank
    if windows_hold:
        after = size[cls] - 1 - rank  # class members after this one
        for crowded, m, w in spacing:
            on = crowded & ~pinned
            earliest[on] = np.maximum(earliest[on], (rank[on] // m) * w + rank[on] % m)
            latest[on] = np.minimum(latest[on], k - 1 - ((after[on] // m) * w + after[on] % m))
    slot = np.arange(k)[None, :]
    allowed = (slot >= earliest[:, None]) & (slot <= latest[:, None])
    if pinned_at:
        at = np.array([pinned_at[int(i)] for i in items[pinned]], dtype=np.int64)
        allowed[:, at] = False
        allowed[np.nonzero(pinned)[0], at] = True
        allowed[pinned] &= np.eye(k, dtype=bool)[at]
    return allowed


def _row_ids(keys: np.ndarray) -> np.ndarray:
    """An id per distinct row of a non-negative int matrix (np.unique(axis=0) is slow: rows
    are packed into one int when they fit).
    """
    base = int(keys.max(initial=0)) + 1
    if base ** keys.shape[1] < 2 ** 62:
        packed = keys.astype(np.int64) @ (np.int64(base) ** np.arange(keys.shape[1],
                                                                      dtype=np.int64))
        return np.unique(packed, return_inverse=True)[1].reshape(-1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def greedy_order(items: np.ndarray, k: int, rules: list[Rule], pool: Pool,
                 budget: int = 400) -> list[int] | None:
    """A feasible order if a best-first search finds one within ``budget`` backtracks (each
    slot takes the best remaining item that keeps its windows and leaves every group few
    enough items to fit the slots left), else None. Only a lower bound for ``bound_pruning``:
    the first order found, usually close to the best.
    """
    fixed = {r.pin_pos: r.pin_item for r in rules if r.family == "pin" and r.pin_pos is not None}
    rest = [int(i) for i in items if int(i) not in set(fixed.values())]
    windows = []  # plain lists: numpy scalars are slow one by one
    for r in rules:
        if r.family == "diversity":
            codes = pool.codes[r.attribute].tolist()
            left: dict[int, int] = {}
            for i in rest:
                if codes[i] >= 0:
                    left[codes[i]] = left.get(codes[i], 0) + 1
            windows.append((codes, r.window, r.hi, left))
    order: list[int] = []
    picks: list[int] = []  # index into rest per slot (-1: a pin)
    used = [False] * len(rest)
    start, backtracks = 0, 0
    while len(order) < k:
        p = len(order)
        if p in fixed:
            order.append(int(fixed[p]))
            picks.append(-1)
            start = 0
            continue
        j = _next_fit(rest, used, start, order, windows, k - p - 1)
        if j is not None:
            used[j] = True
            order.append(rest[j])
            picks.append(j)
            for codes, _, _, left in windows:
                if codes[rest[j]] >= 0:
                    left[codes[rest[j]]] -= 1
            start = 0
            continue
        while picks and picks[-1] < 0:  # back past pins to the last free choice
            picks.pop()
            order.pop()
        backtracks += 1
        if not picks or backtracks > budget:
            return None
        j = picks.pop()
        order.pop()
        used[j] = False
        for codes, _, _, left in windows:
            if codes[rest[j]] >= 0:
                left[codes[rest[j]]] += 1
        start = j + 1
    if any(violation(r, v) > 0 for r, v in zip(rules, evaluate(order, rules, pool), strict=True)):
        return None
    return order


def _next_fit(rest: list[int], used: list[bool], start: int, order: list[int],
              windows: list[tuple], slots_after: int) -> int | None:
    """The best unused item from ``start`` on that keeps the window ending at the next slot
    and leaves no group more items than the ``slots_after`` slots after it could hold.
    """
    for j in range(start, len(rest)):
        if used[j]:
            continue
        i = rest[j]
        ok = True
        for codes, w, m, left in windows:
            g = codes[i]
            if g >= 0 and sum(codes[o] == g for o in order[-(w - 1):]) >= m:
                ok = False
                break
            cap = window_cap(m, w, slots_after)
            if any(n - (h == g) > cap for h, n in left.items()):
                ok = False
                break
        if ok:
            return j
    return None


def bound_pruning(scores: np.ndarray, weights: np.ndarray, lower: float) -> np.ndarray:
    """(item, slot) pairs that can be in an order worth at least ``lower``.

    ``scores`` are in descending order (item r's unconstrained slot is r). The best order with
    item r forced to slot p, ignoring every window, is the score order with r moved to p; it
    loses sum_{q=p}^{r-1} (w_q - w_{q+1}) (s_q - s_r) (p < r; symmetric for p > r). If even
    that is below a known feasible order's value, no optimum puts r at p.
    """
    k = len(scores)
    total = float(weights @ scores)
    dw = weights[:-1] - weights[1:]  # dw[q] = w_q - w_{q+1} >= 0
    zero = np.zeros(1)
    b = np.concatenate([zero, np.cumsum(dw)])  # b[i] = sum_{q<i} dw[q]
    up = np.concatenate([zero, np.cumsum(dw * scores[:-1])])  # sum_{q<i} dw[q] s_q
    down = np.concatenate([zero, np.cumsum(dw * scores[1:])])  # sum_{q<i} dw[q] s_{q+1}
    r, p = np.arange(k)[:, None], np.arange(k)[None, :]
    s = scores[:, None]
    loss = np.where(p < r, (up[r] - up[p]) - s * (b[r] - b[p]),  # r moved up past p..r-1
                    s * (b[p] - b[r]) - (down[p] - down[r]))  # r moved down past r+1..p
    loss = np.maximum(loss, 0.0)  # exactly 0 on the diagonal, >= 0 everywhere in exact terms
    return total - loss >= lower - 1e-9 * max(1.0, abs(lower))
