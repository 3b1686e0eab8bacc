"""The continuous-training loop on a running service: a tiny model trained on three simulated
days serves from the registry; the token log grows by a fourth day (new titles among it);
``retrain_and_gate`` warm-starts, examines and promotes a candidate; the service follows the
registry to it under load without a dropped request, and a rollback brings the first back. The
following is the one ``marquee up`` and ``marquee serve`` run: a ``RegistryFollower`` on a
supervision loop's tick."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from infra.continuous import RegistryFollower, add_model, retrain_and_gate, write_experiment
from infra.supervisor import Supervisor
from infra.synthetic import WorldConfig
from infra.token_days import TokenLogDays
from models.data import load_corpus
from models.registry import Registry, Version
from models.retrain_settings import RetrainSettings
from models.train import TrainConfig, train, write_outputs
from serve import app
from serve.config import ServeSettings
from serve.experiment_config import load_experiment
from tests.serve.switching import switch_under_load

pytestmark = pytest.mark.integration
NAME, PREFIX = "marquee-retrain", "/rt"
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 1, "max_len": 20, "mtp_k": 1}


def _features(root, days: TokenLogDays) -> None:
    """The Feast SQLite rows of the first three days (what the flow would have written)."""
    from feature_repo.store import FeatureWriter, open_store, user_row
    from streams.contract.tokenizer import tokenize_events
    from streams.contract.tokens import Vocab

    events = [e for e in days.events if e.ts < days.end_ms(3)]
    by_user: dict[str, list] = {}
    for tok in tokenize_events(events, Vocab.load(root / "vocab.json"), grow_vocab=False):
        by_user.setdefault(tok.user_id, []).append(tok)
    writer = FeatureWriter(open_store(data_dir=root, online="sqlite"))
    writer.write_users([user_row(u, t[-200:], t[-1].ts) for u, t in by_user.items()])
    plays = Counter(e.item_id for e in events if e.action.value == "play")
    now = max(e.ts for e in events)
    writer.write_items([{
        "item_id": t.item_id, "event_timestamp": now, "plays_1h": 0,
        "plays_24h": plays[t.item_id], "impressions_24h": 0, "ctr_24h": 0.0,
        "release_ms": t.release_ms, "genre": t.genre, "kind": t.kind,
        "duration_s": t.duration_s} for t in days.world.catalogue])


def _settled(follow: RegistryFollower, version: Version) -> None:
    """The follower's rollover returned (clients see a switch before Serve's call returns)."""
    deadline = time.monotonic() + 60
    while follow.settings.model_path != version.onnx:
        assert time.monotonic() < deadline, (follow.watch.current, follow.settings.model_path)
        time.sleep(0.1)
    assert follow.watch.current == version.name


def test_retrain_gate_promote_switch_and_rollback(served, tmp_path) -> None:
    from ray import serve as ray_serve

    url, _ = served
    root = tmp_path / "data"
    days = TokenLogDays(root, WorldConfig(seed=5, n_users=40, days=4))
    days.grow_to(3)
    cfg = TrainConfig(epochs=1, progress=False, device="cpu", blend_grid=())
    write_outputs(train(load_corpus("tokens", root / "tokens"), TINY, cfg), tmp_path / "first")
    registry = Registry(root / "models")
    first = add_model(registry, tmp_path / "first", promote=True, command="test")
    _features(root, days)
    settings = ServeSettings(data_dir=root, model_path=first.onnx, online_store="sqlite",
                             rankings_log=False)
    ray_serve.run(app.build_app(settings), name=NAME, route_prefix=PREFIX)
    follow = RegistryFollower(registry, settings, first.name, every_s=0.1, name=NAME,
                              route_prefix=PREFIX)
    stop = threading.Event()
    loop = threading.Thread(target=Supervisor().run, args=(stop,), kwargs={"extra": follow})
    user = days.events[-1].user_id
    try:
        days.grow_to(4)  # a simulated day: more events, new titles
        report = retrain_and_gate(root, registry, RetrainSettings(
            retrain_epochs=1, holdout_hours=12, gate_margin=1.0), command="test")
        assert report["action"] == "promoted", report
        assert report["new_items"] > 0 and report["current"] == first.name
        second = registry.serving()
        assert second is not None and second.name == report["candidate"] != first.name
        lineage = second.lineage()
        assert lineage["parent"] == first.name
        span = lineage["token_span"]
        assert span["to_ms"] == lineage["holdout"]["cut_ms"] < span["newest_ms"]
        assert span["tokens"] < span["log_tokens"]
        assert second.metrics()["gate"]["promote"] is True

        # the loop starts after the promotion: its first tick finds the registry moved on
        switch_under_load(f"{url}{PREFIX}", user, loop.start, second.name)
        _settled(follow, second)

        seen = switch_under_load(f"{url}{PREFIX}", user, registry.rollback, first.name)
        assert seen[0][0] == second.name
        _settled(follow, first)

        # the experiment route: an interleaving config of candidate vs current that the
        # service's own validation accepts
        config = write_experiment(tmp_path / "exp.json", first, second)
        experiment = load_experiment(config)
        assert experiment is not None and experiment.mode.value == "interleave"
        assert [v.model for v in experiment.variants] == [str(first.onnx.resolve()),
                                                           str(second.onnx.resolve())]
    finally:
        stop.set()
        if loop.is_alive():
            loop.join(60)
        ray_serve.delete(NAME)
    from infra.cli import main

    assert main(["models", "list", "--registry", str(root / "models")]) == 0


def test_models_cli(tmp_path, capsys) -> None:
    """``marquee models`` promote/rollback/list on a registry (no service)."""
    from infra.cli import main

    reg = Registry(tmp_path)
    for name in ("v1", "v2"):
        reg.add(name, lambda f: (f / "model.onnx").write_bytes(b"x"), {"parent": None})
    assert main(["models", "promote", "v1", "--registry", str(tmp_path)]) == 0
    assert main(["models", "promote", "v2", "--registry", str(tmp_path)]) == 0
    assert main(["models", "rollback", "--registry", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--registry", str(tmp_path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["serving"] == "v1" and listed["stack"] == ["v1"]
    assert [v["status"] for v in listed["versions"]] == ["promoted", "promoted"]
    assert main(["models", "rollback", "--registry", str(tmp_path)]) == 2  # nothing before v1
