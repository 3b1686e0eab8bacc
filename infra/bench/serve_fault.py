"""``marquee bench serve --fault N ...``: SIGKILL of one ranking replica under open-loop load.

Poisson arrivals at half the measured capacity, latency from the scheduled send time (as in
the overload level, so a stall is not hidden); ``before_s`` of steady load, then SIGKILL of one
replica's worker process, then ``after_s`` more of the same load. Reported per second from the
kill: requests, errors (anything but 200) and p99 of the answered ones; the error share over
``after_s``; when Serve saw the death, when Ray had the replacement actor alive and when Serve
routed to it again; and when latency was back to normal.

*Normal* means: a 1-s window with no error and a p99 of at most ``factor`` x the p99 of the
``before_s`` before the kill, for ``hold_s`` windows in a row after the first window since the
kill that was not; the time is the start of the first such window, from the kill and from the
replacement's RUNNING (0 from the kill when no window was disturbed). (A 1-s window's p99 at
tens of requests is close to its maximum, so the baseline's own windows are checked with the
same rule and their share reported: a noisy machine shows there first.)

No no-op floor for this level: the no-op app has nothing to recover.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from infra.bench.serve import Shot, poisson_shots
from serve.replicas import DEPLOYMENT, Replica, class_name, replicas, running


def kill_replica(replica: Replica, app: str = "marquee", deployment: str = DEPLOYMENT) -> None:
    """SIGKILL ``replica``'s worker, after checking that the pid is still that replica's
    process (Ray titles its workers ``ray::<actor class>``), so a reused pid is never hit.
    """
    try:
        title = Path(f"/proc/{replica.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError as exc:
        raise RuntimeError(f"replica {replica.name} (pid {replica.pid}) has no process: "
                           f"{exc}; list the replicas again") from exc
    if class_name(app, deployment) not in title:
        raise RuntimeError(f"pid {replica.pid} is {title!r}, not replica {replica.name}; "
                           "list the replicas again")
    os.kill(replica.pid, signal.SIGKILL)


class ReplicaWatch(threading.Thread):
    """Polls Serve's RUNNING count and Ray's alive replica actors every ``period_s``:
    a timeline of (``perf_counter`` s, running, alive replicas).
    """

    def __init__(self, app: str = "marquee", deployment: str = DEPLOYMENT,
                 period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.app, self.deployment, self.period_s = app, deployment, period_s
        self.timeline: list[tuple[float, int, list[Replica]]] = []
        self._done = threading.Event()

    def run(self) -> None:
        """Poll until ``stop``."""
        while not self._done.is_set():
            t = time.perf_counter()
            self.timeline.append((t, running(self.app, self.deployment),
                                  replicas(self.app, self.deployment)))
            self._done.wait(max(0.0, self.period_s - (time.perf_counter() - t)))

    def stop(self) -> None:
        """End polling and wait for the thread."""
        self._done.set()
        self.join()


def _p99_ms(latencies: list[float]) -> float | None:
    return float(np.percentile(np.array(latencies) * 1e3, 99)) if latencies else None


def windows(shots: list[Shot], kill_at: float, before_s: int, after_s: int
            ) -> list[dict[str, Any]]:
    """Per second of scheduled send time, from ``-before_s`` to ``after_s`` around the kill:
    requests, errors (not 200) and p99 of the answered ones (ms).
    """
    out = []
    for s in range(-before_s, after_s):
        inside = [x for x in shots if s <= x.due - kill_at < s + 1]
        ok = [x.latency for x in inside if x.status == 200]
        out.append({"t": s, "n": len(inside), "errors": len(inside) - len(ok),
                    "p99_ms": _p99_ms(ok)})
    return out


def back_to_normal(wins: list[dict[str, Any]], limit_ms: float, hold_s: int) -> float | None:
    """Start (s from the kill) of the first ``hold_s`` windows in a row with no error and
    p99 <= ``limit_ms`` after the first window that was not (0 if none was: the kill went
    unnoticed); None if the load ended first.
    """
    good = [w["n"] > 0 and w["errors"] == 0 and w["p99_ms"] is not None
            and w["p99_ms"] <= limit_ms for w in wins]
    after = [i for i, w in enumerate(wins) if w["t"] >= 0]
    first_bad = next((i for i in after if not good[i]), None)
    if first_bad is None:
        return 0.0
    for i in range(first_bad + 1, len(wins) - hold_s + 1):
        if all(good[i:i + hold_s]):
            return float(wins[i]["t"])
    return None


def summarize(shots: list[Shot], kill_at: float, before_s: int, after_s: int,
              factor: float = 1.5, hold_s: int = 3) -> dict[str, Any]:
    """The level's figures from its requests (recovery times are added by the caller)."""
    wins = windows(shots, kill_at, before_s, after_s)
    base = [x.latency for x in shots if -before_s <= x.due - kill_at < 0 and x.status == 200]
    baseline = _p99_ms(base) or 0.0
    limit = factor * baseline
    after = [x for x in shots if 0 <= x.due - kill_at < after_s]
    sent_before = Counter(str(x.status) for x in shots
                          if -before_s <= x.due - kill_at < 0 and x.status != 200)
    failed = Counter(str(x.status) for x in after if x.status != 200)
    pre = [w for w in wins if w["t"] < 0 and w["n"]]
    calm = sum(w["errors"] == 0 and (w["p99_ms"] or 0) <= limit for w in pre)
    return {"baseline_p99_ms": baseline, "normal_p99_ms": limit, "normal_rule":
            f"{hold_s} s in a row with no error and p99 <= {factor:g} x baseline",
            "baseline_windows_normal": f"{calm}/{len(pre)}",
            "errors_sent_before_kill": dict(sent_before),
            "requests_after": len(after), "errors_after": sum(failed.values()),
            "error_share": sum(failed.values()) / max(len(after), 1),
            "errors_by_status": dict(failed),
            "normal_after_kill_s": back_to_normal(wins, limit, hold_s), "windows": wins}


def _first(timeline: list[tuple[float, int, list[Replica]]], kill_at: float,
           test: Any) -> float | None:
    return next((t - kill_at for t, n, alive in timeline if t >= kill_at and test(n, alive)),
                None)


def recovery(timeline: list[tuple[float, int, list[Replica]]], kill_at: float,
             kill_unix: float, victim: Replica, n: int) -> dict[str, Any]:
    """When Serve saw the death, when Ray had a new replica alive (its GCS start time) and
    when Serve routed to ``n`` replicas again, in s from the kill.
    """
    before = {r.actor_id for r in timeline[0][2]} if timeline else set()
    new = [r for _, _, alive in timeline for r in alive if r.actor_id not in before]
    return {
        "killed_pid": victim.pid, "killed": victim.name,
        "death_seen_s": _first(timeline, kill_at, lambda k, _: k < n),
        "replacement_alive_s": (new[0].started_s - kill_unix) if new else None,
        "replacement_running_s": _first(
            timeline, kill_at, lambda k, alive: k >= n and any(r.actor_id not in before
                                                               for r in alive)),
        "alive_at_end": len(timeline[-1][2]) if timeline else 0,
    }


def fault_level(url: str, bodies: list[dict], rate: float, n: int, before_s: int = 10,
                after_s: int = 30, settle_s: float = 30.0, warmup_s: float = 3.0
                ) -> dict[str, Any]:
    """One level on ``n`` live replicas: load, SIGKILL the oldest replica after
    ``warmup_s + before_s``, load on for ``after_s``; figures as in the module docstring.
    """
    _wait_for(n, settle_s)
    watch = ReplicaWatch()
    watch.start()
    victim = replicas()[0]
    start = time.perf_counter() + 0.2
    result: list[list[Shot]] = []
    load = threading.Thread(target=lambda: result.append(  # the first s open 256 connections
        poisson_shots(url, bodies, rate, warmup_s + before_s + after_s, start)))
    load.start()
    time.sleep(max(0.0, start + warmup_s + before_s - time.perf_counter()))
    kill_unix, kill_at = time.time(), time.perf_counter()
    kill_replica(victim)
    load.join()
    deadline = time.perf_counter() + settle_s  # the replacement may come after the load
    while time.perf_counter() < deadline and not (
            watch.timeline and watch.timeline[-1][1] >= n
            and victim.actor_id not in {r.actor_id for r in watch.timeline[-1][2]}):
        time.sleep(0.2)
    watch.stop()
    figures = {"replicas": n, "offered_rps": rate, "before_s": before_s, "after_s": after_s,
               **recovery(watch.timeline, kill_at, kill_unix, victim, n),
               **summarize(result[0], kill_at, before_s, after_s)}
    running_s, normal_s = figures["replacement_running_s"], figures["normal_after_kill_s"]
    figures["normal_after_replacement_s"] = (
        normal_s - running_s if normal_s is not None and running_s is not None else None)
    return figures


def _wait_for(n: int, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if running() == n and len(replicas()) == n:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the ranking deployment did not reach {n} running replicas in "
                       f"{timeout_s:g} s (now {running()}); see Ray's logs under /tmp/ray")


def half_capacity(report: dict[str, Any]) -> float:
    """Half the ranking's capacity measured earlier in the run: the best closed-loop rate of
    answered requests (as the overload level takes it).
    """
    over = report["rank"].get("overload")
    if over:
        return over["capacity_rps"] / 2
    return max(run["rps"] * (1 - run["errors"] / max(run.get("n", 0), 1))
               for run in report["rank"]["closed"]) / 2


def run_faults(settings: Any, base_url: str, users: list[str], rate: float,
               counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """A fault level per replica count in ``counts``, redeploying the ranking app at each."""
    import sys

    from ray import serve as ray_serve

    from serve import app

    url = base_url + "/v1/rank"
    bodies = [{"user_id": u, "k": 20, "explain": True} for u in users]
    levels = []
    for n in counts:
        if running() != n or len(replicas()) != n:  # a redeploy restarts every replica
            ray_serve.run(app.build_app(settings.model_copy(update={"replicas": n})),
                          name=app.APP_NAME, route_prefix="/")
        print(f"rank: fault, {n} replica(s), {rate:.0f} requests/s, SIGKILL of one at 10 s, "
              "30 s after", file=sys.stderr)
        levels.append(fault_level(url, bodies, rate, n))
    return levels


def _counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items())) or "none"


def print_fault(level: dict[str, Any]) -> None:
    """Two lines: the errors after the kill, then the recovery times."""
    def s(x: float | None) -> str:
        return "never" if x is None else f"+{x:.1f} s"

    errs = _counts(level["errors_by_status"])
    print(f"fault, {level['replicas']} replica(s) at {level['offered_rps']:.0f}/s: SIGKILL pid "
          f"{level['killed_pid']} -> errors {level['errors_after']}/{level['requests_after']} "
          f"= {level['error_share']:.1%} in {level['after_s']} s ({errs}; "
          f"sent before the kill: {_counts(level['errors_sent_before_kill'])}) | p99 "
          f"before {level['baseline_p99_ms']:.1f} ms; worst 1-s p99 after "
          f"{max((w['p99_ms'] or 0) for w in level['windows'] if w['t'] >= 0):.0f} ms")
    after = level["normal_after_replacement_s"]
    print(f"  death seen {s(level['death_seen_s'])}, replacement alive "
          f"{s(level['replacement_alive_s'])}, serving {s(level['replacement_running_s'])}; "
          f"p99 normal (<= {level['normal_p99_ms']:.0f} ms, 3 s) "
          f"{s(level['normal_after_kill_s'])} from the kill, "
          f"{'n/a' if after is None else f'{after:+.1f} s'} from the replacement serving "
          f"(baseline windows normal {level['baseline_windows_normal']})")
