"""A hostile producer against the flow's state: one user's state must not grow with input.

A user's tokenizer keeps the events of the last ``max_lateness_ms`` of *event time* (the
reorder buffer) and the event ids of the last ``dedupe_window_ms`` (dedupe), so its size is
bounded in time, never in count. Event time is the producer's: events that all carry one
``ts`` (and fresh ids) are all kept, about 86 bytes each, until the user's time moves on,
and the whole user is pickled again at every snapshot that touches it. A million such events
for one user is ~86 MB of state and ~4 s of pickling per snapshot.
"""

from __future__ import annotations

import json

from streams.contract.tokens import Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared, TokenizeLogic
from tests.streams.messages import message

SENT = 1_767_225_600_000


def user_state_bytes(n: int) -> int:
    """The snapshot size of user ``u1`` after ``n`` impressions that share one ``ts``."""
    shared = Shared(Vocab(), {}, {}, FlowSettings())
    router, logic = Router(shared), TokenizeLogic(shared, None)
    for start in range(0, n, 5000):
        msgs = [message(json.dumps({"event_id": f"e{i}", "user_id": "u1", "item_id": f"m{i % 50}",
                                    "action": "impression", "ts": SENT, "device": "tv",
                                    "surface": "home/top_picks"}).encode(), b"u1", 0, i, SENT)
                for i in range(start, min(n, start + 5000))]
        logic.on_batch([sl for name, sl in router(msgs) if name != DEAD])
    return len(logic.snapshot()["users"]["u1"])


def test_a_burst_at_one_instant_does_not_grow_a_users_state_without_bound():
    small, large = user_state_bytes(2_000), user_state_bytes(20_000)
    assert large < 2 * small, (
        f"one user's snapshot: {small} bytes after 2,000 events at one ts, {large} after "
        "20,000: the reorder buffer and dedupe ids are bounded by event time only")
