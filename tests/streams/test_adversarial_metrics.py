"""A hostile producer against the flow's metrics: input must not choose label values.

STYLE.md §9 and ``streams.metrics`` promise low-cardinality labels. The refusal reason is a
label of ``marquee_events_invalid_total``, and for an invalid event it is ``invalid_<field>``
of the first problem, where the field can be an *unknown* field, whose name is input. Each
new name is a new time series in every flow process (and, under
``PROMETHEUS_MULTIPROC_DIR``, a new entry in its files): one producer sending events with a
fresh unknown field each time grows the flow's memory, its metric files and every scrape
without bound.
"""

from __future__ import annotations

import json

from streams import metrics
from streams.contract.events import FIXES
from streams.contract.tokens import Vocab
from streams.flow import DEAD, FlowSettings, Router, Shared
from tests.streams.messages import message

SENT = 1_767_225_600_000
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play", "ts": SENT,
        "device": "tv", "surface": "home/top_picks"}


def reasons() -> set[str]:
    """Every ``reason`` label value ``marquee_events_invalid_total`` has so far."""
    return {s.labels["reason"] for m in metrics.EVENTS_INVALID.collect() for s in m.samples}


def test_unknown_field_names_do_not_become_reason_labels():
    router = Router(Shared(Vocab(), {}, {}, FlowSettings()))
    before = reasons()
    msgs = [message(json.dumps({**GOOD, "event_id": f"e{i}", f"tracking_{i:05d}": 1}).encode(),
                    b"u1", 0, i, SENT) for i in range(500)]
    out = router(msgs)
    dead = [d for name, batch in out if name == DEAD for d in batch]
    assert len(dead) == 500  # every one is refused, as it should be
    new = reasons() - before
    # At most one label per contract field (and `invalid_event`), whatever the input says.
    allowed = {f"invalid_{field}" for field in FIXES} | {"invalid_event", "invalid_unknown_field"}
    assert len(new) <= len(allowed), (
        f"{len(new)} new reason label values from 500 messages, e.g. {sorted(new)[:3]}")
    assert new <= allowed, sorted(new - allowed)[:3]
