"""The experiment config: YAML/JSON files and inline JSON, refused with errors naming the fix."""

from __future__ import annotations

import json

import pytest

from serve.experiment_config import ExperimentConfigError, Mode, load_experiment


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"onnx")
    return path


def test_a_yaml_file_loads(tmp_path, model_file) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: b-vs-a\nmode: ab\nvariants:\n"
                    f"  - {{name: a, model: {model_file}, weight: 3}}\n"
                    f"  - {{name: control, model: popular}}\n")
    exp = load_experiment(path)
    assert exp.name == "b-vs-a" and exp.mode is Mode.AB and exp.hash_salt == "b-vs-a"
    assert [(v.name, v.is_model, v.weight) for v in exp.variants] == [
        ("a", True, 3.0), ("control", False, 1.0)]


def test_json_file_and_inline_json_load(tmp_path, model_file) -> None:
    body = {"name": "il", "mode": "interleave", "salt": "s1",
            "variants": [{"name": "a", "model": str(model_file)},
                         {"name": "b", "model": str(model_file)}]}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(body))
    assert load_experiment(path) == load_experiment(json.dumps(body))
    assert load_experiment(path).hash_salt == "s1"
    assert load_experiment(None) is None and load_experiment("") is None


@pytest.mark.parametrize(("change", "fix"), [
    ({"mode": "split"}, "'ab' or 'interleave'"),
    ({"variants": [{"name": "a", "model": "popular"}]}, "at least 2"),
    ({"variants": [{"name": "a", "model": "popular"}, {"name": "a", "model": "popular"}]},
     "give each variant its own name"),
    ({"variants": [{"name": "a", "model": "/no/such.onnx"}, {"name": "b", "model": "popular"}]},
     "marquee export"),
    ({"variants": [{"name": "A B", "model": "popular"}, {"name": "b", "model": "popular"}]},
     "variants.0.name"),
    ({"variants": [{"name": "a", "model": "popular", "weight": 0},
                   {"name": "b", "model": "popular"}]}, "greater than 0"),
    ({"mode": "interleave", "variants": [{"name": n, "model": "popular"} for n in "abc"]},
     "exactly 2 variants"),
    ({"colour": "red"}, "unknown field; remove it"),
    ({"name": None}, "name"),
])
def test_bad_configs_are_refused_naming_the_fix(change, fix) -> None:
    body = {"name": "e", "variants": [{"name": "a", "model": "popular"},
                                      {"name": "b", "model": "popular"}], **change}
    with pytest.raises(ExperimentConfigError) as err:
        load_experiment(json.dumps(body))
    assert fix in str(err.value) and "not valid" in str(err.value)


def test_unreadable_files_are_refused_naming_the_fix(tmp_path) -> None:
    with pytest.raises(ExperimentConfigError, match="MARQUEE_EXPERIMENTS"):
        load_experiment(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ExperimentConfigError, match="could not be parsed"):
        load_experiment(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ExperimentConfigError, match="holds a list"):
        load_experiment(listed)
