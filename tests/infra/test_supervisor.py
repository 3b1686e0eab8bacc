"""The supervisor with real processes: a SIGKILLed child comes back, a crash loop stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from infra.supervisor import CrashLoop, Processes, RestartPolicy, Supervisor

FAST = RestartPolicy(max_restarts=3, window_s=60, backoff_s=0.05, backoff_max_s=0.2)


def sleeper() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])]


def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_killed_child_is_restarted_and_the_state_file_follows(tmp_path) -> None:
    state = tmp_path / "stack.json"
    sup = Supervisor(FAST, state_file=state)
    try:
        sup.add("sleeper", Processes(sleeper), tmp_path / "sleeper.log")
        (first,) = json.loads(state.read_text())["components"]["sleeper"]["pids"]
        os.kill(first, signal.SIGKILL)
        until(lambda: (sup.check(), sup.watched[0].restarts == 1)[1])
        info = json.loads(state.read_text())["components"]["sleeper"]
        assert info["restarts"] == 1 and info["pids"] and info["pids"] != [first]
        assert sup.watched[0].child.alive()
    finally:
        sup.stop_all()
    assert json.loads(state.read_text())["stopped"] is True
    assert not sup.watched[0].child.alive()


def test_a_cluster_member_dying_stops_its_peers_before_the_restart(tmp_path) -> None:
    sup = Supervisor(FAST)
    child = Processes(lambda: sleeper() + sleeper())
    try:
        sup.add("pair", child, tmp_path / "pair.log")
        a, b = child.procs
        a.kill()
        a.wait()
        sup.check()
        assert b.poll() is not None  # the peer went down with it
        until(lambda: (sup.check(), child.alive())[1])
        assert {p.pid for p in child.procs}.isdisjoint({a.pid, b.pid})
    finally:
        sup.stop_all()


def test_a_crash_loop_raises_naming_the_component_and_its_log(tmp_path) -> None:
    sup = Supervisor(FAST)
    crash = Processes(lambda: [subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])])
    sup.add("flaky", crash, tmp_path / "flaky.log")
    with pytest.raises(CrashLoop) as caught:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sup.check()
            time.sleep(0.02)
    sup.stop_all()
    text = str(caught.value)
    assert "flaky exited 3 times" in text and "exit code 3" in text
    assert str(tmp_path / "flaky.log") in text
    assert sup.watched[0].restarts == FAST.max_restarts - 1


def test_backoff_doubles_and_an_old_exit_leaves_the_window(tmp_path) -> None:
    policy = RestartPolicy(max_restarts=3, window_s=10, backoff_s=1, backoff_max_s=4)
    sup = Supervisor(policy)
    crash = Processes(lambda: [subprocess.Popen([sys.executable, "-c", "pass"])])
    sup.add("c", crash, tmp_path / "c.log")
    crash.procs[0].wait()
    w = sup.watched[0]
    sup.check(now=100.0)
    assert w.restart_at == 101.0  # 1 s
    sup.check(now=101.0)
    crash.procs[0].wait()
    sup.check(now=101.5)
    assert w.restart_at == 103.5  # 2 s
    sup.check(now=103.5)
    crash.procs[0].wait()
    sup.check(now=120.0)  # the first two exits are older than the window
    assert w.restart_at == 121.0 and len(w.exits) == 1
    sup.stop_all()
