"""How the flow's vocabulary is kept on disk: a snapshot plus an append-only journal.

Rewriting the whole ``vocab.json`` for every batch with new values costs time in proportion
to the vocabulary (seconds per batch at a million items), so new ids are appended to
``vocab.json.journal`` instead, one JSON line ``[facet, value, id]`` each, and the snapshot is
rewritten only now and then (``streams.shared_vocab``). The journal's first line names it
(``{"journal": 1, "id": "<hex>"}``); a new journal gets a new id whenever the snapshot has
absorbed the old one, which is how a writer knows to reread the snapshot.

A reader without the writers' lock reads the journal first and the snapshot second: the
writer replaces the snapshot before it replaces the journal, so whatever pair a reader sees
holds every id given before it started. A last line without its newline is a write in
progress (or a writer's crash) and is skipped.
"""

from __future__ import annotations

from pathlib import Path

import orjson

JOURNAL_VERSION = 1


def journal_path(snapshot: Path) -> Path:
    """The journal beside a ``vocab.json`` snapshot."""
    return snapshot.with_name(snapshot.name + ".journal")


def header_line(journal_id: str) -> bytes:
    """The first line of a journal named ``journal_id``."""
    return orjson.dumps({"journal": JOURNAL_VERSION, "id": journal_id}) + b"\n"


def read_journal(path: Path, journal_id: str | None = None,
                 offset: int = 0) -> tuple[str | None, int, list[tuple[str, str, int]]]:
    """``(id, end, entries)``: the journal's id, the offset after its last complete line, and
    its entries; when ``journal_id`` is the file's id, only the entries from ``offset`` on.
    A missing journal is ``(None, 0, [])``.
    """
    try:
        with path.open("rb") as handle:
            first = handle.readline()
            if not first.endswith(b"\n"):
                return None, 0, []  # still being created
            header = orjson.loads(first)
            if header.get("journal") != JOURNAL_VERSION:
                raise ValueError(f"{path}: journal version {header.get('journal')!r}; this "
                                 f"code reads version {JOURNAL_VERSION}")
            found = str(header["id"])
            start = offset if found == journal_id and offset >= len(first) else len(first)
            handle.seek(start)
            tail = handle.read()
    except FileNotFoundError:
        return None, 0, []
    complete = tail[:tail.rfind(b"\n") + 1]
    entries = [(facet, value, idx) for facet, value, idx in
               map(orjson.loads, complete.splitlines())]
    return found, start + len(complete), entries


def read_tables(snapshot: Path) -> dict[str, dict[str, int]]:
    """Every table, snapshot and journal together (for readers: training, the service)."""
    _, _, entries = read_journal(journal_path(snapshot))
    tables: dict[str, dict[str, int]] = orjson.loads(snapshot.read_bytes()) \
        if snapshot.exists() else {}
    for facet, value, idx in entries:
        tables.setdefault(facet, {})[value] = idx
    return tables
