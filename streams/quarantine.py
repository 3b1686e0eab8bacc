"""Which messages were being processed when the flow died, and what to do with them next time.

A step that fails on a batch because of a bug (not bad input, which the decoder already routes
to the dead-letter topic) kills its process; recovery then restores state from the last
snapshot and replays the same batch, which fails again: a crash loop. To break it:

1. Before a step processes a batch, its worker thread writes what the batch holds, as
   per-partition offset ranges, to its own small file (``w-<pid>-<n>.json``: one slot per
   thread, overwritten in place, no fsync: a killed process leaves the page cache behind). A
   step that raises adds the exception; a hard crash (SIGKILL, segfault) leaves the file as it
   was, without one.
2. At start, ``Quarantine.open`` folds the previous run's slots into *suspects* (the ranges a
   step was in) and *verdicts* (single messages that a step was processing alone when the run
   died). The flow processes suspects one message at a time, each step writing that exact
   message first and marking it done after; a message that kills the process again is known
   exactly, and from the next start on it is dead-lettered as ``poison`` instead of processed.
   Suspects stay suspects until a run ends between messages (it processed all it read).

Verdicts are kept (``poison.json``, fsynced): a replay from an older snapshot must not run a
poison message again. Suspects are kept in ``suspects.json``: every process of a cluster reads
both at its start, and only the first to start folds the slots (under a file lock).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import traceback
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Any

from streams.contract.atomic import locked

log = logging.getLogger(__name__)

Ranges = tuple[tuple[int, int, int], ...]  # ((partition, first offset, last offset), ...)
POISON = "poison"  # the dead-letter reason
MAX_SUSPECTS = 256  # ranges kept across crashes (the newest first); each costs a check per poll


@dataclass(frozen=True)
class Suspect:
    """Offsets of one partition that a step was processing when the flow died."""

    partition: int
    first: int
    last: int
    step: str
    crashes: int  # crashes these offsets were in flight at
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A message that crashed the flow while a step processed it alone."""

    partition: int
    offset: int
    step: str
    crashes: int
    error: str | None = None

    def problems(self) -> tuple[str, ...]:
        """The dead letter's problems: where it failed, how, and what to do."""
        what = self.error or ("no exception: the process died (killed, or crashed hard) "
                              "while this step processed it")
        return (f"step {self.step}: {what}",
                f"this message crashed the flow {self.crashes} times; fix: report it with "
                "this dead letter (it holds the message) to whoever owns the flow")


def describe(exc: BaseException, frames: int = 3, limit: int = 400) -> str:
    """``Type: message (at file:line in function < ...)``, bounded, for a record."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > limit:
        text = text[:limit] + "..."
    where = [f"{Path(f.filename).name}:{f.lineno} in {f.name}"
             for f in traceback.extract_tb(exc.__traceback__)[-frames:]]
    return f"{text} (at {' < '.join(reversed(where))})" if where else text


def fold(records: Iterable[dict[str, Any]], carried: Iterable[Suspect] = ()
         ) -> tuple[list[Suspect], list[Verdict]]:
    """The previous run's slots (and the suspects it started with) -> suspects and verdicts.

    A message being processed alone whose step raised, or was in flight at a hard crash
    (no step raised anywhere), is a verdict. A message in flight alone while *another* step
    raised was a bystander, and a batch's ranges only narrow the search: both are suspects.
    The run's own suspects are kept (it may have died of another message before it reached
    them), unless every slot was between messages at its end: it had processed all it read.
    """
    records = list(records)
    raised = any(r.get("error") for r in records)
    suspects: dict[tuple[int, int, int], Suspect] = {}
    verdicts: list[Verdict] = []
    in_flight = [r for r in records if r.get("ranges") and not r.get("done")]
    for r in in_flight:
        crashes, error, step = r.get("crashes", 0) + 1, r.get("error"), r["step"]
        if r.get("exact") and not r.get("stopped") and (error or not raised):
            ((partition, offset, _),) = r["ranges"]
            verdicts.append(Verdict(partition, offset, step, crashes, error))
        else:
            for p, first, last in r["ranges"]:
                suspects[p, first, last] = Suspect(p, first, last, step, crashes, error)
    if in_flight or raised:
        for s in carried:
            suspects.setdefault((s.partition, s.first, s.last), s)
    return list(suspects.values())[:MAX_SUSPECTS], verdicts


class Slot:
    """One worker thread's record of what it is processing: one file, rewritten in place.

    Writes are skipped when nothing changed, and padded to the longest record so far (JSON
    allows trailing blanks), so a rewrite is one ``pwrite`` with no truncate.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self.writes = 0
        self.last: tuple[str, Ranges] | None = None
        self.record: dict[str, Any] = {}

    def begin(self, step: str, ranges: Ranges) -> None:
        """``step`` starts a batch of these ranges (or, with none, work outside messages)."""
        if self.last == (step, ranges):
            return
        self.last = (step, ranges)
        self.record = {"step": step, "ranges": ranges}
        spans = ",".join(f"[{p},{first},{last}]" for p, first, last in ranges)
        self._put(f'{{"step":"{step}","ranges":[{spans}]}}'.encode())  # json.dumps: 4x the cost

    def begin_one(self, step: str, partition: int, offset: int, crashes: int) -> None:
        """``step`` starts one suspect message alone (known ``crashes`` so far)."""
        self.last = None
        self._write({"step": step, "ranges": ((partition, offset, offset),), "exact": True,
                     "crashes": crashes})

    def done(self) -> None:
        """The message begun with ``begin_one`` went through the step."""
        self._write({**self.record, "done": True})

    def failed(self, exc: BaseException) -> None:
        """The step raised ``exc``: record it (it propagates, and the process dies)."""
        self.last = None
        if isinstance(exc, Exception):
            self._write({**self.record, "error": describe(exc)})
        else:  # KeyboardInterrupt, SystemExit: a stop, not this message's fault
            self._write({**self.record, "stopped": True})

    def _write(self, record: dict[str, Any]) -> None:
        self.record = record
        self._put(json.dumps(record, separators=(",", ":")).encode())

    def _put(self, data: bytes) -> None:
        self.size = max(self.size, len(data))
        os.pwrite(self.fd, data.ljust(self.size), 0)
        self.writes += 1


class Quarantine:
    """The suspects and verdicts this run starts with, and each worker thread's slot."""

    def __init__(self, folder: Path, suspects: Iterable[Suspect] = (),
                 verdicts: Iterable[Verdict] = ()) -> None:
        self.folder = folder
        self.suspects: dict[int, list[Suspect]] = {}
        for s in suspects:
            self.suspects.setdefault(s.partition, []).append(s)
        self.verdicts = {(v.partition, v.offset): v for v in verdicts}
        self._poisoned: dict[int, list[int]] = {}
        for p, o in sorted(self.verdicts):
            self._poisoned.setdefault(p, []).append(o)
        # False: the checks are skipped (poison is dropped by the first step, so the later
        # steps only look for suspects)
        self.watching = bool(self.suspects or self.verdicts)
        self.suspecting = bool(self.suspects)
        self._local = threading.local()
        self._numbers = count()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: Path) -> Quarantine:
        """Fold the previous run's slots (if this is the first process of the run to start)
        and load what the run must watch for.
        """
        folder.mkdir(parents=True, exist_ok=True)
        with locked(folder / ".lock"):
            verdicts = [Verdict(**v) for v in _read(folder / "poison.json", [])]
            slots = sorted(folder.glob("w-*.json"))
            if slots:
                records = [r for r in map(_slot_record, slots) if r]
                carried = [Suspect(**s) for s in _read(folder / "suspects.json", [])]
                suspects, new = fold(records, carried)
                known = {(v.partition, v.offset) for v in verdicts}
                verdicts += [v for v in new if (v.partition, v.offset) not in known]
                _write_durably(folder / "poison.json", [asdict(v) for v in verdicts])
                _write_durably(folder / "suspects.json", [asdict(s) for s in suspects])
                for path in slots:
                    path.unlink()
                old = set(carried)
                _log_crash(folder, records, [s for s in suspects if s not in old], new)
            else:
                suspects = [Suspect(**s) for s in _read(folder / "suspects.json", [])]
        return cls(folder, suspects, verdicts)

    def watched(self, partition: int, first: int, last: int) -> bool:
        """Whether offsets ``first..last`` of ``partition`` hold a suspect or poison."""
        for s in self.suspects.get(partition, ()):
            if s.first <= last and first <= s.last:
                return True
        offsets = self._poisoned.get(partition)
        if offsets:
            i = bisect_left(offsets, first)
            return i < len(offsets) and offsets[i] <= last
        return False

    def suspect(self, partition: int, offset: int) -> Suspect | None:
        """The suspect range holding this message, if any."""
        for s in self.suspects.get(partition, ()):
            if s.first <= offset <= s.last:
                return s
        return None

    def verdict(self, partition: int, offset: int) -> Verdict | None:
        """The verdict on this message, if it is poison."""
        return self.verdicts.get((partition, offset))

    def slot(self) -> Slot:
        """The calling worker thread's slot (created on first use)."""
        slot = getattr(self._local, "slot", None)
        if slot is None:
            with self._lock:
                n = next(self._numbers)
            slot = self._local.slot = Slot(self.folder / f"w-{os.getpid()}-{n}.json")
        return slot


def _read(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default


def _slot_record(path: Path) -> dict[str, Any] | None:
    data = path.read_bytes()
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:  # only a machine crash (not a process crash) could leave this
        log.warning("quarantine: ignoring unreadable slot %s: %r", path, data[:200])
        return None


def _write_durably(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _log_crash(folder: Path, records: list[dict[str, Any]], suspects: list[Suspect],
               verdicts: list[Verdict]) -> None:
    for r in records:
        if r.get("error") and not r.get("ranges"):
            log.warning("quarantine: the last run's step %s failed outside any message (%s); "
                        "no message to quarantine: fix the bug", r["step"], r["error"])
    for s in suspects:
        log.warning("quarantine: the last run stopped while step %s processed partition %d "
                    "offsets %d-%d%s; they go one message at a time when read again",
                    s.step, s.partition, s.first, s.last, f" ({s.error})" if s.error else "")
    for v in verdicts:
        log.warning("quarantine: partition %d offset %d crashed the flow %d times in step "
                    "%s; it is dead-lettered as %s from now on (%s)", v.partition, v.offset,
                    v.crashes, v.step, POISON, folder / "poison.json")
