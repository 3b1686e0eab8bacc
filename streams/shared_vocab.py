"""A vocabulary shared by every flow process on one machine: new ids agreed through one file.

``Vocab.id`` gives a new value the next free id in arrival order, and arrival order is per
process: two worker processes that see new items in different orders would give the same
item different ids. ``SharedVocab`` makes ``vocab.json`` the single source of truth. Known
values are answered from memory (the hot path never locks); new values take an exclusive
``fcntl`` lock on ``vocab.json.lock``, reload the file (another process may have grown it), are
assigned only if still absent, and the file is saved (atomically) before the lock is let go.
So an id is on disk before any row that uses it can be written, in every process.
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.contract.tokens import Vocab


class SharedVocab(Vocab):
    """A ``Vocab`` whose growth goes through a locked file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._local = threading.Lock()  # flock is per open file; threads also need this
        with self._locked():
            self._reload()

    def id(self, facet: str, value: str) -> int:
        """The id of ``value``; a new value is assigned through the shared file."""
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
                self._write()
        return len(missing)

    def save(self, path: Path | None = None) -> None:
        """Everything is saved as it is assigned; saving elsewhere writes a plain copy."""
        if path is not None and Path(path) != self.path:
            Vocab(tables={k: dict(v) for k, v in self.tables.items()}).save(Path(path))

    # ---- the file ------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._local, open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _reload(self) -> None:
        """Merge the file into memory (under the lock). Always read: inode and mtime can
        repeat after an atomic rename, and new values are rare (callers batch them).
        """
        try:
            on_disk = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        for facet, values in on_disk.items():
            table = self.tables.setdefault(facet, {})
            for value, idx in values.items():
                have = table.setdefault(value, idx)
                if have != idx:
                    raise RuntimeError(
                        f"{self.path}: {facet} {value!r} has id {idx} on disk but {have} in "
                        "this process; was the file edited or replaced while the flow ran?")

    def _write(self) -> None:
        Vocab.save(self, self.path)
