"""``marquee bench serve``: load against the running app, closed-loop and open-loop, beside a
no-op Ray Serve deployment (same request body, no work) measured in the same run.

Closed loop: C clients, each sends its next request when the last one answered (latency at a
given concurrency). Open loop: requests are sent on a fixed schedule whatever the answers do,
and latency counts from the scheduled time, so a stall is not hidden (no coordinated
omission). Per-stage times come from the service's own ``latency_ms`` (``explain``).
The load generator is Python (``http.client`` in threads, one keep-alive connection each) on
the same machine: it competes for the CPU with the service, so figures are a floor for the
service, not for a separate client box.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
import random
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import numpy as np

from infra.bench.charts import histogram


def _pct(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    a = np.array(xs) * 1e3
    return {"n": len(xs), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99))}


def _connect(parts: SplitResult, timeout_s: float = 30.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)


def _post(conn: http.client.HTTPConnection, path: str, payload: bytes) -> tuple[int, bytes]:
    """One JSON POST on a keep-alive connection: (status, body). A connection the server
    closed while it sat idle (its keep-alive timeout) is opened again first, as pooled HTTP
    clients (urllib3, httpx) do: that close is not an answer of the service.
    """
    if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
        conn.close()  # readable while idle: the server's FIN (no request is in flight)
    conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def closed_loop(url: str, bodies: list[dict], clients: int, seconds: float) -> dict[str, Any]:
    """C clients back to back for ``seconds``: threads, each with one keep-alive connection
    through ``http.client`` (the lightest Python client: the client's own time is part of
    every figure, for the no-op floor as for the service).
    """
    parts = urlsplit(url)
    payloads = [json.dumps(b).encode() for b in bodies]
    lat: list[float] = []
    replies: list[bytes] = []
    errors = [0]
    end = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = _connect(parts)
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                status, data = _post(conn, parts.path, payloads[i % len(payloads)])
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors[0] += 1
                else:
                    replies.append(data)
                i += clients
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = time.perf_counter() - t_start
    stages: dict[str, list[float]] = {}
    for data in replies:  # parsed after the clock stopped
        for k, v in (json.loads(data).get("latency_ms") or {}).items():
            stages.setdefault(k, []).append(v / 1e3)
    return {"clients": clients, "rps": len(lat) / spent, "errors": errors[0], **_pct(lat),
            "stages": {k: _pct(v) for k, v in stages.items()}, "_samples": lat}


def open_loop(url: str, bodies: list[dict], rate: float, seconds: float,
              max_outstanding: int = 200, connections: int = 32) -> dict[str, Any]:
    """Poisson arrivals at ``rate``/s for ``seconds``; latency from the scheduled send time
    (a request waiting for a free connection counts as waiting for the service).

    Over capacity the backlog grows without bound, and the queued requests would keep the
    service busy through the next load levels: once ``max_outstanding`` requests are
    unanswered the level stops offering and is reported ``saturated``.
    """
    parts = urlsplit(url)
    payloads = [json.dumps(b).encode() for b in bodies]
    jobs: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    lat: list[float] = []
    state = {"errors": 0, "outstanding": 0}
    lock = threading.Lock()

    def worker() -> None:
        conn = _connect(parts)
        while (job := jobs.get()) is not None:
            i, due = job
            try:
                ok = _post(conn, parts.path, payloads[i % len(payloads)])[0] == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = _connect(parts)
            lat.append(time.perf_counter() - due)
            with lock:
                state["outstanding"] -= 1
                state["errors"] += not ok
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    rng = random.Random(1)
    offered, at, saturated, start = 0, 0.0, False, time.perf_counter()
    while at < seconds:
        if state["outstanding"] >= max_outstanding:
            saturated = True
            break
        due = start + at
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with lock:
            state["outstanding"] += 1
        jobs.put((offered, due))
        offered += 1
        at += rng.expovariate(rate)
    drain_until = time.perf_counter() + max(2.0, seconds)  # bounded drain
    while state["outstanding"] > 0 and time.perf_counter() < drain_until:
        time.sleep(0.01)
    unfinished = state["outstanding"]
    spent = time.perf_counter() - start
    while True:  # requests not sent yet are dropped, then the workers stop
        try:
            jobs.get_nowait()
        except queue.Empty:
            break
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(35)
    return {"offered_rps": rate, "offered": offered, "achieved_rps": len(lat) / spent,
            "errors": state["errors"], "unfinished": unfinished, "saturated": saturated,
            **_pct(lat)}


@dataclass(frozen=True)
class Shot:
    """One request: scheduled send time (``perf_counter`` s), HTTP status (-1: no answer),
    latency from the scheduled time (s), and how late the client sent it (s): the part of the
    latency that is the client's own, when its threads fall behind the schedule.
    """

    due: float
    status: int
    latency: float
    late: float = 0.0


def poisson_shots(url: str, bodies: list[dict], rate: float, seconds: float, start: float,
                  connections: int = 256, timeout_s: float = 10.0, seed: int = 3) -> list[Shot]:
    """Poisson arrivals at ``rate``/s from ``start`` (``perf_counter``) for ``seconds``, each
    request recorded; a request unanswered within ``timeout_s`` counts as status -1. Enough
    connections that requests the service holds do not hold the client's schedule back.
    """
    parts = urlsplit(url)
    payloads = [json.dumps(b).encode() for b in bodies]
    jobs: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
    shots: list[Shot] = []

    def worker() -> None:
        conn = _connect(parts, timeout_s)
        while (job := jobs.get()) is not None:
            i, due = job
            sent = time.perf_counter()
            try:
                status = _post(conn, parts.path, payloads[i % len(payloads)])[0]
            except (OSError, http.client.HTTPException):
                status = -1
                conn.close()
                conn = _connect(parts, timeout_s)
            shots.append(Shot(due, status, time.perf_counter() - due, sent - due))
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    i, at = 0, 0.0
    while at < seconds:
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, start + at))
        i += 1
        at += rng.expovariate(rate)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout_s + 5)
    return shots


def overload(url: str, bodies: list[dict], rate: float, seconds: float,
             connections: int = 256) -> dict[str, Any]:
    """Poisson arrivals at ``rate``/s (a multiple of capacity) for ``seconds``, on enough
    connections that the client never holds requests back: what the service answers (200),
    what it sheds (503, and how fast), and what fails otherwise. Latency counts from the
    scheduled send time.
    """
    start = time.perf_counter()
    shots = poisson_shots(url, bodies, rate, seconds, start, connections, timeout_s=30, seed=2)
    spent = time.perf_counter() - start
    answered = [s.latency for s in shots if s.status == 200]
    shed = [s.latency for s in shots if s.status == 503]
    return {"offered_rps": rate, "offered": len(shots), "goodput_rps": len(answered) / spent,
            "answered": _pct(answered), "shed": _pct(shed),
            "answered_from_send": _pct([s.latency - s.late for s in shots if s.status == 200]),
            "shed_from_send": _pct([s.latency - s.late for s in shots if s.status == 503]),
            "client_late": _pct([s.late for s in shots]),
            "other_errors": len(shots) - len(answered) - len(shed)}


def apart(load: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run a load level in a process of its own: at thousands of requests/s the client's
    threads must not share a GIL with this process's Ray driver and the front's follower,
    whose pauses made the client send late.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(load, args)


def settle(url: str, body: dict, seconds: float = 30.0) -> None:
    """Wait until the service answers promptly again (a saturated level leaves a queue)."""
    parts = urlsplit(url)
    conn = _connect(parts)
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            _post(conn, parts.path, json.dumps(body).encode())
            if time.perf_counter() - t0 < 0.1:
                return
            time.sleep(0.2)
    finally:
        conn.close()


def run_bench(base_url: str, users: list[str], seconds: float = 8.0,
              concurrency: tuple[int, ...] = (1, 8, 32), rates: tuple[float, ...] = (100, 300, 500),
              out: Path | None = None, overload_factor: float = 3.0,
              setup: dict[str, Any] | None = None) -> dict[str, Any]:
    """Closed- and open-loop load on ``/v1/rank`` and on the no-op ``/noop/v1/rank``; then
    the ranking at ``overload_factor`` x its capacity (the best closed-loop throughput).
    ``setup`` (how the service runs: front, direct, bounds) is kept in the report.
    """
    bodies = [{"user_id": u, "k": 20, "explain": True} for u in users]
    report: dict[str, Any] = {"seconds": seconds, "users": len(users), **(setup or {})}
    for name, path in (("noop", "/noop/v1/rank"), ("rank", "/v1/rank")):
        url = base_url + path
        closed_loop(url, bodies, 1, 1.0)  # warm-up
        closed, opened = [], []
        for c in concurrency:
            print(f"{name}: closed loop, {c} client(s), {seconds:g} s", file=sys.stderr)
            closed.append(closed_loop(url, bodies, c, seconds))
        for r in sorted(rates):
            print(f"{name}: open loop, {r:g} requests/s, {seconds:g} s", file=sys.stderr)
            opened.append(open_loop(url, bodies, r, seconds))
            settle(url, bodies[0])
            if opened[-1]["saturated"]:  # higher rates would only saturate sooner
                print(f"{name}: saturated at {r:g} requests/s; higher rates skipped",
                      file=sys.stderr)
                opened += [{"offered_rps": x, "skipped": "saturated at a lower rate"}
                           for x in sorted(rates) if x > r]
                break
        report[name] = {"closed": closed, "open": opened}
        if overload_factor and name == "rank":
            ok = [(run["rps"] * (1 - run["errors"] / max(run.get("n", 0), 1)), run)
                  for run in closed]  # answered requests/s: a shed request is no capacity
            capacity, best = max(ok, key=lambda x: x[0])
            print(f"{name}: overload, {overload_factor:g} x {capacity:.0f} requests/s, "
                  f"{seconds:g} s", file=sys.stderr)
            level = apart(overload, url, bodies, overload_factor * capacity, seconds)
            report[name]["overload"] = {"capacity_rps": capacity,
                                        "capacity_p99_ms": best.get("p99_ms", 0), **level}
            settle(url, bodies[0])
    samples = {f"{name} ({run['clients']} client{'s' if run['clients'] > 1 else ''})":
               [x * 1e3 for x in run.pop("_samples")]
               for name in ("noop", "rank") for run in report[name]["closed"]}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        histogram({k: v for k, v in samples.items() if "(1 client)" in k},
                  "Ranking vs no-op Ray Serve latency, 1 client (closed loop)", "ms",
                  out.with_suffix(".png"))
    return report


def _open_cell(run: dict[str, Any]) -> str:
    if "skipped" in run:
        return f"{'skipped (' + run['skipped'] + ')':>28}"
    flag = f" SATURATED after {run['offered']} requests" if run["saturated"] else ""
    return (f"{run['achieved_rps']:5.0f} {run.get('p50_ms', 0):7.1f} {run.get('p99_ms', 0):7.1f}"
            f" errors {run['errors']} unfinished {run['unfinished']}{flag}")


def print_report(report: dict[str, Any]) -> None:
    """A table per mode: the service beside the no-op floor."""
    print(f"closed loop ({report['seconds']:g} s each): clients | rank p50/p99 ms rps | "
          "no-op p50/p99 ms rps")
    for r, n in zip(report["rank"]["closed"], report["noop"]["closed"], strict=True):
        print(f"  {r['clients']:4d} | {r.get('p50_ms', 0):6.1f} {r.get('p99_ms', 0):6.1f} "
              f"{r['rps']:6.0f} | {n.get('p50_ms', 0):6.1f} {n.get('p99_ms', 0):6.1f} "
              f"{n['rps']:6.0f} | errors {r['errors']}")
    print("open loop: offered rps | rank achieved rps p50/p99 ms | no-op achieved rps p50/p99 ms")
    for r, n in zip(report["rank"]["open"], report["noop"]["open"], strict=True):
        print(f"  {r['offered_rps']:5.0f} | {_open_cell(r)} | {_open_cell(n)}")
    over = report["rank"].get("overload")
    if over:
        a, sh = over["answered"], over["shed"]
        print(f"overload: offered {over['offered_rps']:.0f}/s = "
              f"{over['offered_rps'] / over['capacity_rps']:.1f} x capacity "
              f"{over['capacity_rps']:.0f}/s (p99 {over['capacity_p99_ms']:.1f} ms) | goodput "
              f"{over['goodput_rps']:.0f}/s ({over['goodput_rps'] / over['capacity_rps']:.0%}) "
              f"p50/p99 {a.get('p50_ms', 0):.1f}/{a.get('p99_ms', 0):.1f} ms | shed "
              f"{sh['n']} p50/p99 {sh.get('p50_ms', 0):.1f}/{sh.get('p99_ms', 0):.1f} ms | "
              f"other errors {over['other_errors']}")
        sent, late = over.get("shed_from_send", {}), over.get("client_late", {})
        if sent:
            got = over.get("answered_from_send", {})
            print(f"  from the moment sent: answered p50/p99 {got.get('p50_ms', 0):.1f}/"
                  f"{got.get('p99_ms', 0):.1f} ms, shed p50/p99 {sent.get('p50_ms', 0):.1f}/"
                  f"{sent.get('p99_ms', 0):.1f} ms; the client sent late by p50/p99 "
                  f"{late.get('p50_ms', 0):.1f}/{late.get('p99_ms', 0):.1f} ms (its threads "
                  "behind the schedule)")
    for level in report["rank"].get("fault", []):
        from infra.bench.serve_fault import print_fault

        print_fault(level)
    one = report["rank"]["closed"][0]["stages"]
    print("stages at 1 client (p50/p99 ms): " + ", ".join(
        f"{k} {v['p50_ms']:.2f}/{v['p99_ms']:.2f}" for k, v in one.items() if v.get("n")))
