"""Run one measured Bytewax flow of ``marquee bench stream`` in a process of its own.

In its own process a flow's CPU time and resident memory are its own: the benchmark's
process holds a million produced events and the broker's clients. The children are forked
from a server that has imported Bytewax and Feast once (``multiprocessing``'s forkserver), so
a start costs a fork, not seconds of imports. Each child builds its flow (Feast opened, the
source's partitions not yet read), says it is ready, and starts the clock when the parent says
go: every process of a cluster starts together, and a producer can start with the flow.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from bytewax.dataflow import Dataflow

from infra.bench import procfs

# Bytewax's default epoch. Without recovery Bytewax still snapshots every epoch, so the flow
# pickles the users it touched every 10 s, as ``marquee flow`` does with recovery (which also
# writes them to its state store; without recovery it runs 1 h epochs).
EPOCH = timedelta(seconds=10)
PRELOAD = ["bytewax.testing", "infra.bench.stream_flows", "feature_repo.store"]
CHILD_START_S = 300.0  # building a flow opens Feast: seconds, on a busy machine tens


@dataclass
class Built:
    """A flow ready to run, and what to collect from its process after the run."""

    flow: Dataflow
    finish: Callable[[], dict[str, Any]] = dict


# A builder is a module-level function (so a child can be handed it): keyword arguments in,
# plus ``on_end``, which the flow's source calls as each partition reaches its end marker.
Builder = Callable[..., Built]


@dataclass(frozen=True)
class Job:
    """One process: what to build, and its place in a cluster (no addresses: alone)."""

    name: str
    build: Builder
    kwargs: dict[str, Any] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    proc_id: int = 0
    netns: str | None = None  # the network namespace (``infra.netns`` host) it runs in


@dataclass
class Run:
    """What one process measured. Times are from the go signal; ``*_at`` are epoch seconds."""

    name: str
    pid: int
    wall_s: float  # go -> the flow returned (input ended and everything owed written)
    cpu_s: float  # the process's CPU (all threads, librdkafka's included) over wall_s
    input_s: float  # go -> the last of its partitions reached its end marker
    rss_start: int  # bytes, flow built and Feast open, before the first event
    rss_end: int  # bytes, when the input ended (state complete, before Bytewax tears down)
    rss_peak: int  # bytes, the process's high-water mark
    started_at: float
    ended_at: float
    extra: dict[str, Any] = field(default_factory=dict)  # from the builder's ``finish``


def _child(job: Job, env: dict[str, str], conn: Connection) -> None:
    os.environ.clear()  # the parent's environment now, not the fork server's at its start
    os.environ.update(env)
    try:
        if job.netns is not None:
            from infra.netns import enter

            enter(job.netns)
        ends: list[tuple[float, int]] = []

        def on_end(_partition: str) -> None:
            ends.append((time.perf_counter(), procfs.rss_bytes()))

        built = job.build(**job.kwargs, on_end=on_end)
        rss_start = procfs.rss_bytes()
        conn.send(("ready", None))
        conn.recv()
        started_at, start, cpu = time.time(), time.perf_counter(), time.process_time()
        _run(built.flow, job)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        ended_at = time.time()
        conn.send(("ran", None))  # the parent stops its CPU watch: what follows is not timed
        last = max(ends) if ends else (time.perf_counter(), procfs.rss_bytes())
        run = Run(job.name, multiprocessing.current_process().pid or 0, wall, cpu,
                  last[0] - start, rss_start, last[1], procfs.peak_rss_bytes(), started_at,
                  ended_at)
        run.extra = built.finish()
        conn.send(("done", run))
    except BaseException:  # noqa: BLE001 - the parent reports it, naming the job
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _run(flow: Dataflow, job: Job) -> None:
    from bytewax.testing import cluster_main, run_main

    if job.addresses:
        cluster_main(flow, list(job.addresses), job.proc_id, epoch_interval=EPOCH)
    else:
        run_main(flow, epoch_interval=EPOCH)


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Child:
    """The parent's handle on one child process."""

    def __init__(self, job: Job) -> None:
        ctx = _context()
        self.job = job
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(job, dict(os.environ), theirs),
                                name=f"bench-{job.name}", daemon=True)
        self.proc.start()
        theirs.close()

    def receive(self, want: str, timeout: float | None) -> Any:
        """The child's next message, which must be ``want``; its traceback is raised as a
        RuntimeError naming the job, and so is its death or silence.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.proc.is_alive() and not self.conn.poll(0):
                raise RuntimeError(f"bench stream: the {self.job.name!r} process died "
                                   f"(exit code {self.proc.exitcode}) before reporting")
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"bench stream: the {self.job.name!r} process sent nothing "
                                   f"in {timeout:.0f} s")
        kind, body = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"bench stream: the {self.job.name!r} process failed:\n{body}")
        if kind != want:
            raise RuntimeError(f"bench stream: {self.job.name!r} sent {kind!r}, not {want!r}")
        return body

    def stop(self) -> None:
        """End the process if it still runs (after a failure elsewhere in its cluster)."""
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)


@dataclass
class Phase:
    """The processes of one phase: their runs, what ``during`` returned, and the cores the
    machine and the watched processes were busy on average meanwhile (``procfs.CpuWatch``).
    """

    runs: list[Run]
    got: Any
    cores: dict[str, float]


def run_jobs(jobs: Sequence[Job], during: Callable[[], Any] | None = None,
             watch: dict[int, str] | None = None) -> Phase:
    """Start the jobs one after the other (each opens Feast on its own, and two processes
    applying Feast's registry at once would race), start their clocks together, call
    ``during`` (a producer) meanwhile, and collect every process's ``Run``. CPU is watched
    from the go signal until the last process's flow returned, for the machine and for the
    ``watch`` processes (pid -> name). A failure in one process stops the rest: a cluster
    missing a member would wait for it forever.
    """
    children: list[Child] = []
    try:
        for job in jobs:
            children.append(Child(job))
            children[-1].receive("ready", CHILD_START_S)
        cpu = procfs.CpuWatch(watch or {})
        start = time.perf_counter()
        for child in children:
            child.conn.send("go")
        got = during() if during is not None else None
        for child in children:
            child.receive("ran", None)
        cores = cpu.stop(time.perf_counter() - start)
        return Phase([child.receive("done", CHILD_START_S) for child in children], got, cores)
    finally:
        for child in children:
            child.stop()
