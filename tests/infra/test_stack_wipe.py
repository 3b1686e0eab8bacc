"""``marquee up --fresh`` forgets the experiment counts with the snapshots they belong to."""

from __future__ import annotations

from infra.pipeline import Layout, reset_features
from infra.stack import wipe
from streams.outcome_table import read_totals, write_rows
from streams.outcomes import COUNT_FIELDS


def test_fresh_starts_and_feature_resets_drop_the_experiment_counts(tmp_path):
    layout = Layout(tmp_path)
    for forget in (wipe, reset_features):
        write_rows(layout.experiments, [("u00", [("exp", "a", "ab", *[1] * len(COUNT_FIELDS))])])
        assert read_totals(layout.experiments)["exp"].variants["a"].impressions == 1
        forget(layout)
        assert read_totals(layout.experiments) == {}
        assert not list(tmp_path.glob("experiments.sqlite3*"))
