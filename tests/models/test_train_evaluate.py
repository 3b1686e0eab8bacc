"""Train tiny models on the synthetic world, evaluate them against the baselines, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from infra.synthetic import synthetic_corpus
from models.blend import retune_blend
from models.checkpoint import load_checkpoint
from models.data import leave_one_out
from models.evaluate import compare_trainings, evaluate_dir, over_trainings
from models.train import TrainConfig, train, write_outputs
from streams.contract.tokens import FACETS

TINY = {"max_len": 64, "d_model": 32, "n_heads": 2, "n_layers": 1}


@pytest.fixture(scope="module")
def world():
    return synthetic_corpus(n_users=150, days=10)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fm")
    cfg = TrainConfig(epochs=3, progress=False, device="cpu", seed=1, valid_users=60)
    spec = {"format": "synthetic", "path": None, "options": {"n_users": 150, "days": 10}}
    write_outputs(train(world, TINY, cfg, data_spec=spec), out)
    write_outputs(train(world, {**TINY, "item_only": True}, cfg, data_spec=spec, tag="io"),
                  out / "ablation")
    return out


def test_checkpoint_carries_config_vocab_and_history(trained: Path, world) -> None:
    ckpt = load_checkpoint(trained)
    assert ckpt.config.n_items == world.n_items and ckpt.config.max_len == 64
    assert ckpt.vocab.tables == world.vocab.tables
    assert ckpt.genres == world.genres and ckpt.extra["data"]["format"] == "synthetic"
    assert (ckpt.model.known == 0).sum() > 2  # cold titles are known by metadata only
    metrics = json.loads((trained / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3]
    assert metrics["best_epoch"] == ckpt.extra["best_epoch"]
    assert (trained / "curves.png").stat().st_size > 1000
    # the multi-token blend is chosen on validation: the best NDCG@10 of the grid
    blend = {float(b): r["ndcg@10"] for b, r in metrics["blend"].items()}
    assert sorted(blend) == sorted(TrainConfig().blend_grid)
    assert blend[ckpt.config.mtp_blend] == max(blend.values())
    assert metrics["valid"]["ndcg@10"] == blend[ckpt.config.mtp_blend]
    assert json.loads((trained / "ablation" / "metrics.json").read_text())["blend"] == {}
    # epochs are evaluated on a sample of validation users, the blend on all of them
    assert {r["valid_users"] for r in metrics["history"]} == {60}
    assert {r["users"] for r in metrics["blend"].values()} == {len(leave_one_out(world).valid)}


def test_event_model_beats_baselines_and_ranks_cold_titles(trained: Path, world) -> None:
    result = evaluate_dir(trained, world)
    model, pop, ablation = result["model"], result["most_popular"], result["item_only"]
    assert model["users"] == pop["users"] == ablation["users"] > 100
    assert model["hr@10"] > pop["hr@10"] and model["hr@10"] > ablation["hr@10"]
    assert model["cold_users"] > 0 and model["cold_recall@50"] > 0.1
    assert ablation["cold_recall@50"] < model["cold_recall@50"]
    # a model that blends its multi-token heads in is also read without them
    blended = load_checkpoint(trained).config.mtp_blend > 0
    assert ("without_lookahead" in result) == blended
    expected = {"item_only", "without_lookahead"} if blended else {"item_only"}
    assert set(result["model_minus"]) == expected
    lead = result["model_minus"]["item_only"]
    for key in ("hr@10", "ndcg@10", "hr@50", "ndcg@50"):  # paired on the same test users
        assert abs(lead[key]["diff"] - (model[key] - ablation[key])) <= 2e-5
        assert lead[key]["ci95"][0] <= lead[key]["diff"] <= lead[key]["ci95"][1]


def test_without_lookahead_is_the_same_model_at_blend_zero(trained: Path, world,
                                                           tmp_path: Path) -> None:
    ckpt = load_checkpoint(trained)
    ckpt.model.cfg.mtp_blend = 4.0  # far from anything the grid chose
    ckpt.save(tmp_path)
    result = evaluate_dir(tmp_path, world)
    reference = evaluate_dir(trained, world)
    at_zero = reference.get("without_lookahead", reference["model"])
    assert result["without_lookahead"] == at_zero
    assert result["model"] != result["without_lookahead"]
    lead = result["model_minus"]["without_lookahead"]["hr@10"]["diff"]
    assert abs(lead - (result["model"]["hr@10"] - at_zero["hr@10"])) <= 2e-5


def test_cli_export_and_onnx_evaluation_agree(trained: Path, tmp_path: Path, capsys) -> None:
    onnx_path = tmp_path / "fm.onnx"
    assert main(["export", "--model", str(trained), "--out", str(onnx_path), "--k", "60"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(trained), "--onnx", str(onnx_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test"
    for key in ("hr@10", "hr@50", "cold_recall@50"):
        assert abs(result["onnx"][key] - result["model"][key]) <= 0.02  # only tie order differs


def test_cli_train_sasrec(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d.txt"
    data.write_text("".join(f"{u} {(u * 7 + k) % 40 + 1}\n" for u in range(1, 60)
                            for k in range(6)))
    out = tmp_path / "m"
    assert main(["train", "--data", str(data), "--format", "sasrec", "--out", str(out),
                 "--epochs", "2", "--max-len", "8", "--d-model", "16", "--no-progress",
                 "--negatives", "10", "--id-dropout", "0.4", "--lr-decays", "1",
                 "--lr-decay", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fm"]["valid"]["users"] == 59
    ckpt = load_checkpoint(out)
    assert ckpt.config.n_negatives == 10 and ckpt.config.id_dropout == 0.4  # not the default
    assert (ckpt.extra["train"]["lr_decays"], ckpt.extra["train"]["lr_decay"]) == (1, 0.5)
    assert ckpt.config.constant_facets == FACETS[1:]  # SASRec data: item ids only
    assert main(["evaluate", "--model", str(out)]) == 0  # data found from the checkpoint
    assert json.loads(capsys.readouterr().out)["model"]["users"] == 59
    assert main(["tune-blend", "--model", str(out), "--grid", "0", "1"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["valid_users"] == 59 and set(tuned["valid_ndcg@10"]) == {"0.0", "1.0"}
    assert load_checkpoint(out).config.mtp_blend == tuned["mtp_blend"]


def test_plateau_returns_to_best_and_lowers_lr(world) -> None:
    cfg = TrainConfig(epochs=12, lr=3e-2, patience=1, lr_decays=2, progress=False,
                      device="cpu", seed=3, blend_grid=())
    result = train(world, {**TINY, "item_only": True}, cfg)
    lrs = [row["lr"] for row in result.history]
    ndcg = [row["valid_ndcg@10"] for row in result.history]
    drops = [i for i in range(1, len(lrs)) if lrs[i] < lrs[i - 1]]
    assert drops, "a plateau within 12 epochs at this learning rate"
    assert len(drops) <= 2
    for i in drops:
        assert lrs[i] == pytest.approx(lrs[i - 1] * 0.1)
    for i in drops:  # a drop follows an evaluation that did not beat the best before it
        assert ndcg[i - 1] <= max(ndcg[:i - 1])
    if len(lrs) < cfg.epochs:  # stopped early: only after the last allowed decay
        assert len(drops) == 2
    assert result.best_valid["ndcg@10"] == max(ndcg)


def test_lr_decay_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decays=1, lr_decay=1.5)


def test_tune_blend_rewrites_the_choice_on_validation(trained: Path, world,
                                                      tmp_path: Path) -> None:
    ckpt = load_checkpoint(trained)
    ckpt.save(tmp_path)
    (tmp_path / "metrics.json").write_text((trained / "metrics.json").read_text())
    out = retune_blend(tmp_path, world, grid=(0.0, 3.0))
    assert out["valid_users"] == len(leave_one_out(world).valid)
    assert out["was"] == ckpt.config.mtp_blend
    chosen = max(out["valid_ndcg@10"], key=out["valid_ndcg@10"].get)
    assert out["mtp_blend"] == chosen
    again = load_checkpoint(tmp_path)
    assert again.config.mtp_blend == chosen and again.version == out["version"] != ckpt.version
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["mtp_blend"] == chosen and sorted(metrics["blend"]) == ["0.0", "3.0"]
    for key, value in ckpt.model.state_dict().items():  # the weights are untouched
        assert (again.model.state_dict()[key] == value).all()
    with pytest.raises(ValueError, match="no multi-token heads"):
        retune_blend(trained / "ablation", world)


def test_over_trainings_interval() -> None:
    out = over_trainings([0.001, 0.003, -0.001])
    assert out["diff"] == pytest.approx(0.001) and out["trainings_ahead"] == "2/3"
    # mean 0.001, sd 0.002, t(0.975, 2) = 4.303: half-width 4.303 * 0.002 / sqrt(3)
    assert out["ci95_over_trainings"] == pytest.approx([0.001 - 0.004969, 0.001 + 0.004969],
                                                       abs=1e-5)
    assert "ci95_over_trainings" not in over_trainings([0.002])


def test_compare_summarises_trainings(trained: Path, world, capsys) -> None:
    pair = (trained, trained / "ablation")
    result = compare_trainings([pair, pair], world)
    assert result["trainings"] == 2 and len(result["runs"]) == 2
    run = result["runs"][0]
    for key in ("hr@10", "ndcg@10", "hr@50", "ndcg@50"):
        row = result["mean"][key]
        lead = run["model_minus"]["item_only"][key]["diff"]
        assert row["model"] == run["model"][key] and row["item_only"] == run["item_only"][key]
        assert row["diff"] == pytest.approx(lead)
        assert row["ci95_over_trainings"] == pytest.approx([lead, lead])  # same run twice
        assert row["trainings_ahead"] == ("2/2" if lead > 0 else "0/2")
        own = run["model_minus"].get("without_lookahead", {key: {"diff": 0.0}})[key]["diff"]
        assert result["lookahead"][key]["diff"] == pytest.approx(own)
    assert main(["compare", "--model", str(trained), str(trained), "--ablation",
                 str(trained / "ablation")]) == 2
    assert "one ablation per model" in capsys.readouterr().err
