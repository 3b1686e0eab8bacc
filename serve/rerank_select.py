"""Set selection: which k candidates, under every rule that counts items (and the per-group cap
a diversity window implies), and the joint model that chooses and orders at once.

Exact shortcuts and reductions keep the models small:

* **The top k** by score are the selection when they keep every count: no k items score more.
* **A quick infeasibility proof** (one count row cannot hold beside the pins) skips a strict
  solve that would fail.
* **Dominance** (joint; the selection LP over all N columns costs less than computing it):
  item i dominates j if it scores at least as high, counts
  in every lower-bounded rule j counts in and in no upper-bounded rule j is not in. Swapping j
  for an unchosen dominator keeps every rule (also their violations, when relaxed) and does not
  lower the objective; an optimum that is maximal in the dominance order never holds an item
  with k dominators, so such items are dropped. With the constraints strict, an item with as
  many better same-signature items as its tightest cap (``hi``) is dropped likewise.
"""

from __future__ import annotations

import numpy as np

from serve.rerank_milp import Solver
from serve.rerank_problem import CountRow, Pool, Rule


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


def select(solver: Solver, pool: Pool, rules: list[Rule], rows: list[CountRow], k: int,
           strict: bool) -> list[int]:
    """The best k items (ascending pool indices) under the count rows."""
    if strict and top_k_holds(rows, k):
        return list(range(k))  # the best k by score, and it keeps every count: optimal
    return _solve_counts(solver, pool, rules, rows, k, np.ones(1), strict, joint=False)


def joint(solver: Solver, pool: Pool, rules: list[Rule], rows: list[CountRow], k: int,
          w: np.ndarray, strict: bool) -> list[int]:
    """The best list (pool indices in slot order) under every rule, chosen and ordered at once."""
    return _solve_counts(solver, pool, rules, rows, k, w, strict, joint=True)


def _solve_counts(solver: Solver, pool: Pool, rules: list[Rule], rows: list[CountRow], k: int,
                  w: np.ndarray, strict: bool, joint: bool) -> list[int]:
    """Solve the selection (slots=1) or joint (slots=k) model; a strict solve that turns
    out infeasible is redone as the elastic model. The joint model (N x k columns) is
    solved over the dominance-reduced pool; the selection LP over all N columns costs less
    than computing that reduction.
    """
    slots = k if joint else 1
    model_rows = rows if not joint else [r for r in rows
                                          if rules[r.owner].family != "diversity"]
    signature = model_rows + group_identity_rows(rules, pool, k) if joint else []
    for attempt in ([True] if strict else []) + [False]:
        items = (np.nonzero(dominance_keep(signature, len(pool), k, strict=attempt))[0]
                 if joint else np.arange(len(pool)))
        model = solver.model(pool, items, slots, k, w, rules, model_rows,
                             select_only=not joint)
        order = solver.solve(model, strict=attempt)
        if order is not None:
            return order
        if model.gave_up:  # degrade, don't fail: the score order, its breaches reported
            return list(range(k))
    raise RuntimeError("the elastic re-rank model returned nothing; this is a bug")
