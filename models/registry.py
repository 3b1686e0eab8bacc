"""The model registry: every trained version kept in a folder of its own, and a small index that
names the serving version and how it came to serve.

Layout of a registry folder (``MARQUEE_MODEL_REGISTRY``, default ``<data-dir>/models``)::

    index.json                 {"serving": V, "stack": [...], "history": [...], "versions": {...}}
    versions/V/model.pt        checkpoint (config, weights, vocabulary, catalogue tables)
    versions/V/model.onnx      the ranking graph the service loads (+ .vocab.json, .items.npy)
    versions/V/metrics.json    training and gate figures
    versions/V/lineage.json    parent version, token-log span, time, command, code version

Every write goes aside first and is renamed into place (``os.replace`` of a file, ``os.rename``
of a whole version folder), so a process killed at any point leaves either the old state or the
new one: a version folder exists complete or not at all, and ``index.json`` always parses. A
half-written version folder (``.tmp-*``) is removed the next time the registry is opened.

``stack`` is the serving order: ``promote`` pushes, ``rollback`` pops, so a second rollback goes
one version further back. ``history`` is the audit log of every switch (never shortened).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.contract.atomic import locked, pid_alive

INDEX = "index.json"
VERSIONS = "versions"
ONNX = "model.onnx"
TMP = ".tmp-"
STATUSES = ("candidate", "promoted", "rejected", "experiment")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON beside ``path`` (fsynced), then rename over it: readers see old or new."""
    tmp = path.with_name(_aside(path.name))
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _aside(name: str) -> str:
    """The name a write goes to first: ``.tmp-NAME.PID.RANDOM`` (the pid says whether its
    writer is still alive).
    """
    return f"{TMP}{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _writer_alive(path: Path) -> bool:
    try:
        pid = int(path.name.rsplit(".", 2)[-2])
    except (IndexError, ValueError):
        return False
    return pid_alive(pid)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Version:
    """One registered version: its folder and its index entry."""

    name: str
    folder: Path
    entry: dict[str, Any]

    @property
    def onnx(self) -> Path:
        """The exported ranking graph the service loads."""
        return self.folder / ONNX

    @property
    def status(self) -> str:
        """The version's state: candidate, promoted, rejected or experiment."""
        return str(self.entry.get("status", "candidate"))

    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` ({} when absent)."""
        path = self.folder / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def lineage(self) -> dict[str, Any]:
        """``lineage.json`` ({} when absent)."""
        path = self.folder / "lineage.json"
        return json.loads(path.read_text()) if path.exists() else {}


class RegistryError(ValueError):
    """A registry operation that cannot be done (the message says what to do)."""


class Registry:
    """A registry folder; every method re-reads ``index.json`` (other processes write it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        self._sweep()

    # ---- reading -------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        """``index.json``."""
        return self.root / INDEX

    def index(self) -> dict[str, Any]:
        """The index (an empty one before the first version)."""
        if not self.index_path.exists():
            return {"serving": None, "stack": [], "history": [], "versions": {}}
        return json.loads(self.index_path.read_text())

    def get(self, name: str) -> Version:
        """A registered version by name."""
        entry = self.index()["versions"].get(name)
        if entry is None:
            raise RegistryError(f"no version {name!r} in {self.root}; `marquee models list` "
                                "shows the registered ones")
        return Version(name, self.root / VERSIONS / name, entry)

    def versions(self) -> list[Version]:
        """Every registered version, oldest first."""
        entries = self.index()["versions"]
        return [Version(n, self.root / VERSIONS / n, e)
                for n, e in sorted(entries.items(), key=lambda kv: kv[1]["registered_at"])]

    def serving(self) -> Version | None:
        """The version the service should run (None before the first promotion)."""
        name = self.index()["serving"]
        return self.get(name) if name else None

    # ---- writing -------------------------------------------------------------------------
    def add(self, name: str, write: Callable[[Path], None], lineage: dict[str, Any],
            metrics: dict[str, Any] | None = None, status: str = "candidate") -> Version:
        """Register a new version: ``write(folder)`` fills a folder aside (checkpoint, ONNX),
        then lineage and metrics are added and the folder is renamed into ``versions/``; the
        index names it last. A kill before the rename leaves no trace after the next open.
        """
        if name in self.index()["versions"] or (self.root / VERSIONS / name).exists():
            raise RegistryError(f"version {name!r} exists already in {self.root}")
        tmp = self.root / VERSIONS / _aside(name)
        tmp.mkdir()
        try:
            write(tmp)
            atomic_write_json(tmp / "lineage.json", lineage)
            atomic_write_json(tmp / "metrics.json", metrics or {})
            os.rename(tmp, self.root / VERSIONS / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root / VERSIONS)
        self._update(lambda idx: idx["versions"].__setitem__(
            name, {"registered_at": time.time(), "status": status,
                   "parent": lineage.get("parent")}))
        return self.get(name)

    def set_metrics(self, name: str, metrics: dict[str, Any], status: str | None = None) -> None:
        """Replace a version's ``metrics.json`` (e.g. with the gate's figures) and status."""
        version = self.get(name)
        atomic_write_json(version.folder / "metrics.json", metrics)
        if status is not None:
            self._set_status(name, status)

    def promote(self, name: str, reason: str = "promote") -> Version:
        """Make ``name`` the serving version (pushed on the serving stack)."""
        self.get(name)  # exists

        def change(idx: dict[str, Any]) -> None:
            if idx["serving"] == name:
                return
            idx["stack"].append(name)
            idx["serving"] = name
            idx["versions"][name]["status"] = "promoted"
            idx["history"].append({"at": time.time(), "action": reason, "serving": name})
        self._update(change)
        return self.get(name)

    def rollback(self) -> Version:
        """Serve the version that served before the current one (pops the serving stack)."""
        def change(idx: dict[str, Any]) -> None:
            if len(idx["stack"]) < 2:
                raise RegistryError(f"nothing to roll back to in {self.root}: "
                                    f"{len(idx['stack'])} version(s) ever served")
            left = idx["stack"].pop()
            idx["serving"] = idx["stack"][-1]
            idx["history"].append({"at": time.time(), "action": "rollback",
                                   "serving": idx["serving"], "from": left})
        self._update(change)
        serving = self.serving()
        assert serving is not None
        return serving

    def _set_status(self, name: str, status: str) -> None:
        if status not in STATUSES:
            raise RegistryError(f"status {status!r}: one of {STATUSES}")
        self._update(lambda idx: idx["versions"][name].__setitem__("status", status))

    def _update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Read, change and atomically rewrite the index under an exclusive lock (two
        processes promoting at once do not lose either change).
        """
        with locked(self.root / ".lock"):
            idx = self.index()
            change(idx)
            atomic_write_json(self.index_path, idx)

    def _sweep(self) -> None:
        """Remove what a killed writer left aside (never a registered version, never what a
        live writer is still filling).
        """
        for folder in (self.root, self.root / VERSIONS):
            for path in folder.glob(f"{TMP}*"):
                if _writer_alive(path):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def registry_root(data_dir: Path, setting: Path | None = None) -> Path:
    """``MARQUEE_MODEL_REGISTRY`` when set, else ``<data_dir>/models``."""
    return setting if setting is not None else Path(data_dir) / "models"
