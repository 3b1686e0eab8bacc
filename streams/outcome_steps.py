"""The experiment join's steps in the flow (``streams.flow`` wires them): the rankings
topic's decode step, the per-user-shard join (``streams.outcomes``) and the sink of its
counts (``streams.outcome_table``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink
from bytewax.outputs import StatelessSinkPartition as _Stateless

from streams import metrics, outcome_table
from streams.outcomes import RANKING, OutcomeShard
from streams.records import ExperimentRows, Outcomes, Rankings

if TYPE_CHECKING:
    from streams.flow import Shared


class RankingRouter:
    """Decode one poll of the rankings topic and group the rankings of an experiment by user
    shard, with each shard's newest ranking time (every record's, experiment or not). A record
    that cannot be read is counted and skipped: the rankings log is the service's own record,
    so there is no producer to tell (``marquee_experiment_rankings_unreadable_total``).
    """

    def __init__(self, shared: Shared) -> None:
        self.shard_of = shared.user_shard

    def __call__(self, poll: list[Any]) -> list[tuple[str, Rankings]]:
        """``[(user shard, Rankings)...]``."""
        shard_of = self.shard_of
        out: dict[str, Rankings] = {}
        for msg in poll:
            try:
                r = RANKING.decode(msg.value() or b"")
                name = shard_of(r.user_id)
            except Exception:  # noqa: BLE001 - one record must never stop the flow
                metrics.RANKINGS_UNREADABLE.inc()
                continue
            batch = out.get(name)
            if batch is None:
                batch = out[name] = Rankings([], r.ts, name)
            elif r.ts > batch.max_ts:
                batch.max_ts = r.ts
            if r.experiment:
                batch.rankings.append(r)
        return list(out.items())


class OutcomeLogic(StatefulBatchLogic[Any, ExperimentRows, dict]):
    """A user shard's experiment join (``streams.outcomes``): counts at once, changed rows to
    the experiment table on the ``log_flush_s`` grid and at the end of input.
    """

    def __init__(self, shared: Shared, resume: dict | None) -> None:
        assert shared.join is not None
        self.settings = shared.settings
        resume = resume or {}
        self.name: str = resume.get("name", "")
        self.shard = OutcomeShard(shared.join, resume)
        self.due = datetime.now(UTC) if self.shard.dirty else None  # owed before a crash
        if self.name:
            metrics.EXPERIMENTS.shards[self.name] = self.shard

    def on_batch(self, values: list[Any]) -> tuple[Iterable[ExperimentRows], bool]:
        """Hold rankings, join events; rows go out when their tick is due."""
        shard = self.shard
        for value in values:
            if not self.name:
                self.name = value.shard
                metrics.EXPERIMENTS.shards[self.name] = shard
            if type(value) is Outcomes:
                shard.events(value.events, value.watermark)
            else:
                shard.rankings(value.rankings, value.max_ts)
        for reason, n in shard.take_unjoined().items():
            metrics.EXPERIMENT_UNJOINED.labels(reason=reason).inc(n)
        if self.due is None and shard.dirty:
            period = self.settings.log_flush_s
            self.due = datetime.fromtimestamp((time.time() // period + 1) * period, UTC)
        if self.due is not None and self.due <= datetime.now(UTC):
            return self.on_notify()
        return (), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[ExperimentRows], bool]:
        """Emit the rows that changed."""
        self.due = None
        rows = self.shard.take_rows()
        return ([ExperimentRows(self.name, rows)] if rows else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[ExperimentRows], bool]:
        """End of input: with ``finish_at_eof`` the events still waiting for a ranking count
        as not joined; write what is owed.
        """
        if self.settings.finish_at_eof:
            self.shard.finish()
            for reason, n in self.shard.take_unjoined().items():
                metrics.EXPERIMENT_UNJOINED.labels(reason=reason).inc(n)
        return self.on_notify()

    def notify_at(self) -> datetime | None:
        """When the changed rows are due."""
        return self.due

    def snapshot(self) -> dict:
        """Held rankings (minutes no event touched keep their bytes), waiting events, counts."""
        return {"name": self.name, **self.shard.snapshot()}


class _ExperimentPartition(_Stateless[ExperimentRows]):
    def __init__(self, path: Path) -> None:
        self.path = path

    def write_batch(self, values: list[ExperimentRows]) -> None:
        outcome_table.write_rows(self.path, [(v.shard, v.rows) for v in values])


class ExperimentSink(DynamicSink[ExperimentRows]):
    """The experiment table (``streams.outcome_table``): rows replaced, so a replay after a
    crash writes the same counts again rather than adding them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def build(self, step_id: str, worker_index: int, worker_count: int
              ) -> _ExperimentPartition:
        """One writer per worker (they share the file; SQLite serialises them)."""
        return _ExperimentPartition(self.path)
