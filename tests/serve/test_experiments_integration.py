"""Experiments on Ray Serve: a second app beside the session's, serving two model files and the
popular control, logging every ranking to the real broker. A/B assigns users stably and each
answer's variant is its model's; a config change to interleaving under load drops no request;
the logged records are the answers."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest

from serve import app
from serve.experiment_config import ExperimentConfigError
from serve.experiments import allocate
from serve.rankings_log import RankingRecord
from streams.consume import read_all
from streams.topics import create_topics, delete_topics

pytestmark = pytest.mark.integration
NAME, PREFIX = "marquee-exp", "/exp"
VERSIONS = {"a": "fm-a", "b": "fm-b", "control": "popular"}


def _config(tmp_path, world, mode: str) -> str:
    variants = [{"name": "a", "model": str(world.model_a)},
                {"name": "b", "model": str(world.model_b)}]
    if mode == "ab":
        variants.append({"name": "control", "model": "popular"})
    path = tmp_path / f"{mode}.json"
    path.write_text(json.dumps({"name": f"exp-{mode}", "mode": mode, "variants": variants}))
    return str(path)


@pytest.fixture(scope="module")
def experiment_app(served, world, kafka, tmp_path_factory):
    """The app with an A/B experiment at /exp, logging to a fresh topic; its settings."""
    from ray import serve as ray_serve

    url, _ = served
    topic = f"rankings-{uuid.uuid4().hex[:12]}"
    create_topics(kafka, {topic: 4})
    folder = tmp_path_factory.mktemp("experiments")
    settings = world.settings(rankings_log=True, bootstrap_servers=kafka.bootstrap_servers,
                              rankings_topic=topic, experiments=_config(folder, world, "ab"))
    ray_serve.run(app.build_app(settings), name=NAME, route_prefix=PREFIX)
    try:
        yield f"{url}{PREFIX}", settings, folder
    finally:
        ray_serve.delete(NAME)
        delete_topics(kafka, [topic])


def test_ab_assigns_users_stably_and_each_answer_is_its_variants_model(
        experiment_app, world, kafka) -> None:
    url, settings, _ = experiment_app
    answers = []
    with httpx.Client(timeout=30) as client:
        for user in world.users[:12]:
            want = ["a", "b", "control"][allocate("exp-ab", user, [1, 1, 1])]
            for _ in range(2):
                r = client.post(f"{url}/v1/rank", json={"user_id": user, "k": 5})
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["experiment"] == "exp-ab" and got["variants"] == [want]
                assert got["model_version"] == VERSIONS[want]
                assert {i["variant"] for i in got["items"]} == {want}
                answers.append(got)
    assert {a["variants"][0] for a in answers} == {"a", "b", "control"}
    got = read_all(kafka, settings.rankings_topic, expected=len(answers), timeout=20)
    records = {RankingRecord.model_validate_json(r.value).request_id:
               (r.key, RankingRecord.model_validate_json(r.value)) for r in got}
    for a in answers:
        key, rec = records[a["request_id"]]
        assert key == a["user_id"].encode() and rec.user_id == a["user_id"]
        assert rec.experiment == "exp-ab" and rec.mode == "ab" and rec.variants == a["variants"]
        assert rec.model_versions == {a["variants"][0]: a["model_version"]}
        assert [(i.item_id, i.position, i.variant) for i in rec.items] == [
            (i["item_id"], i["position"], i["variant"]) for i in a["items"]]
    text = httpx.get(f"{url}/metrics").text
    assert 'marquee_experiment_requests_total{experiment="exp-ab",variant="control"}' in text
    assert 'marquee_rankings_logged_total{result="delivered"}' in text


def test_switching_to_interleaving_under_load_drops_no_request(experiment_app, world) -> None:
    url, settings, folder = experiment_app
    per_client: list[list[list[str]]] = [[], []]
    errors: list[str] = []
    stop = threading.Event()

    def load(seen: list[list[str]], user: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{url}/v1/rank", json={"user_id": user, "k": 8})
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen.append([i["variant"] for i in r.json()["items"]])

    bad = folder / "bad.json"
    bad.write_text(json.dumps({"name": "x", "mode": "interleave",
                               "variants": [{"name": "a", "model": "popular"}]}))
    with pytest.raises(ExperimentConfigError, match="at least 2"):  # refused before deploying
        app.set_experiment(settings, bad, name=NAME, route_prefix=PREFIX)
    workers = [threading.Thread(target=load, args=(seen, world.users[i]))
               for i, seen in enumerate(per_client)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    app.set_experiment(settings, _config(folder, world, "interleave"), name=NAME,
                       route_prefix=PREFIX)
    deadline = time.time() + 60
    while time.time() < deadline and not all(
            len(s) > 3 and all(len(set(t)) == 2 for t in s[-3:]) for s in per_client):
        time.sleep(0.2)
    stop.set()
    for w in workers:
        w.join()
    assert not errors, errors[:3]
    for seen in per_client:
        assert len(set(seen[0])) == 1  # A/B first: one variant per list
        switch = next(i for i, teams in enumerate(seen) if set(teams) == {"a", "b"})
        assert all(set(t) == {"a", "b"} for t in seen[switch:])  # no A/B answer after it
    r = httpx.post(f"{url}/v1/rank", json={"user_id": world.users[5], "k": 10}, timeout=30)
    got = r.json()
    assert got["variants"] == ["a", "b"] and got["model_version"] == "fm-a+fm-b"
    assert {i["variant"] for i in got["items"]} == {"a", "b"}
