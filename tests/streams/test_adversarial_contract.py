"""A hostile producer against the contract's edges: the flow accepts what the schema refuses.

Producers (and Tansu's schema registry) check events against the shipped JSON Schema
(``infra/schemas/interaction-event.v1.json``); the flow decides with ``decode_event``. Where
the two disagree, a producer that validates gets one answer and the flow another. Found:
``"v": true`` (the schema wants the integer 1; Python's ``True == 1`` lets it through) and a
fractional ``ts`` (the schema wants an integer; the flow truncates it).
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from streams.contract.events import json_schema
from streams.contract.fast_events import decode_event

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "m1", "action": "play",
        "ts": 1_767_225_600_000, "device": "tv", "surface": "home/top_picks"}

EDGES = {
    "v true": {**GOOD, "v": True},
    "ts with a fraction": {**GOOD, "ts": 1_767_225_600_000.5},
}


@pytest.mark.parametrize("name", list(EDGES))
def test_the_flow_refuses_what_the_shipped_schema_refuses(name):
    event = EDGES[name]
    schema_errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(event))
    assert schema_errors, "the schema accepts it: this edge is not a disagreement"
    decoded, problems = decode_event(json.dumps(event).encode())
    assert decoded is None and problems, (
        f"{name}: the schema refuses it ({schema_errors[0].message}) but the flow accepts it")
