"""The README's settings table is the one the settings classes generate, and every setting is
read from the environment first and ``marquee.env`` second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings_table import markdown, rows, with_table
from serve.config import ServeSettings
from streams.config import KafkaSettings

README = Path(__file__).parents[2] / "README.md"


def test_readme_table_is_generated_from_the_settings() -> None:
    assert with_table(README.read_text()) == README.read_text(), \
        "README settings table is stale: run `marquee settings --write-readme README.md`"


def test_every_setting_is_documented_once() -> None:
    table = rows()
    names = [var for var, *_ in table]
    assert len(names) == len(set(names))
    assert {"KAFKA_BOOTSTRAP_SERVERS", "MARQUEE_FLOW_SHARDS", "MARQUEE_K_MAX",
            "MARQUEE_REDIS_URL"} <= set(names)
    assert [var for var, _, _, what in table if not what] == []
    assert markdown().count("\n") == len(table) + 1


def test_a_stale_table_is_replaced_and_missing_markers_are_named() -> None:
    text = "intro\n<!-- settings:begin -->\nold\n<!-- settings:end -->\nrest\n"
    assert with_table(text) == f"intro\n<!-- settings:begin -->\n{markdown()}\n" \
                               "<!-- settings:end -->\nrest\n"
    with pytest.raises(ValueError, match="marker"):
        with_table("no markers")


def test_settings_come_from_marquee_env_and_the_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "marquee.env").write_text("MARQUEE_K_MAX=77\nMARQUEE_K_DEFAULT=7\n"
                                          "KAFKA_BOOTSTRAP_SERVERS=10.0.0.1:9092\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("MARQUEE_K_MAX", "55")
    settings = ServeSettings()
    assert (settings.k_max, settings.k_default) == (55, 7)
    assert KafkaSettings().bootstrap_servers == "10.0.0.1:9092"
