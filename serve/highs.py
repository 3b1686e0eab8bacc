"""One MILP call into scipy's HiGHS, two ways, relaxation first.

``scipy.optimize.milp`` is the public route. Its Python wrapper costs ~2.5 ms per call on our
~100-column models (option checks that build an options manager per option, a per-column loop
for bound multipliers we never read), more than HiGHS itself spends solving them. The ``core``
route hands the same model to the same HiGHS build that scipy ships
(``scipy.optimize._highspy._core``, private) as plain arrays, on one ``Highs`` object per thread
with its options set once, and reads back only the solution. If that module ever changes shape,
``solve_milp`` falls back to ``milp`` by itself; the tests run both routes against brute force.

**LP first** (core route). Building and running HiGHS's MIP solver costs ~1 ms even when the
root LP is already integral, which is what our models mostly are (assignment and count rows
over 0/1 columns). So the core route first solves the LP relaxation with dual simplex. That is
exact, not a heuristic: the LP optimum bounds the MILP optimum, so an integral LP optimum
(checked per solve, then rounded and re-checked against every row) *is* a MILP optimum, and an
infeasible LP proves the MILP infeasible. Only a fractional LP optimum goes on to the MIP solver
(same object, integrality switched on).
"""

from __future__ import annotations

import threading
import warnings
from typing import Literal, NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

try:  # scipy >= 1.15 ships HiGHS bindings here
    from scipy.optimize._highspy import _core as _hcore
except ImportError:  # pragma: no cover - depends on the scipy build
    _hcore = None

Route = Literal["core", "milp"]
Status = Literal["optimal", "time_limit", "infeasible", "error"]

# The feasibility-jump heuristic costs ~7 ms per call on these small models and never pays off;
# presolve costs more than it saves on them too. A relative gap of 1e-9 makes "optimal" mean
# optimal.
OPTIONS: dict[str, object] = {"mip_heuristic_run_feasibility_jump": False,
                              "mip_rel_gap": 1e-9}
# How far from an integer an LP value may be and still count as integral (HiGHS's own
# mip_feasibility_tolerance is 1e-6); the rounded point is re-checked against every row.
INTEGRAL_TOL = 1e-7


class Coo(NamedTuple):
    """A sparse constraint matrix as triplets (row, col, value) and its shape: what the models
    build in a few numpy calls, without scipy.sparse's per-construction checks.
    """

    row: np.ndarray
    col: np.ndarray
    val: np.ndarray
    shape: tuple[int, int]

    def dot(self, x: np.ndarray) -> np.ndarray:
        """A @ x."""
        return np.bincount(self.row, weights=self.val * x[self.col], minlength=self.shape[0])

    def to_csc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, index, value) column-wise, as HiGHS takes them. Entries must be distinct
        (HiGHS rejects a duplicate, and ``solve_milp`` then reports ``error``).
        """
        ncol = self.shape[1]
        col = self.col.astype(np.int16) if ncol < 2 ** 15 else self.col  # radix sort
        order = np.argsort(col, kind="stable")
        start = np.zeros(ncol + 1, dtype=np.int32)
        np.cumsum(np.bincount(self.col, minlength=ncol), out=start[1:])
        return start, self.row[order].astype(np.int32), self.val[order].astype(np.float64)

    def to_scipy(self) -> sparse.csr_matrix:
        """The same matrix for ``scipy.optimize.milp``."""
        return sparse.csr_matrix((self.val, (self.row, self.col)), shape=self.shape)


class Solution(NamedTuple):
    """``status``; ``x`` (``time_limit`` carries the best solution found, None if none was);
    ``how`` = which solver settled it: ``"lp"`` (integral or infeasible relaxation) or ``"mip"``;
    ``duals`` = (reduced costs, row duals) of an integral LP optimum (see ``optimal_face``).
    """

    status: Status
    x: np.ndarray | None
    how: Literal["lp", "mip"]
    duals: tuple[np.ndarray, np.ndarray] | None = None


def solve_milp(c: np.ndarray, a: Coo, lo: np.ndarray, hi: np.ndarray, ub: np.ndarray,
               time_limit: float, route: Route = "core", lp_first: bool = True,
               lb: np.ndarray | None = None, basic: tuple[np.ndarray, int] | None = None
               ) -> Solution:
    """Minimise c @ x, lo <= a @ x <= hi, lb <= x <= ub (lb = 0 by default), x integer.

    ``basic`` (core route, LP first): a starting simplex basis for the relaxation, as a mask
    of basic columns and the number of leading rows whose logicals are nonbasic (every later
    row's logical is basic; every nonbasic column sits at its lower bound). A start only saves
    iterations: HiGHS still proves optimality, and drops a basis it cannot use.
    """
    lb = np.zeros(len(c)) if lb is None else np.asarray(lb, dtype=np.float64)
    if route == "core" and _hcore is not None:
        try:
            return _solve_core(c, a, lo, hi, lb, ub, time_limit, lp_first, basic)
        except (AttributeError, TypeError):  # pragma: no cover - a scipy that moved things
            pass
    with warnings.catch_warnings():  # scipy warns that it passes our options on verbatim
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(c, integrality=np.ones(len(c)), bounds=Bounds(lb, ub),
                   constraints=LinearConstraint(a.to_scipy(), lo, hi),
                   options={"time_limit": time_limit, "presolve": False, **OPTIONS})
    status = {0: "optimal", 1: "time_limit", 2: "infeasible"}.get(res.status, "error")
    return Solution(status, res.x, "mip")


_local = threading.local()


def _highs() -> object:
    """The calling thread's HiGHS object, options set once (one object is not thread-safe)."""
    solver = getattr(_local, "solver", None)
    if solver is None:
        solver = _hcore._Highs()
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("presolve", "off")
        for key, value in OPTIONS.items():
            solver.setOptionValue(key, value)
        _local.solver = solver
    return solver


def _solve_core(c: np.ndarray, a: Coo, lo: np.ndarray, hi: np.ndarray, lb: np.ndarray,
                ub: np.ndarray, time_limit: float, lp_first: bool,
                basic: tuple[np.ndarray, int] | None = None) -> Solution:
    h = _hcore
    solver = _highs()
    # HiGHS checks time_limit against the object's run time summed over every run so far, so
    # a reused object gets the limit as a deadline on that clock.
    solver.setOptionValue("time_limit", solver.getRunTime() + float(time_limit))
    nrow, ncol = a.shape
    if ncol == 0:  # HiGHS calls this model empty: decide it here
        holds = bool((np.asarray(lo) <= 0).all() and (np.asarray(hi) >= 0).all())
        return Solution("optimal", np.zeros(0), "lp") if holds else Solution("infeasible", None,
                                                                               "lp")
    start, index, value = a.to_csc()
    row_lo = np.asarray(lo, dtype=np.float64)  # kHighsInf is inf
    row_hi = np.asarray(hi, dtype=np.float64)
    col_hi = np.asarray(ub, dtype=np.float64)
    kind = np.full(ncol, 0 if lp_first else 1, dtype=np.int32)
    status = solver.passModel(ncol, nrow, len(index), 1, 1, 0.0, np.asarray(c, np.float64),
                              lb, col_hi, row_lo, row_hi, start, index, value, kind)
    if status == h.HighsStatus.kError:
        return Solution("error", None, "lp")
    if basic is not None and lp_first:
        solver.setBasis(_basis(basic, nrow))
    solver.run()
    ms = h.HighsModelStatus
    if lp_first:
        status = solver.getModelStatus()
        if status == ms.kInfeasible:  # no fractional point, so no integer one
            return Solution("infeasible", None, "lp")
        if status == ms.kOptimal:
            sol = solver.getSolution()
            x = np.asarray(sol.col_value)
            r = np.round(x)
            if (np.abs(x - r).max(initial=0.0) <= INTEGRAL_TOL
                    and _holds(a, r, lo, hi, lb, col_hi)):
                duals = (np.asarray(sol.col_dual), np.asarray(sol.row_dual))
                return Solution("optimal", r, "lp", duals if sol.dual_valid else None)
        solver.changeColsIntegrality(ncol, np.arange(ncol, dtype=np.int32),
                                     np.ones(ncol, dtype=np.uint8))
        solver.run()
    status = solver.getModelStatus()
    if status == ms.kOptimal:
        return Solution("optimal", np.asarray(solver.getSolution().col_value), "mip")
    if status == ms.kTimeLimit:
        info = solver.getInfo()
        if info.objective_function_value != h.kHighsInf and info.primal_solution_status == 2:
            return Solution("time_limit", np.asarray(solver.getSolution().col_value), "mip")
        return Solution("time_limit", None, "mip")
    if status == ms.kInfeasible:
        return Solution("infeasible", None, "mip")
    return Solution("error", None, "mip")


def _basis(basic: tuple[np.ndarray, int], nrow: int) -> object:
    cols, nonbasic_rows = basic
    s = _hcore.HighsBasisStatus
    basis = _hcore.HighsBasis()
    basis.col_status = [s.kBasic if b else s.kLower for b in cols.tolist()]
    basis.row_status = [s.kLower] * nonbasic_rows + [s.kBasic] * (nrow - nonbasic_rows)
    basis.valid = True
    return basis


def _holds(a: Coo, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, lb: np.ndarray,
           ub: np.ndarray) -> bool:
    """Whether the rounded point satisfies every row and bound (to 1e-9)."""
    ax = a.dot(x)
    return bool((x >= lb).all() and (x <= ub).all()
                and (ax >= lo - 1e-9).all() and (ax <= hi + 1e-9).all())


# A dual value this far from zero is taken as nonzero (real ones here are >= ~1e-2: integer
# costs over 0/1 rows; noise is ~1e-12, HiGHS's dual feasibility tolerance 1e-7).
DUAL_TOL = 1e-6


def optimal_face(a: Coo, lo: np.ndarray, hi: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                 x: np.ndarray, duals: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounds (lo, hi, lb, ub) that cut the LP's feasible set down to its optimal face.

    Complementary slackness: a point is LP-optimal iff it is feasible, sits at the bound ``x``
    sits at wherever the reduced cost is nonzero, and keeps every row with a nonzero dual
    active as ``x`` does. When ``x`` is integral, the LP optimum equals the MILP optimum, so the
    integer points of this face are exactly the MILP's optimal solutions: a second objective
    can be optimised over them without the usual "objective <= optimum" row, which is what
    makes that second LP fractional.
    """
    col_dual, row_dual = duals
    fix = np.abs(col_dual) > DUAL_TOL
    lb, ub = lb.copy(), ub.copy()
    lb[fix] = ub[fix] = x[fix]
    tight = np.abs(row_dual) > DUAL_TOL
    act = a.dot(x)
    lo, hi = lo.copy(), hi.copy()
    lo[tight] = hi[tight] = act[tight]
    return lo, hi, lb, ub


def solve_lexicographic(c1: np.ndarray, c2: np.ndarray, a: Coo, lo: np.ndarray, hi: np.ndarray,
                        ub: np.ndarray, time_limit: float, route: Route = "core",
                        lp_first: bool = True) -> list[Solution]:
    """Minimise c2 @ x among the minimisers of c1 @ x (same rows and bounds, x integer; c1 @ x
    must be integral at integer points). Returns every call's solution, the answer last.

    When phase 1's LP optimum is integral, phase 2 runs on its optimal face (``optimal_face``),
    warm: the same HiGHS object keeps phase 1's model and optimal basis, and only bounds and
    costs change. Otherwise, or if that LP is fractional, phase 2 is the textbook model with
    the row ``c1 @ x <= optimum`` and goes to branch and bound as needed.
    """
    first = solve_milp(c1, a, lo, hi, ub, time_limit, route, lp_first)
    if first.x is None:
        return [first]
    best = float(c1 @ first.x) + 0.5  # c1 @ x is integral: "< optimum + 1"
    lb = np.zeros(len(c1))
    if first.duals is not None:
        face = optimal_face(a, lo, hi, lb, ub, first.x, first.duals)
        if route == "core" and _hcore is not None:
            warm = _rerun_core(c1, c2, a, (lo, hi, lb, ub), face, best, time_limit)
            if warm is not None:
                return [first, warm]
        lo, hi, lb, ub = face
    nz = np.nonzero(c1)[0]
    nrow, ncol = a.shape
    a2 = Coo(np.concatenate([a.row, np.full(len(nz), nrow)]), np.concatenate([a.col, nz]),
             np.concatenate([a.val, c1[nz]]), (nrow + 1, ncol))
    second = solve_milp(c2, a2, np.append(lo, -np.inf), np.append(hi, best), ub, time_limit,
                        route, lp_first, lb)
    return [first, second]


def _rerun_core(c1: np.ndarray, c2: np.ndarray, a: Coo, was: tuple, face: tuple,
                best: float, time_limit: float) -> Solution | None:
    """Phase 2 on the object that just solved phase 1 (its LP, optimal basis kept): the
    face's column and row bounds (``was``: phase 1's), new costs, then dual simplex from
    there. None unless its optimum is integral and keeps c1 @ x at phase 1's optimum.
    """
    h, solver = _hcore, _highs()
    lo, hi, lb, ub = face
    fixed = np.nonzero((lb != was[2]) | (ub != was[3]))[0].astype(np.int32)
    if len(fixed):
        solver.changeColsBounds(len(fixed), fixed, lb[fixed], ub[fixed].astype(np.float64))
    for i in np.nonzero((lo != was[0]) | (hi != was[1]))[0]:  # now lo == hi, finite
        solver.changeRowBounds(int(i), float(lo[i]), float(hi[i]))
    ncol = len(c2)
    solver.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), np.asarray(c2, np.float64))
    solver.setOptionValue("time_limit", solver.getRunTime() + float(time_limit))
    solver.run()
    if solver.getModelStatus() != h.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(solver.getSolution().col_value)
    r = np.round(x)
    if (np.abs(x - r).max(initial=0.0) <= INTEGRAL_TOL and float(c1 @ r) <= best
            and _holds(a, r, lo, hi, lb, ub)):
        return Solution("optimal", r, "lp")
    return None
