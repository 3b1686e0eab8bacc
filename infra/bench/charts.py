"""Small PNG charts for benchmarks and evaluations (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bar_chart(values: Mapping[str, float], title: str, ylabel: str, out: Path) -> Path:
    """Horizontal bars, one per named figure, value printed at the end of each bar."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(values) + 1.5))
    names = list(values)
    bars = ax.barh(names, [values[n] for n in names], color="#3b6ea8")
    ax.bar_label(bars, labels=[f"{values[n]:,.0f}" for n in names], padding=3)
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    ax.invert_yaxis()
    return _save(fig, out)


def histogram(samples: Mapping[str, Sequence[float]], title: str, xlabel: str, out: Path,
              bins: int = 50) -> Path:
    """Overlaid histograms (e.g. latency per stage), log-scaled counts."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in samples.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.5, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> Path:
    """Write a chart as PNG and free its memory."""
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
