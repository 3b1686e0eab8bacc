"""Which path the flow's hot modules run: compiled with Cython, or their pure-Python source.

``pip install -e .`` compiles ``MODULES`` in place (``hatch_build.py``) and records the
SHA-256 of every source it compiled in ``BUILD_FILE``. The ``.py`` files stay the reference:
the compiled modules define the same classes under the same names, so either path reads the
other's pickles (Bytewax snapshots), and the parity tests compare the two byte for byte.

Python imports an extension module ahead of the ``.py`` beside it, even after the source
changed. ``install`` (run by ``streams/__init__.py``) puts a finder first on ``sys.meta_path``
that loads a module from its source instead when ``MARQUEE_PURE_PYTHON`` is set (the
reference, for parity runs and debugging) or when its compiled file is stale (one warning
naming the fix). Standard library only: it runs before anything else in ``streams``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The modules the build compiles: the ones that measurably gain (docs/design.md). Compiled
# alone, the tokenizer, the shards and the item counters ran no faster (their time is in
# attribute access and dict work, which CPython's own specializing interpreter does as well).
MODULES: tuple[str, ...] = ("streams.contract.merge", "streams.contract.tokens")
ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the ``streams`` package
BUILD_FILE = Path(__file__).resolve().parent / "compiled.json"  # written by the build
PURE_ENV = "MARQUEE_PURE_PYTHON"
TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})  # what pydantic reads as True
FIX = "rebuild with `make compile` (or `pip install -e . --no-deps`)"
PURE_AT_IMPORT = False  # what ``install`` saw (``FlowSettings`` checks it agrees)


def source_of(name: str) -> Path:
    """The ``.py`` file of module ``name``."""
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


def compiled_file(name: str) -> Path | None:
    """The extension module built for ``name`` beside its source, if there is one."""
    source = source_of(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = source.with_suffix(suffix)
        if path.exists():
            return path
    return None


def digest(path: Path) -> str:
    """SHA-256 of a file, as the build records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forced_pure(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """Whether ``MARQUEE_PURE_PYTHON`` asks for the pure-Python reference."""
    return environ.get(PURE_ENV, "").lower() in TRUE


def build_info() -> dict[str, object]:
    """What the last build compiled (``BUILD_FILE``), or {} when nothing was built."""
    try:
        return json.loads(BUILD_FILE.read_text())
    except (OSError, ValueError):
        return {}


def stale_modules(names: Sequence[str] = MODULES) -> list[str]:
    """The modules whose compiled file was not built from their current source."""
    built = build_info().get("sources", {})
    assert isinstance(built, dict)
    return [name for name in names if compiled_file(name) is not None
            and built.get(name) != digest(source_of(name))]


class PureFinder:
    """Finds ``names`` as their ``.py`` source, ahead of the compiled files beside them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        """The source spec of a listed module; None lets the normal finders answer."""
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, source_of(fullname))


def install() -> None:
    """Put the finder on ``sys.meta_path`` for the modules that must run from source."""
    global PURE_AT_IMPORT
    if any(isinstance(f, PureFinder) for f in sys.meta_path):
        return
    PURE_AT_IMPORT = forced_pure()
    if PURE_AT_IMPORT:
        names = list(MODULES)
    else:
        names = stale_modules()
        if names:
            warnings.warn(f"{', '.join(names)}: the source changed since it was compiled, so "
                          f"the pure-Python source runs; {FIX}", RuntimeWarning, stacklevel=2)
    if names:
        sys.meta_path.insert(0, PureFinder(names))


def loaded_paths() -> dict[str, bool]:
    """Module -> whether the imported module is the compiled one (imports them)."""
    out = {}
    for name in MODULES:
        module = sys.modules.get(name) or importlib.import_module(name)
        out[name] = not str(module.__file__).endswith(".py")
    return out


def describe() -> str:
    """One line for logs and reports: which path runs, and why when it is the pure one."""
    paths = loaded_paths()
    compiled = [name for name, yes in paths.items() if yes]
    if len(compiled) == len(paths):
        return f"compiled (Cython {build_info().get('cython', '?')}): {len(paths)} hot modules"
    if forced_pure():
        why = f"{PURE_ENV} is set"
    elif not any(compiled_file(name) for name in MODULES):
        why = f"not compiled: {FIX}; a C compiler is needed"
    else:
        why = f"stale: {', '.join(stale_modules())}; {FIX}"
    if not compiled:
        return f"pure Python ({why})"
    return f"mixed: {len(compiled)} of {len(paths)} hot modules compiled ({why})"
