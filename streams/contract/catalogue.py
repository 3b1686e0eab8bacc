"""The catalogue: one ``Title`` per line of ``catalogue.jsonl`` (docs/contracts.md).

The flow seeds item ids and item features from it, training builds the item tower's metadata
from it, and the service reads genres, kinds, series and release times from it: one reader for
all three, so a field means the same thing everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Title:
    """One catalogue entry: what the item tower and the item features know about a title."""

    item_id: str
    genre: str
    kind: str  # movie | series | episode
    release_ms: int  # epoch ms
    duration_s: int
    series_id: str = ""
    episode: int = 0

    @classmethod
    def from_json(cls, row: dict) -> Title:
        """A title from one parsed line; unknown keys are ignored, missing optional ones default.

        Raises ``ValueError`` naming the line's missing fields.
        """
        missing = [name for name in _REQUIRED if name not in row]
        if missing:
            raise ValueError(f"catalogue title {row.get('item_id', '?')!r} lacks {missing}; "
                             f"each line needs {list(_REQUIRED)} (docs/contracts.md)")
        return cls(**{k: v for k, v in row.items() if k in _FIELDS})


_FIELDS = frozenset(f.name for f in fields(Title))
_REQUIRED = ("item_id", "genre", "kind", "release_ms", "duration_s")


def read_catalogue(path: Path) -> dict[str, Title]:
    """``catalogue.jsonl`` -> {item_id: Title}; an absent file is an empty catalogue."""
    if not path.exists():
        return {}
    with path.open() as lines:
        titles = [Title.from_json(json.loads(line)) for line in lines if line.strip()]
    return {t.item_id: t for t in titles}


def write_catalogue(path: Path, titles: Iterable[Title]) -> Path:
    """Write titles as JSON lines (one title a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for title in titles:
            out.write(json.dumps(asdict(title)) + "\n")
    return path
