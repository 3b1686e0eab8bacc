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
    """One item's bucketed counters (bucket -> [plays, impressions, clicks]) and their sums
    over the windows that end at ``newest``, kept as counts arrive: an item's row is then a
    handful of reads, not a walk over up to a day of buckets (the flow writes one per changed
    item per flush).
    """

    item_id: str
    buckets: dict[int, list[int]] = field(default_factory=dict)
    newest: int = 0  # newest bucket seen
    sums: list[int] = field(default_factory=lambda: [0, 0, 0])  # the 24 h window, by column
    plays_1h: int = 0

    def __post_init__(self) -> None:
        if self.buckets:
            self._recount()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "sums" not in state:  # pickled before the sums were kept
            self._recount()

    def _recount(self) -> None:
        self.sums, self.plays_1h = [0, 0, 0], 0
        for bucket, (p, i, c) in self.buckets.items():
            if bucket > self.newest - DAY:
                self.sums[0] += p
                self.sums[1] += i
                self.sums[2] += c
                if bucket > self.newest - HOUR:
                    self.plays_1h += p

    def add(self, event: InteractionEvent) -> bool:
        """Count a play, impression or click; returns whether anything changed."""
        column = COLUMNS.get(event.action)
        return column is not None and self.count(column, event.ts)

    def count(self, column: int, ts: int) -> bool:
        """Count one event of ``column`` (0 plays, 1 impressions, 2 clicks) at ``ts``."""
        bucket = ts // BUCKET_MS
        newest = self.newest
        if bucket <= newest - DAY:
            return False  # outside every window from now on
        if bucket > newest:
            self._advance(newest, bucket)
            newest = bucket
            if len(self.buckets) >= DAY:  # evict only when it can matter (amortized)
                for old in [b for b in self.buckets if b <= bucket - DAY]:
                    del self.buckets[old]
        counts = self.buckets.get(bucket)
        if counts is None:
            counts = self.buckets[bucket] = [0, 0, 0]
        counts[column] += 1
        self.sums[column] += 1
        if column == 0 and bucket > newest - HOUR:
            self.plays_1h += 1
        return True

    def _advance(self, old: int, new: int) -> None:
        """Move the windows' end from bucket ``old`` to ``new``: the buckets in (old - W,
        new - W] leave the window of width W. Each bucket leaves each window once.
        """
        self.newest = new
        buckets, sums = self.buckets, self.sums
        if new - old < len(buckets):  # fewer steps than stored buckets: look each step up
            day = (buckets.get(b) for b in range(old - DAY + 1, new - DAY + 1))
            hour = (buckets.get(b) for b in range(old - HOUR + 1, new - HOUR + 1))
        else:
            day = (c for b, c in buckets.items() if old - DAY < b <= new - DAY)
            hour = (c for b, c in buckets.items() if old - HOUR < b <= new - HOUR)
        for counts in day:
            if counts is not None:
                sums[0] -= counts[0]
                sums[1] -= counts[1]
                sums[2] -= counts[2]
        for counts in hour:
            if counts is not None:
                self.plays_1h -= counts[0]

    def row(self, title: Title | None = None) -> dict[str, Any]:
        """The ``item_stats`` row (``event_timestamp`` = end of the window, ms): the counters
        and the title's catalogue fields (the Feast view ``item_stats`` names the columns; a
        test holds this row to it).
        """
        plays, impressions, clicks = self.sums
        meta = title or NO_TITLE
        return {"item_id": self.item_id, "event_timestamp": (self.newest + 1) * BUCKET_MS,
                "plays_1h": self.plays_1h, "plays_24h": plays, "impressions_24h": impressions,
                "ctr_24h": clicks / impressions if impressions else 0.0,
                "release_ms": meta.release_ms, "genre": meta.genre, "kind": meta.kind,
                "duration_s": meta.duration_s}
