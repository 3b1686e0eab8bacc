"""``marquee bench vocab``: what a growing item vocabulary costs the flow.

Item ids are not capped (a catalogue grows), so each poll batch may bring new ones, and
``SharedVocab.ensure`` persists them under the file lock before any row can use them. This
numbers ``items`` distinct new item ids in batches of ``batch`` (every value new: the worst
case) and reports the time of each locked round (p50, p99, max, and the mean of the first and
last tenth, which shows whether the cost grows with the vocabulary), the process's resident
memory growth, the files' sizes, and how long a reader (``Vocab.load``) and a second flow
process (``SharedVocab``) take to open the result. The baseline, same run: one round of the
single-file design at the final size (reread, check and rewrite the whole ``vocab.json``).
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from streams.contract.tokens import KNOWN_VALUES, Vocab
from streams.shared_vocab import SharedVocab


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _rewrite_round(vocab: SharedVocab, path: Path) -> float:
    """Seconds for one round of the baseline design at the final size: reread the whole file,
    check every id against memory, rewrite the whole file (what each round cost when the
    vocabulary was one JSON file).
    """
    Vocab.save(vocab, path)
    t0 = time.perf_counter()
    on_disk = json.loads(path.read_text())
    for facet, values in on_disk.items():
        table = vocab.tables[facet]
        for value, idx in values.items():
            if table.setdefault(value, idx) != idx:
                raise AssertionError(f"{facet} {value!r}: ids differ")
    Vocab.save(vocab, path)
    return time.perf_counter() - t0


def run_bench(items: int = 1_000_000, batch: int = 5000,
              out: Path | None = None) -> dict[str, Any]:
    """Number ``items`` new item ids in rounds of ``batch``; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        vocab = SharedVocab(path)
        for facet, values in KNOWN_VALUES.items():
            vocab.ensure(facet, values)
        rss = _rss_mb()
        rounds: list[float] = []
        for start in range(0, items, batch):
            values = [f"item-{i:08d}" for i in range(start, min(start + batch, items))]
            t0 = time.perf_counter()
            vocab.ensure("item", values)
            rounds.append(time.perf_counter() - t0)
        grown = _rss_mb() - rss
        files = {p.name: p.stat().st_size for p in Path(tmp).iterdir() if p.is_file()}
        t0 = time.perf_counter()
        loaded = Vocab.load(path)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        SharedVocab(path)
        open_s = time.perf_counter() - t0
        assert len(loaded.tables["item"]) == items, "the reader must see every id"
        rewrite_s = _rewrite_round(vocab, Path(tmp) / "rewritten.json")
    ordered = sorted(rounds)
    tenth = max(len(rounds) // 10, 1)
    result = {
        "items": items, "batch": batch, "rounds": len(rounds),
        "round_p50_ms": statistics.median(rounds) * 1000,
        "round_p99_ms": ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)] * 1000,
        "round_max_ms": ordered[-1] * 1000,
        "round_first_tenth_mean_ms": statistics.fmean(rounds[:tenth]) * 1000,
        "round_last_tenth_mean_ms": statistics.fmean(rounds[-tenth:]) * 1000,
        "total_s": sum(rounds), "rss_growth_mb": grown,
        "bytes_per_item_rss": grown * 2**20 / items, "files_bytes": files,
        "reader_load_s": load_s, "second_process_open_s": open_s,
        "rewrite_round_at_end_ms": rewrite_s * 1000,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result
