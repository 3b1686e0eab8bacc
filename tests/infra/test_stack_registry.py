"""``marquee up`` and the model registry: the model ``up`` trains is registered once and the
registry's serving version is what ``up`` serves, across restarts; ``--retrain-every`` runs
``marquee retrain --every`` as a supervised child whose promotion lands in that registry.

A tiny model trained on three simulated days (the real ``train_and_export`` that ``up`` calls)
stands in for the demo's; the retrain child is a real process retraining on a fourth day.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from infra.continuous import next_retrain_s, open_registry
from infra.pipeline import Layout, train_and_export
from infra.stack import retrain_child, retrain_command, serving_model
from infra.supervisor import Supervisor, read_state
from infra.synthetic import WorldConfig
from infra.token_days import TokenLogDays
from models.checkpoint import load_checkpoint
from models.registry import Registry
from streams.config import KafkaSettings

pytestmark = pytest.mark.integration
WORLD = WorldConfig(seed=5, n_users=40, days=4)
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 1, "max_len": 20, "mtp_k": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with three days of token log and a tiny model trained by ``up``'s
    training call (nothing registered yet); tests copy it.
    """
    root = tmp_path_factory.mktemp("up-world")
    TokenLogDays(root, WORLD).grow_to(3)
    train_and_export(Layout(root), minutes=None, epochs=1, progress=False, **TINY)
    return root


def _cmdline(pid: int) -> list[str]:
    """A process's command line (empty for a moment while it execs, so read until set)."""
    deadline = time.monotonic() + 10
    while not (raw := Path(f"/proc/{pid}/cmdline").read_bytes()):
        assert time.monotonic() < deadline, f"pid {pid} has no command line"
        time.sleep(0.05)
    return raw.decode().split("\0")[:-1]


def _copy(trained: Path, tmp_path: Path) -> Layout:
    return Layout(Path(shutil.copytree(trained, tmp_path / "data")))


def test_up_registers_its_model_once_and_serves_the_registrys_choice(trained, tmp_path):
    layout = _copy(trained, tmp_path)
    registry = open_registry(layout.root)
    first = serving_model(layout)  # the first start
    assert registry.serving() == first and first.onnx.exists()
    assert first.name == load_checkpoint(layout.model_dir).version
    assert first.lineage()["command"] == "marquee up"

    assert serving_model(layout) == first  # a restart: reused, not added again
    assert [v.name for v in registry.versions()] == [first.name]

    # An operator's promote, then rollback, between restarts: the restart serves their choice.
    other = registry.add("fm-other", lambda f: shutil.copy(first.onnx, f / "model.onnx"),
                         {"parent": first.name})
    registry.promote(other.name)
    assert serving_model(layout).name == "fm-other"
    registry.rollback()
    assert serving_model(layout).name == first.name
    assert len(registry.versions()) == 2

    # A model trained anew (new data or recipe) is registered and serves.
    ckpt = load_checkpoint(layout.model_dir)
    ckpt.version = "demo-trained-anew"
    ckpt.save(layout.model_dir)
    assert serving_model(layout).name == "demo-trained-anew" == registry.serving().name
    assert registry.index()["stack"] == [first.name, "demo-trained-anew"]


def test_the_retrain_schedule_is_anchored_on_the_newest_version(tmp_path):
    registry = Registry(tmp_path)
    assert next_retrain_s(registry, 3600) == 0  # nothing registered: due now
    registry.add("v1", lambda f: (f / "model.onnx").write_bytes(b"x"), {"parent": None})
    at = registry.index()["versions"]["v1"]["registered_at"]
    assert next_retrain_s(registry, 3600, now=at + 600) == pytest.approx(3000)
    assert next_retrain_s(registry, 3600, now=at + 4000) == 0


def test_retrain_every_flag_and_setting(monkeypatch):
    from infra.cli.ops import retrain_every

    monkeypatch.setenv("MARQUEE_RETRAIN_EVERY", "30m")
    assert retrain_every(None) == "30m"
    assert retrain_every("6h") == "6h"  # the flag wins
    with pytest.raises(ValueError, match="positive"):
        retrain_every("0s")
    monkeypatch.setenv("MARQUEE_RETRAIN_EVERY", "soon")
    with pytest.raises(ValueError, match="soon"):
        retrain_every(None)
    monkeypatch.delenv("MARQUEE_RETRAIN_EVERY")
    assert retrain_every(None) is None


def test_retrain_every_runs_a_supervised_child_that_promotes(trained, tmp_path, monkeypatch):
    layout = _copy(trained, tmp_path)
    first = serving_model(layout)
    registry = open_registry(layout.root)
    TokenLogDays(layout.root, WORLD).grow_to(4)  # a simulated day more, new titles among it
    monkeypatch.setenv("MARQUEE_RETRAIN_EPOCHS", "1")
    monkeypatch.setenv("MARQUEE_GATE_MARGIN", "1.0")  # this test is about the child, not the gate
    command = retrain_command(layout, "2s")
    assert command == [sys.executable, "-m", "infra.cli", "retrain", "--every", "2s",
                       "--data-dir", str(layout.root), "--registry", str(registry.root)]

    sup = Supervisor(state_file=layout.root / "stack.json")
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # retrain reads no topic
    sup.add("retrain", retrain_child(layout, kafka, "2s"), layout.root / "retrain.log")
    try:
        (pid,) = read_state(layout.root / "stack.json")["components"]["retrain"]["pids"]
        assert _cmdline(pid) == command
        deadline = time.monotonic() + 120
        while registry.serving() == first:
            sup.check()  # a crash of the child would be restarted here (and counted)
            assert time.monotonic() < deadline, (layout.root / "retrain.log").read_text()
            time.sleep(0.5)
        assert sup.watched[0].restarts == 0
    finally:
        sup.stop_all()
    promoted = registry.serving()
    assert promoted is not None and promoted.lineage()["parent"] == first.name
    assert "--every 2s" in promoted.lineage()["command"]
    assert '"action": "promoted"' in (layout.root / "retrain.log").read_text()
    assert read_state(layout.root / "stack.json")["stopped"] is True
