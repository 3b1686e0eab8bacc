"""The one catalogue reader the flow, training and the service share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.contract.catalogue import Title, read_catalogue, write_catalogue
from streams.contract.layout import DataLayout


def test_titles_round_trip_and_optional_fields_default(tmp_path: Path) -> None:
    titles = [Title("m1", "drama", "movie", 5, 6000),
              Title("s1e2", "comedy", "episode", 7, 1500, series_id="s1", episode=2)]
    path = write_catalogue(DataLayout(tmp_path).catalogue, titles)
    assert path == tmp_path / "catalogue.jsonl"
    assert read_catalogue(path) == {t.item_id: t for t in titles}
    path.write_text(json.dumps({"item_id": "m2", "genre": "crime", "kind": "movie",
                                "release_ms": 1, "duration_s": 60, "studio": "x"}) + "\n\n")
    assert read_catalogue(path) == {"m2": Title("m2", "crime", "movie", 1, 60)}


def test_a_title_missing_a_field_is_named_and_an_absent_file_is_empty(tmp_path: Path) -> None:
    assert read_catalogue(tmp_path / "none.jsonl") == {}
    path = tmp_path / "catalogue.jsonl"
    path.write_text(json.dumps({"item_id": "m1", "genre": "drama"}) + "\n")
    with pytest.raises(ValueError, match=r"'m1' lacks \['kind', 'release_ms', 'duration_s'\]"):
        read_catalogue(path)
