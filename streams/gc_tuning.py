"""The flow process's garbage collector: fewer, cheaper collections.

CPython collects its youngest generation every 700 net allocations of container objects, and
a full collection whenever the long-lived objects grew by a quarter. The flow allocates
containers by the million (events, reorder-buffer entries, tokens, rows) and keeps a growing
state of users, so with the defaults the collector ran thousands of times per million events
and each full collection walked every user's state and every object the imports left (Feast,
pandas, pyarrow): 16% of the flow's CPU over 200,000 synthetic events (docs/design.md). The
flow's objects are freed by reference counting as they go; the collector is only needed for
reference cycles, which now wait for a collection of at most ``YOUNG_THRESHOLD`` objects.
"""

from __future__ import annotations

import gc

# Net container allocations between two collections of the youngest generation (CPython:
# 700). One collection then takes about a millisecond; the older generations keep their
# ratios (every 10 collections of the one below).
YOUNG_THRESHOLD = 50_000


def tune_for_flow() -> None:
    """Collect once, freeze what survives (the imports and the flow's start: never scanned
    again) and collect the young generation every ``YOUNG_THRESHOLD`` allocations. Called once
    per flow process, after its start-up, before it reads.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
