"""The import rule that keeps the data path readable: the runtime never imports tooling.

- the runtime (``streams``, ``feature_repo``, ``models``, ``serve``) never imports ``infra``;
- ``feature_repo`` imports only ``streams.contract`` of Marquee;
- ``streams.contract`` imports nothing of Marquee outside itself;
- nothing imports ``infra.cli`` (the console script is its only caller).

Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("streams", "feature_repo", "models", "serve", "infra")
RUNTIME = ("streams", "feature_repo", "models", "serve")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imports_of(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a import b`` counts ``a`` and
    ``a.b``, since ``b`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def module_name(path: Path, root: Path) -> str:
    """``streams/contract/events.py`` -> ``streams.contract.events``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def broken_rules(root: Path) -> list[str]:
    """One line per import that breaks the rule, naming the importer and the imported."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            me = module_name(path, root)
            for name in sorted(imports_of(path)):
                why = None
                if any(_within(me, p) for p in RUNTIME) and _within(name, "infra"):
                    why = "the runtime imports tooling"
                elif _within(me, "feature_repo") and not (
                        _within(name, "feature_repo") or _within(name, "streams.contract")):
                    why = "feature_repo imports more than streams.contract"
                elif _within(me, "streams.contract") and not _within(name, "streams.contract"):
                    why = "streams.contract imports the runtime"
                elif _within(name, "infra.cli") and not _within(me, "infra.cli"):
                    why = "something imports the CLI"
                if why:
                    found.append(f"{me} imports {name}: {why}")
    return found


def test_the_tree_keeps_the_import_rule() -> None:
    assert broken_rules(ROOT) == []


def test_the_rule_catches_a_runtime_module_that_imports_tooling(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "streams" / "contract").mkdir()
    (tmp_path / "serve" / "ranker.py").write_text(
        "def f():\n    from infra.bench.charts import histogram\n")
    (tmp_path / "streams" / "contract" / "tokens.py").write_text("from streams import flow\n")
    (tmp_path / "feature_repo" / "store.py").write_text("import models.data\n")
    (tmp_path / "models" / "x.py").write_text("from infra.cli import main\n")
    assert sorted(broken_rules(tmp_path)) == sorted([
        "feature_repo.store imports models.data: feature_repo imports more than streams.contract",
        "models.x imports infra.cli: the runtime imports tooling",
        "models.x imports infra.cli.main: the runtime imports tooling",
        "serve.ranker imports infra.bench.charts: the runtime imports tooling",
        "serve.ranker imports infra.bench.charts.histogram: the runtime imports tooling",
        "streams.contract.tokens imports streams: streams.contract imports the runtime",
        "streams.contract.tokens imports streams.flow: streams.contract imports the runtime",
    ])
