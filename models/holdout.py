"""The time-based holdout of continuous training: the newest slice of the token log is the
exam, everything before it is what a candidate may learn from.

A random holdout would let a retrained model learn from interactions that happened after the
ones it is tested on (and from the same days as them); serving never gets that. Here the cut is
a time ``T``: each user's first interaction at or after ``T`` is a *recent* target, seen
through the history before it, and no candidate trains on a token at or after ``T``. The
standard leave-one-out split is kept as a second exam (its validation and test targets stay
out of training too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import FOLLOW_UPS, I_ACTION, I_ITEM, Corpus, Split, context_end, leave_one_out
from streams.contract.tokens import HOUR_MS


@dataclass
class TimeSplit:
    """What a candidate trains on (``split.train`` ends before ``cut_ms``; ``split.valid``
    targets too), the standard test (``split.test``), and the recent slice's targets.
    """

    cut_ms: int
    split: Split
    recent: dict[str, tuple[int, int]]  # user -> (history end, target item)


def cut_time(corpus: Corpus, holdout_hours: float) -> int:
    """``T`` = the newest token's time minus ``holdout_hours``."""
    if not corpus.ts:
        raise ValueError("the data has no event times (a SASRec file?): a time-based holdout "
                         "needs a token log")
    newest = max(int(t[-1]) for t in corpus.ts.values() if len(t))
    return newest - int(holdout_hours * HOUR_MS)


def time_split(corpus: Corpus, cut_ms: int) -> TimeSplit:
    """Split ``corpus`` at ``cut_ms`` (see the module docstring)."""
    loo = leave_one_out(corpus)
    positive = corpus.positive_ids()
    follow = {corpus.vocab.lookup("action", a) for a in FOLLOW_UPS}
    split = Split({}, {}, dict(loo.test))
    recent: dict[str, tuple[int, int]] = {}
    for user, seq in corpus.sequences.items():
        ts = corpus.ts[user]
        before = int(np.searchsorted(ts, cut_ms, side="left"))  # tokens with ts < cut
        split.train[user] = min(loo.train[user], before)
        pos = np.flatnonzero(np.isin(seq[:, I_ACTION], positive))
        if user in loo.valid and ts[pos[-2]] < cut_ms:
            split.valid[user] = loo.valid[user]
        later = pos[pos >= before]
        if len(later) and later[0] > pos[0]:
            prev = pos[pos < later[0]][-1]
            recent[user] = (context_end(seq, int(prev), follow), int(seq[later[0], I_ITEM]))
    return TimeSplit(cut_ms, split, recent)
