"""Vocabulary ids agreed between processes: the same new item gets the same id everywhere."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
from pathlib import Path

import pytest

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
    on_disk = json.loads(path.read_text())
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
