"""A fault drill: make the tokenize step fail on chosen events, to check supervision and
quarantine end to end (``MARQUEE_FLOW_FAULT``).

A real bug that only one message triggers is rare and cannot be produced on demand; this is
the same failure on demand. ``raise`` makes the step raise ``RuntimeError`` (a Python bug);
``kill`` SIGKILLs the worker's own process from inside the step (a segfault or the OOM killer:
nothing runs after it). Off by default, and then the flow holds ``None`` and checks nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from typing import Protocol

ACTIONS = ("raise", "kill")


class _HasEventId(Protocol):
    event_id: str


def parse_faults(text: str) -> dict[str, str]:
    """``"<event_id>:raise,<event_id>:kill"`` -> ``{event_id: action}``; empty -> ``{}``."""
    faults: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        event_id, sep, action = part.rpartition(":")
        if not sep or not event_id or action not in ACTIONS:
            raise ValueError(f"fault {part!r}: write <event_id>:raise or <event_id>:kill, "
                             "several separated by commas (MARQUEE_FLOW_FAULT)")
        faults[event_id] = action
    return faults


class Drill:
    """The faults to trigger, by event id."""

    def __init__(self, faults: Mapping[str, str]) -> None:
        self.faults = dict(faults)

    @classmethod
    def from_setting(cls, text: str) -> Drill | None:
        """The drill ``text`` asks for, or None when it is empty (the flow then checks nothing)."""
        faults = parse_faults(text)
        return cls(faults) if faults else None

    def meet(self, events: Iterable[_HasEventId]) -> None:
        """Fail as asked if one of ``events`` is a drill event; otherwise return."""
        faults = self.faults
        for ev in events:
            action = faults.get(ev.event_id)
            if action == "raise":
                raise RuntimeError(f"fault drill: event {ev.event_id} (MARQUEE_FLOW_FAULT)")
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
