"""Vocabulary ids agreed between processes: the same new item gets the same id everywhere."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
from pathlib import Path

import pytest

from streams import shared_vocab
from streams.contract.tokens import Vocab
from streams.contract.vocab_files import journal_path
from streams.shared_vocab import SharedVocab

NEW = [f"new-{i:03d}" for i in range(150)]


def _worker(path: str, order: list[str], start, out) -> None:
    vocab = SharedVocab(Path(path))
    start.wait()
    for i, item in enumerate(order):
        if i % 10 == 0:
            vocab.ensure("device", [f"dev-{item}"])  # batches and single values interleave
        vocab.id("item", item)
    out.put({item: vocab.id("item", item) for item in NEW})


def test_two_processes_seeing_new_items_in_different_orders_agree_on_ids(tmp_path: Path):
    path = tmp_path / "vocab.json"
    seeded = SharedVocab(path)
    seeded.ensure("item", ["m1", "m2"])  # what load_shared seeds from the catalogue
    orders = [NEW[:], NEW[::-1]]
    random.Random(3).shuffle(orders[0])
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), order, start, out)) for order in orders]
    for p in procs:
        p.start()
    views = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert views[0] == views[1]
    on_disk = Vocab.load(path).tables  # snapshot and journal, as readers see them
    assert {k: on_disk["item"][k] for k in NEW} == views[0]
    ids = sorted(on_disk["item"].values())
    assert ids == list(range(2, 2 + len(NEW) + 2))  # dense, unique, seeds first
    assert on_disk["item"]["m1"] == 2 and on_disk["item"]["m2"] == 3
    assert set(on_disk["device"]) == {f"dev-{o[i]}" for o in orders for i in range(0, 150, 10)}
    # A process started later reads the agreed ids instead of numbering by arrival.
    late = SharedVocab(path)
    assert late.id("item", NEW[0]) == views[0][NEW[0]]
    assert late.tables == {k: v for k, v in on_disk.items()} | {"action": late.tables["action"]}


def test_known_values_never_take_the_lock(tmp_path: Path, monkeypatch):
    vocab = SharedVocab(tmp_path / "vocab.json")
    assert vocab.ensure("surface", ["home/top", "home/new", "home/top"]) == 2
    assert vocab.ensure("surface", ["home/top"]) == 0

    def no_lock():
        raise AssertionError("the hot path took the file lock")

    monkeypatch.setattr(vocab, "_locked", no_lock)
    assert vocab.id("surface", "home/new") == 3
    with pytest.raises(AssertionError, match="hot path"):
        vocab.id("surface", "search")


def test_a_file_that_contradicts_memory_is_an_error(tmp_path: Path):
    path = tmp_path / "vocab.json"
    vocab = SharedVocab(path)
    vocab.ensure("item", ["a", "b"])
    tables = json.loads(path.read_text())
    tables["item"] = {"a": 3, "b": 2}
    path.write_text(json.dumps(tables))
    with pytest.raises(RuntimeError, match="edited or replaced"):
        vocab.ensure("item", ["c"])


def test_a_new_id_costs_one_journal_line_not_a_rewrite(tmp_path: Path):
    path = tmp_path / "vocab.json"
    vocab = SharedVocab(path)
    vocab.ensure("item", [f"m{i}" for i in range(5000)])  # the first write: a snapshot
    snapshot = path.stat()
    journal = journal_path(path)
    before = journal.stat().st_size
    vocab.ensure("item", ["new-1", "new-2"])
    assert path.stat().st_mtime_ns == snapshot.st_mtime_ns  # the snapshot was not rewritten
    lines = journal.read_bytes()[before:].splitlines()
    assert [json.loads(line) for line in lines] == [["item", "new-1", 5002],
                                                     ["item", "new-2", 5003]]
    assert Vocab.load(path).tables["item"]["new-2"] == 5003


def test_the_journal_is_folded_into_the_snapshot_and_every_process_follows(tmp_path: Path,
                                                                        monkeypatch):
    monkeypatch.setattr(shared_vocab, "COMPACT_MIN", 10)
    path = tmp_path / "vocab.json"
    a, b = SharedVocab(path), SharedVocab(path)
    a.ensure("item", ["seed"])
    b.ensure("item", [f"b{i}" for i in range(5)])  # b journals; a has not read it yet
    old_journal = json.loads(journal_path(path).read_bytes().splitlines()[0])["id"]
    a.ensure("item", [f"a{i}" for i in range(20)])  # past COMPACT_MIN: a rewrites both files
    new_journal = json.loads(journal_path(path).read_bytes().splitlines()[0])["id"]
    assert new_journal != old_journal
    assert json.loads(path.read_text())["item"] == a.tables["item"]  # all in the snapshot
    b.ensure("item", ["b-late"])  # b sees the new journal id and rereads the snapshot
    assert b.tables["item"] == a.tables["item"] | {"b-late": len(a.tables["item"]) + 2}
    assert Vocab.load(path).tables["item"] == b.tables["item"]
    assert SharedVocab(path).tables["item"] == b.tables["item"]


def test_a_half_written_line_is_skipped_then_overwritten(tmp_path: Path):
    path = tmp_path / "vocab.json"
    vocab = SharedVocab(path)
    vocab.ensure("item", ["a", "b"])
    vocab.ensure("item", ["c"])
    with journal_path(path).open("ab") as handle:
        handle.write(b'["item", "torn')  # a writer that died mid-line
    assert set(Vocab.load(path).tables["item"]) == {"a", "b", "c"}
    vocab.ensure("item", ["d"])  # the next append starts where the last whole line ended
    assert [json.loads(line)[1] for line in journal_path(path).read_bytes().splitlines()[1:]] \
        == ["c", "d"]
    other = SharedVocab(path)
    other.ensure("item", ["e"])
    assert Vocab.load(path).tables["item"] == {"a": 2, "b": 3, "c": 4, "d": 5, "e": 6}
