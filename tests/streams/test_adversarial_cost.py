"""A hostile producer against the flow's CPU: refusing a message must cost about its size.

``validate_event`` lists *every* problem, and pydantic builds an error for each unknown
field, so a 1 MB object of 120,000 short unknown keys costs about a second to refuse (the
dead letter keeps 10 of those problems). Other 1 MB shapes (a long list, a long string,
deep nesting) cost 5-80 ms. At Kafka's default 1 MB message limit, one such message a second
keeps a flow worker busy, and the events behind it wait: the cost of refusing a message
should not depend on how many problems it has past the ten a dead letter keeps.
"""

from __future__ import annotations

import json
import time

from streams.contract.tokens import Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared
from tests.streams.messages import message

SENT = 1_767_225_600_000
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play", "ts": SENT,
        "device": "tv", "surface": "home/top_picks"}


def refuse_seconds(router: Router, raw: bytes) -> float:
    """The best of two: seconds for the router to turn ``raw`` into a dead letter."""
    best = float("inf")
    for i in range(2):
        start = time.perf_counter()
        out = router([message(raw, b"u1", 0, i, SENT)])
        best = min(best, time.perf_counter() - start)
        assert [name for name, _ in out] == [DEAD]
    return best


def test_many_unknown_fields_cost_no_more_to_refuse_than_other_megabyte_messages():
    router = Router(Shared(Vocab(), {}, {}, FlowSettings()))
    head = json.dumps(GOOD)[:-1]
    many_keys = (head + "," + ",".join(f'"{i:x}":0' for i in range(120_000)) + "}").encode()
    long_list = json.dumps({**GOOD, "value": [0] * (len(many_keys) // 3)}).encode()
    assert abs(len(many_keys) - len(long_list)) < 100_000  # both about 1 MB
    hostile, plain = refuse_seconds(router, many_keys), refuse_seconds(router, long_list)
    assert hostile < max(8 * plain, 0.1), (
        f"1 MB of unknown fields took {hostile:.3f} s to refuse, a 1 MB list {plain:.3f} s")
