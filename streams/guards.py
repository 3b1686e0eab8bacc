"""The flow's steps under quarantine (``streams.quarantine``), as wrappers around them.

Each guarded step writes the offset ranges of a batch to its worker's slot before it runs it,
and records an exception it raises. While the run has suspects or verdicts, a poll that holds
one is split: poison messages become dead letters, suspects go alone through each step (their
own Router call, slice and item-count batch), the rest in runs as usual. With nothing to
watch, a step costs one slot write per call, skipped when the ranges did not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bytewax.operators import StatefulBatchLogic

from streams import metrics
from streams.quarantine import POISON, Quarantine, Ranges, Slot, Suspect, Verdict
from streams.records import DeadLetter, Slice

ROUTE = "decode_route"
Routed = list[tuple[str, Any]]


class Traced(list):
    """Item-count updates that carry the offset ranges of the messages they count, so that
    the item-stats step can record them too.
    """

    __slots__ = ("ranges",)

    def __init__(self, updates: Iterable[Any], ranges: Ranges) -> None:
        super().__init__(updates)
        self.ranges = ranges


def span(each: Iterable[Ranges]) -> Ranges:
    """One ``(partition, first, last)`` per partition covering all of ``each``."""
    cover: dict[int, tuple[int, int]] = {}
    for ranges in each:
        for partition, first, last in ranges:
            seen = cover.get(partition)
            cover[partition] = (first, last) if seen is None else (
                min(seen[0], first), max(seen[1], last))
    return tuple((p, first, last) for p, (first, last) in sorted(cover.items()))


def slice_ranges(sl: Slice) -> Ranges:
    """A slice's messages come from one poll of one partition, in offset order."""
    origins = sl.origins
    if not origins or origins[0][2] < 0:  # raw bytes (tests) carry no offsets
        return ()
    return ((origins[0][2], origins[0][3], origins[-1][3]),)


def traced_ranges(updates: list[Any]) -> Ranges:
    """The ranges a ``Traced`` batch of item counts came from (none for a plain list)."""
    return getattr(updates, "ranges", ())


def trace_counts(out: Iterable[Any], ranges: Ranges) -> list[Any]:
    """Tokenize's item counts, ``(item shard, updates)`` tuples, as ``Traced`` updates."""
    return [(x[0], Traced(x[1], ranges)) if type(x) is tuple else x for x in out]


def poison_letter(msg: Any, verdict: Verdict) -> DeadLetter:
    """The dead letter of a poison message, counted as consumed and refused."""
    metrics.EVENTS_CONSUMED.inc()
    metrics.EVENTS_INVALID.labels(reason=POISON).inc()
    return DeadLetter(POISON, verdict.problems(), msg.value() or b"", msg.key(),
                      msg.partition(), msg.offset())


class GuardedRouter:
    """The decode/route step (one call per poll of one partition) under quarantine."""

    def __init__(self, router: Callable[[list[Any]], Routed], quarantine: Quarantine,
                 dead_key: str) -> None:
        self.router = router
        self.quarantine = quarantine
        self.dead_key = dead_key

    def __call__(self, poll: list[Any]) -> Routed:
        """What the router makes of ``poll``, suspects alone and poison dead-lettered."""
        if not poll or type(poll[0]) is bytes or type(poll[0]) is str:
            return self.router(poll)  # test input: no offsets to record
        q = self.quarantine
        partition, first, last = poll[0].partition(), poll[0].offset(), poll[-1].offset()
        if q.watching and q.watched(partition, first, last):
            return self._one_by_one(poll, q.slot())
        slot = q.slot()
        slot.begin(ROUTE, ((partition, first, last),))
        return self._call(poll, slot)

    def _one_by_one(self, poll: list[Any], slot: Slot) -> Routed:
        q = self.quarantine
        out: Routed = []
        run: list[Any] = []
        for msg in poll:
            partition, offset = msg.partition(), msg.offset()
            verdict = q.verdict(partition, offset)
            suspect = None if verdict else q.suspect(partition, offset)
            if verdict is None and suspect is None:
                run.append(msg)
                continue
            out += self._run(run, slot)
            run = []
            if verdict is not None:
                out.append((self.dead_key, [poison_letter(msg, verdict)]))
            else:
                assert suspect is not None
                slot.begin_one(ROUTE, partition, offset, suspect.crashes)
                out += self._call([msg], slot)
                slot.done()
        return out + self._run(run, slot)

    def _run(self, run: list[Any], slot: Slot) -> Routed:
        if not run:
            return []
        slot.begin(ROUTE, ((run[0].partition(), run[0].offset(), run[-1].offset()),))
        return self._call(run, slot)

    def _call(self, poll: list[Any], slot: Slot) -> Routed:
        try:
            return self.router(poll)
        except BaseException as exc:  # recorded, then on: the process must die
            slot.failed(exc)
            raise


class GuardedLogic(StatefulBatchLogic[Any, Any, Any]):
    """A stateful batch step under quarantine: ``inner`` does the work, unchanged.

    ``ranges_of`` gives each value's offset ranges; ``trace`` (tokenize) passes the batch's
    ranges on to the values it emits.
    """

    def __init__(self, step: str, inner: StatefulBatchLogic, quarantine: Quarantine,
                 ranges_of: Callable[[Any], Ranges],
                 trace: Callable[[Iterable[Any], Ranges], list[Any]] | None = None) -> None:
        self.step = step
        self.inner = inner
        self.quarantine = quarantine
        self.ranges_of = ranges_of
        self.trace = trace

    def on_batch(self, values: list[Any]) -> tuple[Iterable[Any], bool]:
        """The inner step's ``on_batch``: the whole batch, or suspects alone while there are any."""
        q = self.quarantine
        slot = q.slot()
        if not q.suspecting:
            ranges = span(map(self.ranges_of, values))
            slot.begin(self.step, ranges)
            return self._call(values, ranges, slot)
        out: list[Any] = []
        retain = StatefulBatchLogic.RETAIN
        for group, ranges, suspect in self._groups(values):
            if suspect is None:
                slot.begin(self.step, ranges)
                emitted, retain = self._call(group, ranges, slot)
            else:
                ((partition, offset, _),) = ranges
                slot.begin_one(self.step, partition, offset, suspect.crashes)
                emitted, retain = self._call(group, ranges, slot)
                slot.done()
            out.extend(emitted)
        return out, retain

    def _groups(self, values: list[Any]) -> Iterable[tuple[list[Any], Ranges,
                                                         Suspect | None]]:
        """Runs of plain values, and each value that is one suspect message alone."""
        q = self.quarantine
        run: list[Any] = []
        run_ranges: list[Ranges] = []
        for value in values:
            ranges = self.ranges_of(value)
            suspect = None
            if len(ranges) == 1 and ranges[0][1] == ranges[0][2]:
                suspect = q.suspect(ranges[0][0], ranges[0][1])
            if suspect is None:
                run.append(value)
                run_ranges.append(ranges)
                continue
            if run:
                yield run, span(run_ranges), None
                run, run_ranges = [], []
            yield [value], ranges, suspect
        if run:
            yield run, span(run_ranges), None

    def _call(self, values: list[Any], ranges: Ranges,
              slot: Slot) -> tuple[Iterable[Any], bool]:
        try:
            out, retain = self.inner.on_batch(values)
        except BaseException as exc:  # recorded, then on: the process must die
            slot.failed(exc)
            raise
        if self.trace is not None:
            out = self.trace(out, ranges)
        return out, retain

    def _outside(self, call: Callable[[], tuple[Iterable[Any], bool]]) -> tuple[
            Iterable[Any], bool]:
        slot = self.quarantine.slot()
        slot.begin(f"{self.step} flush", ())
        try:
            return call()
        except BaseException as exc:
            slot.failed(exc)
            raise

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        """The inner step's flush (no message in flight)."""
        return self._outside(self.inner.on_notify)

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        """The inner step's end of input (no message in flight)."""
        return self._outside(self.inner.on_eof)

    def notify_at(self) -> Any:
        """The inner step's next flush."""
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        """The inner step's state."""
        return self.inner.snapshot()


def guard_router(router: Callable[[list[Any]], Routed], quarantine: Quarantine | None,
                 dead_key: str) -> Callable[[list[Any]], Routed]:
    """``router`` under ``quarantine`` (itself when there is none)."""
    return router if quarantine is None else GuardedRouter(router, quarantine, dead_key)


def guard_logic(step: str, logic: StatefulBatchLogic, quarantine: Quarantine | None,
                ranges_of: Callable[[Any], Ranges],
                trace: Callable[[Iterable[Any], Ranges], list[Any]] | None = None
                ) -> StatefulBatchLogic:
    """``logic`` under ``quarantine`` (itself when there is none)."""
    if quarantine is None:
        return logic
    return GuardedLogic(step, logic, quarantine, ranges_of, trace)
