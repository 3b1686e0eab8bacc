"""Experiments in the ranker (no Ray): A/B arms with their own models and the popular control,
interleaved lists with a team per item, the re-ranker's rules on the interleaved list."""

from __future__ import annotations

import pytest

from serve.constraints import Constraints
from serve.experiment_config import parse_experiment
from serve.experiments import allocate
from serve.ranker import Ranker
from serve.rankings_log import RankingRecord, record
from serve.schemas import RankRequest, RankResponse


def _rank(ranker: Ranker, req: RankRequest) -> tuple[RankResponse, object]:
    p = ranker.prepare(req)
    return ranker.finish(p, ranker.infer([p])[0]), p


def _experiment(world, mode: str, control: bool = False):
    variants = [{"name": "a", "model": str(world.model_a)},
                {"name": "b", "model": str(world.model_b), "weight": 2}]
    if control:
        variants.append({"name": "control", "model": "popular"})
    return parse_experiment({"name": f"exp-{mode}", "mode": mode, "variants": variants})


@pytest.fixture(scope="module")
def ranker(world) -> Ranker:
    r = Ranker(world.settings(), world.store, None)
    r.load_model(world.model_a)
    return r


def test_without_an_experiment_every_item_is_the_default_variant(world, ranker) -> None:
    ranker.plan = None
    res, _ = _rank(ranker, RankRequest(user_id=world.users[0], k=5))
    assert res.experiment is None and res.variants == ["default"]
    assert {i.variant for i in res.items} == {"default"} and len(res.request_id) == 32
    again, _ = _rank(ranker, RankRequest(user_id=world.users[0], k=5))
    assert again.request_id != res.request_id


def test_ab_gives_each_user_one_stable_arm_with_its_own_model(world, ranker) -> None:
    exp = _experiment(world, "ab", control=True)
    ranker.plan = ranker.build_plan(exp)
    assert ranker.plan.arms["a"].model is ranker.model  # the default's file: not loaded twice
    versions = {"a": "fm-a", "b": "fm-b", "control": "popular"}
    seen = set()
    for user in world.users[:20]:
        want = ["a", "b", "control"][allocate(exp.hash_salt, user, [1, 2, 1])]
        for _ in range(2):
            res, p = _rank(ranker, RankRequest(user_id=user, k=6))
            assert res.variants == [want] and res.experiment == "exp-ab"
            assert res.model_version == versions[want]
            assert {i.variant for i in res.items} == {want} and len(res.items) == 6
            assert not res.degraded, res.fallback  # the control is not a degraded answer
            rec = RankingRecord.model_validate_json(record(p, res))
            assert rec.mode == "ab" and rec.model_versions == {want: versions[want]}
        seen.add(want)
    assert seen == {"a", "b", "control"}
    text = ranker.checks()["model"].detail
    assert "exp-ab" in text and "b=fm-b" in text


def test_interleaving_mixes_both_teams_and_keeps_each_items_team(world, ranker) -> None:
    ranker.plan = ranker.build_plan(_experiment(world, "interleave"))
    both = 0
    for user in world.users[:8]:
        res, p = _rank(ranker, RankRequest(user_id=user, k=10))
        assert res.variants == ["a", "b"] and res.model_version == "fm-a+fm-b"
        teams = [i.variant for i in res.items]
        assert set(teams) <= {"a", "b"} and len(teams) == 10
        both += set(teams) == {"a", "b"}
        ids = [i.item_id for i in res.items]
        assert len(set(ids)) == len(ids)
        rec = RankingRecord.model_validate_json(record(p, res))
        assert [(i.item_id, i.variant, i.position) for i in rec.items] == [
            (i.item_id, i.variant, i.position) for i in res.items]
        assert rec.request_id == res.request_id and rec.experiment == "exp-interleave"
    assert both >= 6  # two untrained models rarely agree on a whole list


def test_the_goal_reranker_applies_to_the_interleaved_list(world, ranker) -> None:
    ranker.plan = ranker.build_plan(_experiment(world, "interleave"))
    movies = [i for i, t in world.catalogue.items() if t.kind == "movie"]
    goal = Constraints.model_validate({"goal": {"kinds": ["movie"]}})
    res, _ = _rank(ranker, RankRequest(user_id=world.users[1], k=5, goal=goal))
    assert res.items and all(i.kind == "movie" for i in res.items), res.explanation
    assert all(i.item_id in movies for i in res.items)
    ranker.plan = None


def test_model_info_names_every_version_that_ranks(world, ranker) -> None:
    from serve import metrics

    def serving() -> dict[str, float]:
        return {s.labels["model_version"]: s.value
                for m in metrics.MODEL_INFO.collect() for s in m.samples}

    ranker.plan = ranker.build_plan(_experiment(world, "ab", control=True))
    info = serving()
    assert info["fm-a"] == 1 and info["fm-b"] == 1 and "popular" not in info
    ranker.plan = None  # back to the default model alone
    info = serving()
    assert info["fm-a"] == 1 and info["fm-b"] == 0
