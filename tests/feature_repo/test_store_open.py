"""Processes that open one Feast folder at once never read a half-written config."""

from __future__ import annotations

import threading

from feature_repo.store import _write_whole


def test_a_reader_sees_the_old_config_or_the_new_never_a_part(tmp_path) -> None:
    path = tmp_path / "feature_store.yaml"
    texts = ["project: a\n" * 2_000, "project: b\n" * 3_000]
    _write_whole(path, texts[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2_000):
        _write_whole(path, texts[i % 2])
    stop.set()
    reader.join()
    assert seen <= set(texts) and len(seen) == 2
    assert not list(tmp_path.glob(".*.tmp"))
