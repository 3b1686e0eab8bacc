"""Item-level stream features: plays, impressions and CTR over sliding event-time windows.

Counts live in one-minute buckets per item, so memory is bounded (at most 24 * 60 buckets)
and the result does not depend on arrival order: windows end at the newest event time the
item has seen, and a bucket is only evicted once it is outside every future window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.contract.catalogue import Title
from streams.contract.events import Action, InteractionEvent

BUCKET_MS = 60_000
HOUR, DAY = 60, 24 * 60  # in buckets
COLUMNS: dict[Action, int] = {Action.PLAY: 0, Action.IMPRESSION: 1, Action.CLICK: 2}
NO_TITLE = Title("", "", "", 0, 0)  # catalogue fields of an item the catalogue lacks


@dataclass
class ItemCounter:
    """One item's bucketed counters (bucket -> [plays, impressions, clicks])."""

    item_id: str
    buckets: dict[int, list[int]] = field(default_factory=dict)
    newest: int = 0  # newest bucket seen

    def add(self, event: InteractionEvent) -> bool:
        """Count a play, impression or click; returns whether anything changed."""
        column = COLUMNS.get(event.action)
        return column is not None and self.count(column, event.ts)

    def count(self, column: int, ts: int) -> bool:
        """Count one event of ``column`` (0 plays, 1 impressions, 2 clicks) at ``ts``."""
        bucket = ts // BUCKET_MS
        if bucket <= self.newest - DAY:
            return False  # outside every window from now on
        if bucket > self.newest:
            self.newest = bucket
            if len(self.buckets) >= DAY:  # evict only when it can matter (amortized)
                for old in [b for b in self.buckets if b <= bucket - DAY]:
                    del self.buckets[old]
        counts = self.buckets.get(bucket)
        if counts is None:
            counts = self.buckets[bucket] = [0, 0, 0]
        counts[column] += 1
        return True

    def row(self, title: Title | None = None) -> dict[str, Any]:
        """The ``item_stats`` row (``event_timestamp`` = end of the window, ms): the counters
        and the title's catalogue fields (the Feast view ``item_stats`` names the columns; a
        test holds this row to it).
        """
        plays_1h = plays = impressions = clicks = 0
        for bucket, (p, i, c) in self.buckets.items():
            if bucket > self.newest - DAY:
                plays += p
                impressions += i
                clicks += c
                if bucket > self.newest - HOUR:
                    plays_1h += p
        meta = title or NO_TITLE
        return {"item_id": self.item_id, "event_timestamp": (self.newest + 1) * BUCKET_MS,
                "plays_1h": plays_1h, "plays_24h": plays, "impressions_24h": impressions,
                "ctr_24h": clicks / impressions if impressions else 0.0,
                "release_ms": meta.release_ms, "genre": meta.genre, "kind": meta.kind,
                "duration_s": meta.duration_s}
