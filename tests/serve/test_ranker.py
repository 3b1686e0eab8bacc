"""The ranker without Ray: real Feast store (SQLite), real ONNX files from the export code."""

from __future__ import annotations

import pytest

from serve.constraints import Constraints, Goal
from serve.ranker import Ranker
from serve.schemas import RankRequest
from streams.contract.events import InteractionEvent


def _rank(ranker: Ranker, req: RankRequest):
    p = ranker.prepare(req)
    return ranker.finish(p, ranker.infer([p])[0])


@pytest.fixture(scope="module")
def ranker(world) -> Ranker:
    r = Ranker(world.settings(), world.store, None)
    r.load_model(world.model_a)
    return r


def test_known_user_ranks_unseen_released_titles(world, ranker) -> None:
    user = world.users[0]
    res = _rank(ranker, RankRequest(user_id=user, k=15, explain=True))
    assert res.model_version == "fm-a" and not res.degraded and res.fallback is None
    ids = [i.item_id for i in res.items]
    assert len(ids) == 15 == len(set(ids)) and [i.position for i in res.items] == list(range(1, 16))
    watched = {e.item_id for e in world.events
               if e.user_id == user and e.action.value == "complete"}
    assert not watched & set(ids)
    assert set(res.latency_ms) >= {"features", "tokenize", "inference", "candidates", "rerank"}


def test_session_events_change_the_ranking(world, ranker) -> None:
    user = world.users[1]
    before = _rank(ranker, RankRequest(user_id=user, k=10))
    last = max(e.ts for e in world.events if e.user_id == user)
    item = before.items[0].item_id
    events = [InteractionEvent(event_id=f"x{i}", user_id=user, item_id=item, action=a,
                               ts=last + 60_000 + i * 1000, device="tv", surface="home/top_picks",
                               watch_seconds=w)
              for i, (a, w) in enumerate([("play", 0.0), ("complete", 1500.0)])]
    after = _rank(ranker, RankRequest(user_id=user, k=10, events=events))
    assert item not in [i.item_id for i in after.items]  # watched in session: excluded
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]


def _short_episodes_among(world, ranker, n_short: int):
    """Rank 10 for the "short episodes" goal among ``n_short`` passing titles and 20 movies;
    the response and the passing titles offered."""
    short = [i for i, t in world.catalogue.items() if t.kind == "episode" and t.duration_s <= 1800]
    other = [i for i, t in world.catalogue.items() if t.kind == "movie"]
    goal = Constraints(goal=Goal(preset="short_episodes"))
    res = _rank(ranker, RankRequest(user_id=world.users[2], k=10, goal=goal,
                                    candidates=short[:n_short] + other[:20]))
    return res, short


def test_goal_holds_when_enough_candidates_pass_it(world, ranker) -> None:
    res, short = _short_episodes_among(world, ranker, 14)
    assert not res.relaxed and len(res.items) == 10
    assert {i.item_id for i in res.items} <= set(short[:14])


def test_goal_is_relaxed_only_when_too_few_candidates_pass_it(world, ranker) -> None:
    res, short = _short_episodes_among(world, ranker, 3)
    assert [c.family for c in res.relaxed] == ["goal"] and len(res.items) == 10
    assert set(short[:3]) <= {i.item_id for i in res.items}  # every one that passes is in
    assert "only 3 of 10 candidates match" in res.explanation


def test_unknown_user_gets_popular_titles(ranker) -> None:
    res = _rank(ranker, RankRequest(user_id="never-seen", k=5))
    assert res.fallback == "unknown_user" and not res.degraded and len(res.items) == 5


def test_no_store_degrades_to_session_events(world) -> None:
    r = Ranker(world.settings(), None, None)
    r.load_model(world.model_a)
    user = world.users[0]
    ev = next(e for e in world.events if e.user_id == user and e.action.value == "play")
    res = _rank(r, RankRequest(user_id=user, k=5, events=[ev]))
    assert res.degraded and res.fallback == "feature_store_unavailable" and len(res.items) == 5


def test_no_model_degrades_to_popular(world) -> None:
    r = Ranker(world.settings(), world.store, None)
    res = _rank(r, RankRequest(user_id=world.users[0], k=5))
    assert res.degraded and res.fallback == "no_model" and res.model_version == "none"


def test_bad_requests_say_what_to_fix(world, ranker) -> None:
    with pytest.raises(ValueError, match="k_max"):
        ranker.prepare(RankRequest(user_id="u", k=999))
    ev = world.events[0]
    with pytest.raises(ValueError, match="another user"):
        ranker.prepare(RankRequest(user_id=ev.user_id + "x", events=[ev]))


def test_candidates_restrict_the_list_and_similar_works(world, ranker) -> None:
    cands = list(world.catalogue)[:12]
    res = _rank(ranker, RankRequest(user_id=world.users[0], k=5, candidates=cands + ["zzz"]))
    assert {i.item_id for i in res.items} <= set(cands)
    assert res.unknown_candidates == 1 and res.unknown_candidate_ids == ["zzz"]
    sims = ranker.similar(cands[0], 5)
    assert len(sims) == 5 and cands[0] not in [s for s, _ in sims]


def test_unknown_candidates_are_dropped_and_reported_never_ranked(world, ranker) -> None:
    cands = list(world.catalogue)[:12]
    bogus = [f"../../etc/passwd{i}" for i in range(988)]
    res = _rank(ranker, RankRequest(user_id=world.users[0], k=20, candidates=cands + bogus))
    assert res.items and {i.item_id for i in res.items} <= set(cands)
    assert res.unknown_candidates == 988 and res.unknown_candidate_ids == bogus[:5]
    only_bogus = _rank(ranker, RankRequest(user_id=world.users[0], k=5, candidates=bogus))
    assert only_bogus.items == [] and only_bogus.unknown_candidates == 988
    full = _rank(ranker, RankRequest(user_id=world.users[0], k=5))
    assert full.unknown_candidates is None  # reported only when the request names candidates


@pytest.mark.parametrize("with_model", [True, False])
def test_explicit_candidates_leave_out_watched_and_unreleased_titles(world, ranker,
                                                                     with_model: bool) -> None:
    """As a full ranking does (the model's mask, or the popular fallback's filter)."""
    user = world.users[0]
    mine = [e for e in world.events if e.user_id == user]
    last = max(e.ts for e in mine)
    watched = list(dict.fromkeys(e.item_id for e in reversed(mine)
                                 if e.action.value == "complete"))[:5]
    unreleased = sorted(i for i, t in world.catalogue.items() if t.release_ms > last)[:5]
    touched = {e.item_id for e in mine}
    fresh = [i for i, t in world.catalogue.items() if t.release_ms <= last and i not in touched]
    assert len(watched) == 5 and len(unreleased) == 5 and len(fresh) >= 10
    r = ranker if with_model else Ranker(world.settings(), world.store, None)
    res = _rank(r, RankRequest(user_id=user, k=20, candidates=watched + unreleased + fresh[:10]))
    assert {i.item_id for i in res.items} == set(fresh[:10])
    assert res.excluded_candidates == 10 and res.unknown_candidates == 0
    assert res.fallback == (None if with_model else "no_model")


def test_checks_say_which_dependency_is_missing(world, ranker) -> None:
    checks = ranker.checks()
    assert checks["model"].ok and checks["feature_store"].ok, checks
    bare = Ranker(world.settings(), None, None)
    checks = bare.checks()
    assert not checks["model"].ok and "model_path" in checks["model"].detail
    assert not checks["feature_store"].ok


def test_checks_see_a_killed_redis(world, tmp_path) -> None:
    """A real redis-server, SIGKILLed: the store check turns false and names the failure."""
    import shutil

    from feature_repo.store import open_store
    from infra.redis_server import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make system-deps installs it)")
    with RedisServer(tmp_path / "redis") as server:
        store = open_store(online="redis", data_dir=tmp_path, redis_url=server.url)
        ranker = Ranker(world.settings(), store, None)
        assert ranker.checks()["feature_store"].ok
        server.kill()
        down = ranker.checks()["feature_store"]
        assert not down.ok and "read failed" in down.detail
