"""A token log that grows a simulated day at a time, as the flow would write it: what
continuous-training tests and measurements retrain on, without Kafka.

Each ``grow_to(day)`` tokenizes the synthetic world's events up to the end of ``day`` with the
data folder's ``vocab.json`` (which only grows: new titles get new ids) and appends the tokens
newer than the last call as one parquet file (``streams.token_log``), the catalogue beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.synthetic import SyntheticWorld, WorldConfig
from streams.contract.events import InteractionEvent
from streams.contract.layout import DataLayout
from streams.contract.tokenizer import tokenize_events
from streams.contract.tokens import DAY_MS, Vocab
from streams.token_log import write_tokens

MARK = "token_days.json"  # the day the log has been grown to


class TokenLogDays:
    """The token log of ``world`` under ``data_dir``, grown day by day."""

    def __init__(self, data_dir: Path, world: WorldConfig) -> None:
        self.layout = DataLayout(data_dir)
        self.world = SyntheticWorld(world)
        self.events = [InteractionEvent.model_validate(e) for e in self.world.events()]
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.world.write_catalogue(self.layout.catalogue)

    @property
    def day(self) -> int:
        """Days written so far (0: none)."""
        mark = self.layout.root / MARK
        return json.loads(mark.read_text())["day"] if mark.exists() else 0

    def end_ms(self, day: int) -> int:
        """The end of ``day`` (exclusive)."""
        return self.world.config.start_ms + day * DAY_MS

    def grow_to(self, day: int) -> int:
        """Append the tokens of the days after ``self.day`` up to ``day``; returns how many."""
        start, end = self.end_ms(self.day), self.end_ms(day)
        vocab = Vocab.load(self.layout.vocab) if self.layout.vocab.exists() else Vocab()
        durations = {t.item_id: t.duration_s for t in self.world.catalogue}
        tokens = tokenize_events((e for e in self.events if e.ts < end), vocab,
                                 durations=durations)
        new = [t for t in tokens if t.ts >= start]
        write_tokens(self.layout.tokens, new, prefix=f"day{day:03d}")
        vocab.save(self.layout.vocab)
        (self.layout.root / MARK).write_text(json.dumps({"day": day}))
        return len(new)
