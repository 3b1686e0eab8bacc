"""``streams.compiled``: which path the hot modules run, without needing a C compiler."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys

import pytest

from streams import compiled


@pytest.fixture()
def fake_tree(tmp_path, monkeypatch):
    """A package ``hotpkg`` with one listed module whose "compiled file" is an empty file."""
    pkg = tmp_path / "hotpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "hot.py").write_text("WHERE = 'source'\n")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (pkg / f"hot{suffix}").write_bytes(b"")
    monkeypatch.setattr(compiled, "ROOT", tmp_path)
    monkeypatch.setattr(compiled, "BUILD_FILE", tmp_path / "compiled.json")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in ("hotpkg.hot", "hotpkg"):
        sys.modules.pop(name, None)


def test_a_module_whose_source_changed_since_the_build_is_stale(fake_tree):
    names = ["hotpkg.hot"]
    assert compiled.stale_modules(names) == names  # no build record at all
    source = fake_tree / "hot.py"
    compiled.BUILD_FILE.write_text(json.dumps(
        {"sources": {"hotpkg.hot": compiled.digest(source)}}))
    assert compiled.stale_modules(names) == []
    source.write_text("WHERE = 'edited'\n")
    assert compiled.stale_modules(names) == names
    (fake_tree / f"hot{importlib.machinery.EXTENSION_SUFFIXES[0]}").unlink()
    assert compiled.stale_modules(names) == [], "nothing compiled: nothing stale"


def test_the_finder_loads_the_source_ahead_of_the_compiled_file(fake_tree, monkeypatch):
    # The empty extension file would fail to load: only the finder makes this import work.
    monkeypatch.setattr(sys, "meta_path", [compiled.PureFinder(["hotpkg.hot"]), *sys.meta_path])
    import hotpkg.hot

    assert hotpkg.hot.WHERE == "source"
    assert hotpkg.hot.__file__ == str(fake_tree / "hot.py")


@pytest.mark.parametrize(("value", "pure"), [("1", True), ("true", True), ("Yes", True),
                                             ("on", True), ("0", False), ("false", False),
                                             ("no", False)])
def test_the_switch_reads_values_as_the_settings_do(value, pure):
    assert compiled.forced_pure({compiled.PURE_ENV: value}) is pure
    env = {**os.environ, compiled.PURE_ENV: value}
    code = ("from streams import compiled; from streams.flow import FlowSettings;"
            "print(compiled.PURE_AT_IMPORT, FlowSettings().pure_python)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=compiled.ROOT, check=True).stdout.split()
    assert out == [str(pure), str(pure)]


def test_the_switch_set_after_the_import_is_refused(monkeypatch):
    from streams.flow import FlowSettings

    monkeypatch.setenv(compiled.PURE_ENV, "0" if compiled.PURE_AT_IMPORT else "1")
    with pytest.raises(ValueError, match="export it before the process starts"):
        FlowSettings()


def test_forced_pure_runs_every_hot_module_from_its_source():
    env = {**os.environ, compiled.PURE_ENV: "1"}
    code = ("import json; from streams import compiled;"
            "print(json.dumps([compiled.loaded_paths(), compiled.describe()]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=compiled.ROOT, check=True)
    paths, line = json.loads(out.stdout)
    assert set(paths) == set(compiled.MODULES) and not any(paths.values())
    assert line == f"pure Python ({compiled.PURE_ENV} is set)"
    assert "RuntimeWarning" not in out.stderr


def test_every_listed_module_exists_and_the_report_matches_what_is_loaded():
    for name in compiled.MODULES:
        assert compiled.source_of(name).is_file(), name
    paths = compiled.loaded_paths()
    line = compiled.describe()
    if all(paths.values()):
        assert line.startswith("compiled (Cython ")
    elif not any(paths.values()):
        assert line.startswith("pure Python (")
    else:
        assert line.startswith("mixed: ")
