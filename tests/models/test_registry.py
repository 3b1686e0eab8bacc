"""The model registry: versions appear whole or not at all (also under SIGKILL), the index
names the serving version, lineage is kept, and rollback walks back the serving order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import Registry, RegistryError

ROOT = Path(__file__).parents[2]


def _files(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "model.pt").write_bytes(b"pt")


def _add(reg: Registry, name: str, parent: str | None = None):
    return reg.add(name, _files, {"parent": parent, "token_span": {"to_ms": 5}},
                   {"exams": {"recent": {"candidate": {"ndcg@10": 0.1}}}})


def test_versions_index_lineage_and_rollback_order(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    assert reg.serving() is None and reg.versions() == []
    _add(reg, "v1")
    assert reg.serving() is None  # registered is not serving
    reg.promote("v1")
    for name, parent in (("v2", "v1"), ("v3", "v2")):
        _add(reg, name, parent)
        reg.promote(name)
    v3 = reg.serving()
    assert v3 is not None and v3.name == "v3" and v3.onnx.read_bytes() == b"onnx"
    assert v3.lineage() == {"parent": "v2", "token_span": {"to_ms": 5}}
    assert v3.metrics()["exams"]["recent"]["candidate"]["ndcg@10"] == 0.1
    assert [v.name for v in reg.versions()] == ["v1", "v2", "v3"]
    assert reg.rollback().name == "v2"
    assert reg.rollback().name == "v1"  # a second rollback goes one further back
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote("v3")
    idx = json.loads((tmp_path / "models" / "index.json").read_text())
    assert idx["serving"] == "v3" and idx["stack"] == ["v1", "v3"]
    assert [h["action"] for h in idx["history"]] == ["promote"] * 3 + ["rollback"] * 2 + \
        ["promote"]
    with pytest.raises(RegistryError, match="exists already"):
        _add(reg, "v3")
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("v9")


def test_a_failed_write_leaves_no_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path)

    def broken(folder: Path) -> None:
        _files(folder)
        raise OSError("disk full")

    with pytest.raises(OSError):
        reg.add("v1", broken, {})
    assert reg.versions() == [] and list((tmp_path / "versions").iterdir()) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import models.registry as r
reg = r.Registry(Path(sys.argv[1]))
where = sys.argv[2]
def files(folder):
    (folder / "model.onnx").write_bytes(b"x" * 100_000)
    if where == "files":
        os.kill(os.getpid(), signal.SIGKILL)
real = os.replace
def replace(src, dst):
    if where == "index" and str(dst).endswith("index.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
r.os.replace = replace
reg.add(sys.argv[3], files, {"parent": "v1"})
reg.promote(sys.argv[3])
"""


@pytest.mark.parametrize("where", ["files", "index"])
def test_sigkill_mid_write_keeps_the_last_good_state(tmp_path: Path, where: str) -> None:
    reg = Registry(tmp_path)
    _add(reg, "v1")
    reg.promote("v1")
    before = (tmp_path / "index.json").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), where, "v2"],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    aside = [p for p in [*tmp_path.iterdir(), *(tmp_path / "versions").iterdir()]
             if p.name.startswith(".tmp-")]
    assert aside  # the killed writer left its half-written file or folder aside
    assert (tmp_path / "index.json").read_text() == before  # the index is the old one, whole
    reopened = Registry(tmp_path)  # sweeps what the dead writer left
    assert not [p for p in [*tmp_path.iterdir(), *(tmp_path / "versions").iterdir()]
                if p.name.startswith(".tmp-")]
    assert reopened.serving().name == "v1"
    assert [v.name for v in reopened.versions()] == ["v1"]
    # killed after the rename but before the index: the folder exists, unregistered; a retry
    # under the same name is refused rather than overwriting it
    if where == "index":
        assert (tmp_path / "versions" / "v2").is_dir()
        with pytest.raises(RegistryError, match="exists already"):
            _add(reopened, "v2")
    else:
        assert not (tmp_path / "versions" / "v2").exists()
        _add(reopened, "v2")


def test_a_live_writers_folder_is_not_swept(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    seen: list[bool] = []

    def files(folder: Path) -> None:
        _files(folder)
        Registry(tmp_path)  # another process opening the registry meanwhile
        seen.append(folder.exists())

    reg.add("v1", files, {})
    assert seen == [True] and reg.get("v1").onnx.exists()
