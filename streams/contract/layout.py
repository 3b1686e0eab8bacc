"""Where a data folder keeps what the flow writes and training and serving read
(docs/contracts.md): one object, so no package types these file names itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """The files of one data folder, all under ``root``."""

    root: Path

    @property
    def catalogue(self) -> Path:
        """Catalogue of titles (JSON lines), read by the flow, training and the service."""
        return self.root / "catalogue.jsonl"

    @property
    def vocab(self) -> Path:
        """The flow's vocabulary (``SharedVocab``): ids of items, devices and surfaces."""
        return self.root / "vocab.json"

    @property
    def tokens(self) -> Path:
        """The flow's token log (parquet folder): the offline store training reads."""
        return self.root / "tokens"

    @property
    def feast(self) -> Path:
        """The effective Feast repo and its SQLite online store."""
        return self.root / "feast"

    @property
    def experiments(self) -> Path:
        """The flow's experiment counts (SQLite, ``streams.outcome_table``): what
        ``marquee experiment report`` reads.
        """
        return self.root / "experiments.sqlite3"

    def quarantine(self, topic: str) -> Path:
        """What the flow's steps had in flight at a crash, and the poison messages, of one
        events topic (``streams.quarantine``).
        """
        return self.root / "quarantine" / topic
