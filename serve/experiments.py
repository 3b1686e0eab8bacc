"""The pure logic of online experiments: which variant a user gets (A/B allocation) and how two
rankings become one (team-draft interleaving). No I/O, no models: the ranker calls these.

**Allocation.** A user's variant is a function of (salt, user id) alone: BLAKE2b of
``salt``, a NUL byte and ``user_id``, its first 8 bytes as a number in [0, 1), placed on the
cumulative allocation weights. Every replica, process and restart agrees without shared
state (Python's ``hash()`` is salted per process, so it would not), and a new salt reshuffles
users for a new experiment so that one experiment's arms do not carry over into the next.

**Team-draft interleaving** (Radlinski, Kurup and Joachims, 2008): the two rankings take turns
like captains picking teams; the team with fewer picks so far picks next (a coin decides a tie),
and a pick is that team's best-ranked item not yet in the list. Every item keeps the team that
picked it, so a click or play credits one ranker, and at every prefix the two teams' counts
differ by at most one while both rankings have items left. The coin is seeded per request, so a
logged ranking can be reproduced.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Hashable, Sequence
from itertools import accumulate

SCALE = float(1 << 64)


def unit(salt: str, user_id: str) -> float:
    """The user's stable point in [0, 1) for this salt."""
    digest = hashlib.blake2b(f"{salt}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / SCALE


def allocate(salt: str, user_id: str, weights: Sequence[float]) -> int:
    """The index of the user's arm: arm i gets a share ``weights[i] / sum(weights)`` of users.

    Weights must be positive (the config checks it); the same (salt, user, weights) always
    gives the same arm.
    """
    bounds = list(accumulate(weights))
    return min(bisect_right(bounds, unit(salt, user_id) * bounds[-1]), len(bounds) - 1)


def team_draft(a: Sequence[Hashable], b: Sequence[Hashable], seed: int | str,
               limit: int | None = None, fill: bool = True) -> list[tuple[Hashable, int]]:
    """Interleave rankings ``a`` and ``b`` (best first) into one list of (item, team), team 0
    for ``a`` and 1 for ``b``, at most ``limit`` long.

    While both rankings have items not yet picked, the team with fewer picks picks next (a coin
    seeded by ``seed`` breaks ties) its best remaining item. With ``fill``, once one ranking is
    used up the other's remaining items follow (still its team), so the list covers the union
    of both; without it the list ends there (the textbook algorithm).
    """
    lists = (list(a), list(b))
    rng = random.Random(seed)
    out: list[tuple[Hashable, int]] = []
    taken: set[Hashable] = set()
    cursor = [0, 0]
    picks = [0, 0]
    cap = len(lists[0]) + len(lists[1]) if limit is None else limit

    def next_free(team: int) -> Hashable | None:
        ranking, i = lists[team], cursor[team]
        while i < len(ranking) and ranking[i] in taken:
            i += 1
        cursor[team] = i
        return ranking[i] if i < len(ranking) else None

    while len(out) < cap:
        heads = (next_free(0), next_free(1))
        if heads[0] is None and heads[1] is None:
            break
        if heads[0] is None or heads[1] is None:
            if not fill:
                break
            team = 0 if heads[1] is None else 1
        elif picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            team = rng.randrange(2)
        item = heads[team]
        taken.add(item)
        out.append((item, team))
        picks[team] += 1
    return out
