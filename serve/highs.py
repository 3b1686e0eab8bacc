"""One MILP call into scipy's HiGHS, two ways.

``scipy.optimize.milp`` is the public route. Its Python wrapper costs ~2.5 ms per call on our
~100-column models (option checks that build an options manager per option, a per-column loop
for bound multipliers we never read), more than HiGHS itself spends solving them (~1 ms). The
``core`` route hands the same model to the same HiGHS build that scipy ships
(``scipy.optimize._highspy._core``, private) and reads back only the solution. If that module
ever changes shape, ``solve_milp`` falls back to ``milp`` by itself; the tests run both routes
against brute force.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

try:  # scipy >= 1.15 ships HiGHS bindings here
    from scipy.optimize._highspy import _core as _hcore
except ImportError:  # pragma: no cover - depends on the scipy build
    _hcore = None

Route = Literal["core", "milp"]

# The feasibility-jump heuristic costs ~7 ms per call on these small models and never pays off;
# presolve ~1 ms. A relative gap of 1e-9 makes "optimal" mean optimal.
OPTIONS: dict[str, object] = {"mip_heuristic_run_feasibility_jump": False,
                              "mip_rel_gap": 1e-9}


def solve_milp(c: np.ndarray, a: sparse.csr_matrix, lo: np.ndarray, hi: np.ndarray,
               ub: np.ndarray, time_limit: float, route: Route = "core"
               ) -> tuple[str, np.ndarray | None]:
    """Minimise c @ x, lo <= a @ x <= hi, 0 <= x <= ub, x integer.

    Returns ``("optimal" | "time_limit" | "infeasible" | "error", x or None)``;
    ``time_limit`` carries the best solution found when there is one.
    """
    if route == "core" and _hcore is not None:
        try:
            return _solve_core(c, a, lo, hi, ub, time_limit)
        except (AttributeError, TypeError):  # pragma: no cover - a scipy that moved things
            pass
    with warnings.catch_warnings():  # scipy warns that it passes our options on verbatim
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(c, integrality=np.ones(len(c)), bounds=Bounds(np.zeros(len(c)), ub),
                   constraints=LinearConstraint(a, lo, hi),
                   options={"time_limit": time_limit, "presolve": False, **OPTIONS})
    status = {0: "optimal", 1: "time_limit", 2: "infeasible"}.get(res.status, "error")
    if status == "time_limit" and res.x is None:
        status = "error"
    return status, res.x


def _solve_core(c: np.ndarray, a: sparse.csr_matrix, lo: np.ndarray, hi: np.ndarray,
                ub: np.ndarray, time_limit: float) -> tuple[str, np.ndarray | None]:
    h = _hcore
    csc = sparse.csc_matrix(a)
    n, m = csc.shape[1], csc.shape[0]
    lp = h.HighsLp()
    lp.num_col_, lp.num_row_ = n, m
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, m
    lp.a_matrix_.format_ = h.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr
    lp.a_matrix_.index_ = csc.indices
    lp.a_matrix_.value_ = csc.data.astype(np.float64)
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.asarray(ub, dtype=np.float64)
    lp.row_lower_ = np.where(np.isneginf(lo), -h.kHighsInf, lo).astype(np.float64)
    lp.row_upper_ = np.where(np.isposinf(hi), h.kHighsInf, hi).astype(np.float64)
    lp.integrality_ = [h.HighsVarType.kInteger] * n
    solver = h._Highs()
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("presolve", "off")
    solver.setOptionValue("time_limit", float(time_limit))
    for key, value in OPTIONS.items():
        solver.setOptionValue(key, value)
    solver.passModel(lp)
    solver.run()
    status = solver.getModelStatus()
    ms = h.HighsModelStatus
    if status == ms.kOptimal:
        return "optimal", np.array(solver.getSolution().col_value)
    if status == ms.kTimeLimit:
        info = solver.getInfo()
        if info.objective_function_value != h.kHighsInf and info.primal_solution_status == 2:
            return "time_limit", np.array(solver.getSolution().col_value)
        return "error", None
    if status == ms.kInfeasible:
        return "infeasible", None
    return "error", None
