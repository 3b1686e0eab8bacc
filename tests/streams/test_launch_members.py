"""One member of a flow cluster started on its own (a Kubernetes pod each): its command,
recovery made once by racing members, and two members started apart forming one cluster
over a real broker."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from feature_repo.store import open_store, read_users
from infra.synthetic import SyntheticWorld, WorldConfig
from streams.config import KafkaSettings
from streams.launch import Launch, Member, free_port, parse_addresses, start_member, wait
from streams.produce import produce_events
from streams.topics import create_topics, delete_topics

ROOT = Path(__file__).resolve().parents[2]


def test_each_member_gets_its_id_all_addresses_and_the_same_metrics_port(tmp_path):
    launch = Launch(processes=3, recovery_dir=tmp_path / "r", metrics_port=9101)
    addresses = ("flow-0.flow:2101", "flow-1.flow:2101", "flow-2.flow:2101")
    for i in range(3):
        argv, env = Member(i, addresses).command(launch)
        assert argv[argv.index("-i") + 1] == str(i)
        assert argv[argv.index("-a") + 1] == ";".join(addresses)  # Bytewax's separator
        assert argv[argv.index("-r") + 1] == str(tmp_path / "r")
        assert env == {"MARQUEE_FLOW_METRICS_PORT": "9101",  # a host of its own: no offset
                       "MARQUEE_FLOW_STATE_DIR": str(tmp_path / "r" / "users")}


def test_addresses_and_ids_that_cannot_work_are_refused_with_the_fix():
    assert parse_addresses("a:1, b:2;c:3") == ["a:1", "b:2", "c:3"]
    for bad in ("", "a:1,b", "a:x"):
        with pytest.raises(ValueError, match="host:port of every member"):
            parse_addresses(bad)
    with pytest.raises(ValueError, match="give 0..1"):
        Member(2, ("a:1", "b:2"))
    with pytest.raises(ValueError, match="2 addresses for 3 processes"):
        Member(0, ("a:1", "b:2")).command(Launch(processes=3))


def _ensure(folder: str, start: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    start.wait()
    Launch(processes=4, workers=2, recovery_dir=Path(folder)).ensure_recovery()


@pytest.mark.parametrize("existing", [False, True], ids=["missing", "empty mount"])
def test_members_racing_to_create_recovery_make_one_complete_set(tmp_path, existing):
    folder = tmp_path / "recovery"
    if existing:
        folder.mkdir()  # an empty volume's directory, as a pod first sees it
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_ensure, args=(str(folder), start)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    assert sorted(f.name for f in folder.iterdir()) == [f"part-{i}.sqlite3" for i in range(8)]
    assert [f.name for f in tmp_path.iterdir()] == ["recovery"]  # no staging left behind


def test_a_directory_with_other_files_is_not_taken_for_recovery(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "lost+found").mkdir()
    with pytest.raises(ValueError, match="holds other files and no partitions"):
        Launch(recovery_dir=tmp_path / "r").ensure_recovery()


@pytest.mark.integration
def test_two_members_started_apart_form_one_cluster(kafka: KafkaSettings, tmp_path):
    suffix = os.urandom(6).hex()
    topics = kafka.model_copy(update={"events_topic": f"events-{suffix}",
                                      "dead_letter_topic": f"dlq-{suffix}"})
    create_topics(topics, {topics.events_topic: 4, topics.dead_letter_topic: 1})
    try:
        world = SyntheticWorld(WorldConfig(n_users=12, days=1))
        events = list(world.events())[:300]
        report = produce_events([json.dumps(e).encode() for e in events], topics,
                                progress=False)
        assert report.delivered == len(events)
        data = tmp_path / "data"
        world.write_catalogue(data / "catalogue.jsonl")
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap_servers,
               "MARQUEE_EVENTS_TOPIC": topics.events_topic,
               "MARQUEE_DEAD_LETTER_TOPIC": topics.dead_letter_topic,
               "MARQUEE_FLOW_DATA_DIR": str(data), "MARQUEE_FLOW_TAIL": "false",
               "MARQUEE_FLOW_FINISH_AT_EOF": "true", "MARQUEE_ONLINE_STORE": "sqlite",
               "PYTHONPATH": str(ROOT)}
        addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(2))
        launch = Launch(processes=2, recovery_dir=data / "recovery", snapshot_s=1)
        logs = [tmp_path / f"member-{i}.err" for i in range(2)]
        procs = [start_member(launch, Member(i, addresses), env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=logs[i].open("wb"))
                 for i in range(2)]
        assert wait(procs, timeout=120) == 0, [log.read_text()[-2000:] for log in logs]
        users = sorted({e["user_id"] for e in events})
        rows = read_users(open_store(online="sqlite", data_dir=data), users)
        missing = [u for u in users if not rows[u]["item_seq"]]
        assert not missing, missing  # every user's tokens, whichever member read them
        assert len(list((data / "recovery").glob("part-*.sqlite3"))) == 2
    finally:
        delete_topics(topics, [topics.events_topic, topics.dead_letter_topic])
