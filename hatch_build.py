"""Hatch build hook: compile the flow's hot modules with Cython, in place, at ``pip install``.

The modules (``streams.compiled.MODULES``) stay plain Python: Cython compiles the ``.py`` files
as they are, and they remain the reference the parity tests compare the compiled path
against. The extension modules land beside their sources (git-ignored), which is where an
editable install imports them from; a wheel carries them as artifacts. ``docs/design.md``
says why Cython, why these modules and why these directives.

Without Cython or a C compiler the install still succeeds and the pure-Python modules run
(one warning). ``MARQUEE_PURE_PYTHON=1`` at install time skips the compilation. Run as a
script (``python hatch_build.py``, with hatchling, Cython and setuptools importable) it
compiles in place.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent
# Python semantics throughout (docs/design.md measures the alternatives): annotations do not
# become C types (a `float` parameter would turn into a C double, an `int` one would refuse
# int-like objects), and bounds checks and negative indexing stay on (the modules index with
# -1; without them the flow crashes).
DIRECTIVES: dict[str, Any] = {"language_level": 3, "annotation_typing": False}
CFLAGS = ["-g0"] if os.name == "posix" else []  # no debug info: half the compile time


def runtime() -> ModuleType:
    """``streams/compiled.py`` (standard library only), loaded without the ``streams`` package."""
    spec = importlib.util.spec_from_file_location("_marquee_compiled", ROOT / "streams" /
                                                  "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean(rt: ModuleType) -> None:
    """Remove the build record and every extension module beside a ``.py`` in ``streams``
    (one of a module no longer listed must not linger: it would be imported unchecked).
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for path in (ROOT / "streams").rglob("*"):
        if path.name.endswith(suffixes) and path.with_name(
                path.name.split(".", 1)[0] + ".py").exists():
            path.unlink()
    rt.BUILD_FILE.unlink(missing_ok=True)


def compile_in_place(modules: list[str] | None = None, directives: dict[str, Any] | None = None,
                     jobs: int | None = None) -> list[Path]:
    """Cythonize and compile ``modules`` (default ``MODULES``) beside their sources; returns
    the files written (extension modules and the build record).
    """
    from Cython import __version__ as cython_version
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    rt = runtime()
    names = list(modules or rt.MODULES)
    directives = {**DIRECTIVES, **(directives or {})}
    clean(rt)
    sources = {name: rt.digest(rt.source_of(name)) for name in names}
    with tempfile.TemporaryDirectory(prefix="marquee-cython-") as tmp:
        extensions = cythonize(
            [Extension(name, [str(rt.source_of(name).relative_to(ROOT))],
                       extra_compile_args=CFLAGS) for name in names],
            compiler_directives={k: v for k, v in directives.items() if k != "language_level"},
            language_level=directives["language_level"], build_dir=tmp, quiet=True,
            nthreads=0)
        dist = Distribution({"name": "marquee-hot-modules", "ext_modules": extensions,
                             "script_args": ["build_ext"]})
        dist.parse_command_line()
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = str(Path(tmp) / "obj")
        cmd.build_lib = str(Path(tmp) / "lib")
        cmd.parallel = jobs or os.cpu_count() or 1
        cwd = os.getcwd()
        os.chdir(ROOT)  # build_ext --inplace places modules relative to the working folder
        try:
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
    rt.BUILD_FILE.write_text(json.dumps({"cython": cython_version, "directives": directives,
                                         "sources": sources}, indent=1) + "\n")
    built = [rt.compiled_file(name) for name in names]
    missing = [name for name, path in zip(names, built) if path is None]
    if missing:
        raise RuntimeError(f"the build wrote no extension module for {missing}")
    return [*built, rt.BUILD_FILE]  # type: ignore[list-item]


class CompileHotModules(BuildHookInterface):
    """Compiles the hot modules before hatchling builds the (editable) wheel."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile in place; a wheel (not an editable install) also ships the results."""
        rt = runtime()
        if rt.forced_pure():
            clean(rt)
            self.app.display_info(f"{rt.PURE_ENV} is set: the hot modules stay pure Python")
            return
        start = time.perf_counter()
        try:
            built = compile_in_place()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 (any failure: fall back, say why)
            clean(rt)
            self.app.display_warning(
                f"marquee: the hot modules were not compiled ({type(exc).__name__}: {exc}); "
                "the pure-Python modules run, correct but slower. Install a C compiler "
                "(Debian: apt-get install build-essential python3-dev) and run `make compile`.")
            return
        self.app.display_info(f"marquee: compiled {len(built) - 1} hot modules with Cython in "
                              f"{time.perf_counter() - start:.1f} s")
        if version != "editable":
            build_data["artifacts"] += [str(p.relative_to(ROOT)) for p in built]
            build_data["pure_python"] = False
            build_data["infer_tag"] = True


if __name__ == "__main__":
    t0 = time.perf_counter()
    for path in compile_in_place(sys.argv[1:] or None):
        print(path.relative_to(ROOT))
    print(f"compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
