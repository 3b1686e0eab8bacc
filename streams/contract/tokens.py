"""The event token: the unit of Marquee's behaviour "language", shared by the flow, the model
and the service. One token is one (possibly merged) event with all its facets as small ints.

Facet ids are integers from a ``Vocab`` (categorical facets) or from the bucket functions
below (numeric facets). Id 0 is padding in every facet; id 1 is "unknown" in vocab facets.
The model, the feature store and the service all use the column names in ``FACETS``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from streams.contract.vocab_files import journal_path, read_tables

# Facets in the order the model embeds them; each is an int column in the token log and an
# array feature ("<facet>_seq") in the online store.
FACETS: tuple[str, ...] = ("item", "action", "gap", "hour", "dow", "device", "surface", "duration")

# Token actions: event actions after merging (play/pause/resume/stop/complete -> watch).
TOKEN_ACTIONS: tuple[str, ...] = (
    "impression", "click", "watch", "complete", "abandon", "rate", "add_to_list", "search")

PAD, UNKNOWN = 0, 1
N_GAP_BUCKETS = 16   # ids 1..15
N_DURATION_BUCKETS = 12  # ids 1..11
N_HOURS, N_DOWS = 25, 8  # ids 1..24, 1..7
MAX_SEQ = 200  # most recent tokens kept per user in the online store ("<facet>_seq" arrays)
HOUR_MS, DAY_MS = 3_600_000, 86_400_000

# Values every vocabulary knows from the start, so their ids are the same in every run whatever
# order events arrive in (values first seen at run time get the next free id).
KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "device": ("tv", "phone", "tablet", "web"),
    "surface": ("home/continue_watching", "home/top_picks", "home/new_releases", "home/trending",
                "home/because_you_watched", "search/results", "player/autoplay", "search"),
}


def gap_bucket(gap_ms: int | None) -> int:
    """Log2-scale bucket of the time since the previous token: 1 = first token, 2 = < 1 s,
    then one bucket per doubling from 1 s up to ~4.5 h, 15 = longer.
    """
    if gap_ms is None:
        return 1
    seconds = max(gap_ms, 0) / 1000
    if seconds < 1:
        return 2
    return min(3 + int(math.log2(seconds)), N_GAP_BUCKETS - 1)


def duration_bucket(watch_seconds: float) -> int:
    """Bucket of watch time: 1 = none, then log2 minutes (< 1 min, < 2, < 4 ... >= 256 min)."""
    if watch_seconds <= 0:
        return 1
    minutes = watch_seconds / 60
    if minutes < 1:
        return 2
    return min(3 + int(math.log2(minutes)), N_DURATION_BUCKETS - 1)


def hour_id(ts_ms: int) -> int:
    """Hour of day (UTC) as 1..24."""
    return (ts_ms // HOUR_MS) % 24 + 1


def dow_id(ts_ms: int) -> int:
    """Day of week (UTC, Monday = 1) as 1..7."""
    return (ts_ms // DAY_MS + 3) % 7 + 1  # 1970-01-01 was a Thursday


@dataclass(frozen=True)
class Token:
    """One event token. ``item``..``duration`` are facet ids; the rest is context kept for
    features and the token log.
    """

    user_id: str
    ts: int  # epoch ms of the token's first event
    item_id: str
    item: int
    action: int
    gap: int
    hour: int
    dow: int
    device: int
    surface: int
    duration: int
    watch_seconds: float = 0.0
    completion: float = 0.0  # watched / title duration when known, else 0
    session_start: bool = False
    weight: float = 1.0  # < 1 for down-weighted (accidental-looking) tokens
    n_events: int = 1  # events merged into this token
    event_id: str = ""  # id of the token's first event: stable across replays (token log key)

    def facet_ids(self) -> tuple[int, ...]:
        """The facet ids in ``FACETS`` order."""
        return (self.item, self.action, self.gap, self.hour, self.dow, self.device,
                self.surface, self.duration)


@dataclass
class Vocab:
    """Stable string -> int ids per categorical facet, grown on the fly and persisted as JSON.

    Ids never change once given, so a model trained yesterday and the service today agree.
    ``action`` is fixed (``TOKEN_ACTIONS``); ``item``, ``device`` and ``surface`` grow.
    """

    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        for facet in ("item", "device", "surface"):
            self.tables.setdefault(facet, {})
        self.tables["action"] = {a: i + 2 for i, a in enumerate(TOKEN_ACTIONS)}

    def id(self, facet: str, value: str) -> int:
        """The id of ``value``, assigning the next free one (>= 2) if it is new."""
        table = self.tables[facet]
        got = table.get(value)
        if got is None:
            with self._lock:
                got = table.setdefault(value, len(table) + 2)
        return got

    def lookup(self, facet: str, value: str) -> int:
        """The id of ``value`` or ``UNKNOWN``, never assigning (for read-only users)."""
        return self.tables[facet].get(value, UNKNOWN)

    def size(self, facet: str) -> int:
        """Number of ids including padding and unknown (embedding table size)."""
        return len(self.tables[facet]) + 2

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a vocabulary."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            json.dump(self.tables, tmp, sort_keys=True)
        os.replace(tmp.name, path)

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """Read a saved vocabulary, with the flow's journal beside it if there is one
        (``streams.contract.vocab_files``); a missing file gives an empty one.
        """
        if not path.exists() and not journal_path(path).exists():
            return cls()
        return cls(tables=read_tables(path))

    def items_by_id(self) -> list[str]:
        """Item strings indexed by id (index 0 and 1 are padding/unknown placeholders)."""
        out = ["<pad>", "<unk>"] + [""] * len(self.tables["item"])
        for item, idx in self.tables["item"].items():
            out[idx] = item
        return out
