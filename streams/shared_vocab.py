"""A vocabulary shared by every flow process on one machine: new ids agreed through one file.

``Vocab.id`` gives a new value the next free id in arrival order, and arrival order is per
process: two worker processes that see new items in different orders would give the same
item different ids. ``SharedVocab`` makes the files on disk the single source of truth. Known
values are answered from memory (the hot path never locks); new values take an exclusive
``fcntl`` lock on ``vocab.json.lock``, catch up with what other processes added, are assigned
only if still absent, and are written before the lock is let go. So an id is on disk before
any row that uses it can be written, in every process.

Writes cost what they add, not what the vocabulary holds: new ids are appended to the journal
(``streams.contract.vocab_files``) and catching up reads only the journal's new lines. The
snapshot ``vocab.json`` is rewritten (and the journal started afresh) when a process opens
the vocabulary and when the journal has grown past the snapshot's size, so rewriting costs
O(1) per id over time and the journal stays smaller than the snapshot.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from streams.contract.atomic import locked, replace_bytes
from streams.contract.tokens import Vocab
from streams.contract.vocab_files import header_line, journal_path, read_journal

COMPACT_MIN = 100_000  # journal entries before a rewrite of the snapshot is worth it


class SharedVocab(Vocab):
    """A ``Vocab`` whose growth goes through locked files (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.journal = journal_path(path)
        self.lock_path = path.with_name(path.name + ".lock")
        self._local = threading.Lock()  # flock is per open file; threads also need this
        self._journal_id: str | None = None  # the journal read so far, and up to where
        self._offset = 0
        self._journaled = 0  # entries in that journal
        self._snapshot_size = 0  # values in the snapshot
        self._snapshot_stat: tuple[int, int, int] | None = None
        with self._locked():
            self._reload()
            if self._journaled:
                self._compact()

    def id(self, facet: str, value: str) -> int:
        """The id of ``value``; a new value is assigned through the shared files."""
        got = self.tables[facet].get(value)
        if got is None:
            self.ensure(facet, [value])
            got = self.tables[facet][value]
        return got

    def ensure(self, facet: str, values: Iterable[str], limit: int | None = None) -> int:
        """Give every value of ``values`` an id (in order, skipping known ones) in one locked
        round, while the facet has fewer than ``limit`` values; returns how many were new to
        this process.
        """
        table = self.tables[facet]
        missing = [v for v in dict.fromkeys(values) if v not in table]
        if not missing or (limit is not None and len(table) >= limit):
            return 0  # tables only grow: full here means full on disk
        with self._locked():
            self._reload()
            fresh = [v for v in missing if v not in table]
            if limit is not None:
                fresh = fresh[:max(limit - len(table), 0)]
            for value in fresh:
                table[value] = len(table) + 2
            if fresh:
                self._append(facet, fresh)
        return len(missing)

    def save(self, path: Path | None = None) -> None:
        """Everything is saved as it is assigned; saving elsewhere writes a plain copy."""
        if path is not None and Path(path) != self.path:
            Vocab(tables={k: dict(v) for k, v in self.tables.items()}).save(Path(path))

    # ---- the files (all under the lock) ---------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._local, locked(self.lock_path):
            yield

    def _reload(self) -> None:
        """Catch up with the files: the journal's new lines, or everything when another
        process rewrote the snapshot (a new journal id) or the file was replaced.
        """
        journal_id, end, entries = read_journal(self.journal, self._journal_id, self._offset)
        if journal_id != self._journal_id or self._stat() != self._snapshot_stat:
            self._load_snapshot()
            journal_id, end, entries = read_journal(self.journal)
            self._journaled = 0
        self._merge(entries, self.journal)
        self._journal_id, self._offset = journal_id, end
        self._journaled += len(entries)

    def _load_snapshot(self) -> None:
        try:
            on_disk = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            self._snapshot_stat, self._snapshot_size = None, 0
            return
        self._snapshot_stat = self._stat()
        self._snapshot_size = sum(len(values) for values in on_disk.values())
        self._merge(((f, v, i) for f, values in on_disk.items() for v, i in values.items()),
                    self.path)

    def _merge(self, entries: Iterable[tuple[str, str, int]], source: Path) -> None:
        tables = self.tables
        for facet, value, idx in entries:
            table = tables.get(facet)
            if table is None:
                table = tables[facet] = {}
            have = table.setdefault(value, idx)
            if have != idx:
                raise RuntimeError(
                    f"{source}: {facet} {value!r} has id {idx} on disk but {have} in this "
                    "process; was the file edited or replaced while the flow ran?")

    def _append(self, facet: str, values: list[str]) -> None:
        if self._snapshot_stat is None or self._journal_id is None:
            self._compact()  # the first write: a snapshot for readers, and a journal
            return
        table = self.tables[facet]
        lines = b"".join(orjson.dumps([facet, v, table[v]]) + b"\n" for v in values)
        with self.journal.open("r+b") as handle:
            handle.truncate(self._offset)  # a line left half-written by a crashed writer
            handle.seek(self._offset)
            handle.write(lines)
        self._offset += len(lines)
        self._journaled += len(values)
        if self._journaled > max(self._snapshot_size, COMPACT_MIN):
            self._compact()

    def _compact(self) -> None:
        """Everything into a new snapshot, then a new, empty journal (in that order: see
        ``streams.contract.vocab_files`` for why readers stay whole).
        """
        replace_bytes(self.path, orjson.dumps(self.tables, option=orjson.OPT_SORT_KEYS))
        self._snapshot_stat = self._stat()
        self._snapshot_size = sum(len(values) for values in self.tables.values())
        self._journal_id = uuid.uuid4().hex
        header = header_line(self._journal_id)
        replace_bytes(self.journal, header)
        self._offset, self._journaled = len(header), 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


