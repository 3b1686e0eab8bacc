"""How every constraint fared on the final list, and the one-line explanation the API returns:
what was relaxed and by how much, or which rules shaped the list.

Reports read the rules' values on the final list and on the plain score order, so "binding"
(holds with equality) and "changed the ranking" (the score order breaks it) are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from serve.constraints import Constraints
from serve.rerank_problem import Pool, Rule, violation


@dataclass(frozen=True)
class ConstraintReport:
    """How one constraint fared: ``binding`` = holds with equality (the textbook sense);
    ``changed_ranking`` = the plain score order breaks it, so it shaped the list.
    """

    # Also the API's schema (serve/schemas.py): pydantic publishes these descriptions in the
    # OpenAPI document, so each field is declared here only.
    name: Annotated[str, Field(description="the constraint, e.g. `genre=drama <= 1`")]
    family: Annotated[str, Field(
        description="pin | goal | group_count | new_share | overexposed_share | diversity")]
    bound: Annotated[str, Field(
        description="what `value` must be, e.g. `>= 2` or `>= 1 and <= 3` (empty: no bound)")]
    value: Annotated[float, Field(
        description="its value on the list: a count of items, the most items of one group in "
                    "any window (diversity), or 1 / 0 (pin kept or not)")]
    binding: Annotated[bool, Field(
        description="holds with equality (a pin: holds, and the score order would break it)")]
    relaxed: Annotated[bool, Field(
        description="could not hold together with higher-priority constraints; broken as "
                    "little as possible (see `message`)")]
    changed_ranking: Annotated[bool, Field(
        description="the plain score order breaks it, so it shaped the list")]
    message: Annotated[str, Field(description="how far it was relaxed and why; empty if not")] = ""


def constraint_reports(rules: list[Rule], values: list[float], base: list[float],
                       cons: Constraints, pool: Pool, k: int) -> list[ConstraintReport]:
    """One report per rule (``values`` on the final list, ``base`` on the plain score order),
    then one per pin no list could keep (its item is not a candidate, or it sits past slot k).
    """
    reports = []
    for r, v, b in zip(rules, values, base, strict=True):
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
    return reports


def explanation(reports: list[ConstraintReport], optimal: bool) -> str:
    """What was relaxed, else what shaped the list, else that the score order kept every rule."""
    relaxed = [c.message for c in reports if c.relaxed]
    shaped = [c.name for c in reports if c.changed_ranking and not c.relaxed]
    if relaxed:
        text = "could not satisfy every constraint: " + "; ".join(relaxed)
    elif shaped:
        text = "re-ranked to satisfy: " + "; ".join(shaped)
    else:
        text = "the score order satisfies every constraint"
    if not optimal:
        text += " (solver time limit hit: the best list found, not proven optimal)"
    return text


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
