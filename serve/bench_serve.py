"""``marquee bench serve``: load against the running app, closed-loop and open-loop, beside a
no-op Ray Serve deployment (same request body, no work) measured in the same run.

Closed loop: C clients, each sends its next request when the last one answered (latency at a
given concurrency). Open loop: requests are sent on a fixed schedule whatever the answers do,
and latency counts from the scheduled time, so a stall is not hidden (no coordinated
omission). Per-stage times come from the service's own ``latency_ms`` (``explain``).
The load generator is Python (httpx, asyncio) on the same machine: it competes for the CPU
with the service, so figures are a floor for the service, not for a separate client box.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from infra.charts import histogram


def _pct(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    a = np.array(xs) * 1e3
    return {"n": len(xs), "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99))}


async def closed_loop(url: str, bodies: list[dict], clients: int, seconds: float
                      ) -> dict[str, Any]:
    """C clients back to back for ``seconds``."""
    lat: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(worker: int) -> None:
            nonlocal errors
            i = worker
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                r = await client.post(url, json=bodies[i % len(bodies)])
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                else:
                    for k, v in (r.json().get("latency_ms") or {}).items():
                        stages.setdefault(k, []).append(v / 1e3)
                i += clients

        t_start = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(clients)))
        spent = time.perf_counter() - t_start
    return {"clients": clients, "rps": len(lat) / spent, "errors": errors, **_pct(lat),
            "stages": {k: _pct(v) for k, v in stages.items()}, "_samples": lat}


async def open_loop(url: str, bodies: list[dict], rate: float, seconds: float,
                    max_outstanding: int = 200) -> dict[str, Any]:
    """Poisson arrivals at ``rate``/s for ``seconds``; latency from the scheduled send time.

    Over capacity the backlog grows without bound, and the queued requests would keep the
    service busy through the next load levels: once ``max_outstanding`` requests are
    unanswered the level stops offering and is reported ``saturated``.
    """
    rng = random.Random(1)
    lat: list[float] = []
    errors, outstanding, saturated = 0, 0, False
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(i: int, due: float) -> None:
            nonlocal errors, outstanding
            outstanding += 1
            try:
                r = await client.post(url, json=bodies[i % len(bodies)])
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1
            finally:
                outstanding -= 1
            lat.append(time.perf_counter() - due)

        tasks, t, start, i = [], 0.0, time.perf_counter(), 0
        while t < seconds:
            if outstanding >= max_outstanding:
                saturated = True
                break
            due = start + t
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
            t += rng.expovariate(rate)
            i += 1
        _, pending = await asyncio.wait(tasks, timeout=max(2.0, seconds))  # bounded drain
        for task in pending:
            task.cancel()
        spent = time.perf_counter() - start
    return {"offered_rps": rate, "offered": len(tasks), "achieved_rps": len(lat) / spent,
            "errors": errors, "unfinished": len(pending), "saturated": saturated, **_pct(lat)}


async def settle(url: str, body: dict, seconds: float = 30.0) -> None:
    """Wait until the service answers promptly again (a saturated level leaves a queue)."""
    end = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await client.post(url, json=body)
            if time.perf_counter() - t0 < 0.1:
                return
            await asyncio.sleep(0.2)


def run_bench(base_url: str, users: list[str], seconds: float = 8.0,
              concurrency: tuple[int, ...] = (1, 8, 32), rates: tuple[float, ...] = (100, 300, 500),
              out: Path | None = None) -> dict[str, Any]:
    """Closed- and open-loop load on ``/v1/rank`` and on the no-op ``/noop/v1/rank``."""
    bodies = [{"user_id": u, "k": 20, "explain": True} for u in users]
    report: dict[str, Any] = {"seconds": seconds, "users": len(users)}
    for name, path in (("noop", "/noop/v1/rank"), ("rank", "/v1/rank")):
        url = base_url + path
        asyncio.run(closed_loop(url, bodies, 1, 1.0))  # warm-up
        closed, opened = [], []
        for c in concurrency:
            print(f"{name}: closed loop, {c} client(s), {seconds:g} s", file=sys.stderr)
            closed.append(asyncio.run(closed_loop(url, bodies, c, seconds)))
        for r in sorted(rates):
            print(f"{name}: open loop, {r:g} requests/s, {seconds:g} s", file=sys.stderr)
            opened.append(asyncio.run(open_loop(url, bodies, r, seconds)))
            asyncio.run(settle(url, bodies[0]))
            if opened[-1]["saturated"]:  # higher rates would only saturate sooner
                print(f"{name}: saturated at {r:g} requests/s; higher rates skipped",
                      file=sys.stderr)
                opened += [{"offered_rps": x, "skipped": "saturated at a lower rate"}
                           for x in sorted(rates) if x > r]
                break
        report[name] = {"closed": closed, "open": opened}
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
    one = report["rank"]["closed"][0]["stages"]
    print("stages at 1 client (p50/p99 ms): " + ", ".join(
        f"{k} {v['p50_ms']:.2f}/{v['p99_ms']:.2f}" for k, v in one.items() if v.get("n")))
