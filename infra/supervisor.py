"""Keep the stack's processes running: restart what exits, with backoff; stop on a crash loop.

``marquee up`` runs the broker, the flow and Prometheus as child processes. A child that exits
(a crash, an OOM kill, ``kill -9``) is started again after a backoff that doubles with each
exit inside the window and resets once the child has stayed up for a while. Restarting is
safe because every child resumes from durable state (the broker from its storage, the flow
from its recovery snapshots). A child that keeps dying is a bug or a broken setting, not bad
luck: after ``max_restarts`` exits inside ``window_s`` the supervisor raises ``CrashLoop``,
which names the component and its log, and ``up`` exits non-zero so the supervisor above it
(systemd, Kubernetes, a shell loop) sees the failure.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Child(Protocol):
    """What the supervisor needs of a component."""

    def start(self) -> None:
        """Start it (again); returns once it is up."""

    def alive(self) -> bool:
        """Every process of it is running."""

    def stop(self) -> None:
        """Stop every process of it (idempotent)."""

    def pids(self) -> list[int]:
        """Its processes' ids (for operators and fault drills)."""

    def exit_code(self) -> int | None:
        """The exit code of the process that ended it, if one did."""


class Processes:
    """A component made of processes started together (e.g. a flow's Bytewax processes): if
    one exits, the rest are stopped too, since a cluster missing a member cannot go on.
    """

    def __init__(self, start: Callable[[], list[subprocess.Popen]]) -> None:
        self._start = start
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start the processes."""
        self.procs = self._start()

    def alive(self) -> bool:
        """All processes run."""
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def pids(self) -> list[int]:
        """The running processes' ids."""
        return [p.pid for p in self.procs if p.poll() is None]

    def exit_code(self) -> int | None:
        """The first non-zero exit code among the processes (or 0, or None if all run)."""
        codes = [p.returncode for p in self.procs if p.poll() is not None]
        return next((c for c in codes if c != 0), codes[0] if codes else None)


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart and when to give up."""

    max_restarts: int = 5  # exits inside window_s that make a crash loop
    window_s: float = 300.0
    backoff_s: float = 1.0  # first delay; doubles per exit inside the window
    backoff_max_s: float = 30.0


class CrashLoop(RuntimeError):
    """A component exited too often: the stack stops and ``up`` exits non-zero."""


@dataclass
class _Watched:
    name: str
    child: Child
    log: Path
    exits: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Start components in order, restart the ones that exit, stop them in reverse order.

    ``state_file`` (JSON) always says each component's pids, restarts and log, so operators
    and fault drills can find the processes without guessing.
    """

    def __init__(self, policy: RestartPolicy | None = None,
                 state_file: Path | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.state_file = state_file
        self.watched: list[_Watched] = []
        self._lock = threading.Lock()

    def add(self, name: str, child: Child, log_path: Path) -> None:
        """Start ``child`` now and watch it from here on."""
        child.start()
        with self._lock:
            self.watched.append(_Watched(name, child, log_path))
        self._write_state()

    def check(self, now: float | None = None) -> None:
        """Restart components that exited and whose backoff has passed; raise ``CrashLoop``
        when one exited ``max_restarts`` times inside the window.
        """
        now = time.monotonic() if now is None else now
        p = self.policy
        for w in list(self.watched):
            if w.restart_at is None:
                if w.child.alive():
                    continue
                code = w.child.exit_code()
                w.child.stop()  # the rest of a cluster, if one member died
                while w.exits and w.exits[0] < now - p.window_s:
                    w.exits.popleft()
                w.exits.append(now)
                if len(w.exits) >= p.max_restarts:
                    raise CrashLoop(
                        f"{w.name} exited {len(w.exits)} times in {p.window_s:.0f} s (last exit "
                        f"code {code}); the stack is stopped. See {w.log} for why; fix it, "
                        "then start again")
                delay = min(p.backoff_s * 2 ** (len(w.exits) - 1), p.backoff_max_s)
                w.restart_at = now + delay
                _say(f"{w.name} exited with code {code}; restarting in {delay:.1f} s "
                     f"(log: {w.log})")
            elif now >= w.restart_at:
                w.restart_at = None
                w.restarts += 1
                try:
                    w.child.start()
                except Exception as exc:  # noqa: BLE001 - a failed start is one more exit
                    _say(f"{w.name} failed to start: {exc}")
                    continue  # alive() is False: the next check counts it
                _say(f"{w.name} restarted (pids {w.child.pids()})")
                self._write_state()

    def run(self, stop: threading.Event, poll_s: float = 0.2,
            extra: Callable[[], None] | None = None) -> None:
        """Check every ``poll_s`` until ``stop`` is set (``CrashLoop`` ends it early)."""
        while not stop.is_set():
            self.check()
            if extra is not None:
                extra()
            stop.wait(poll_s)

    def stop_all(self) -> None:
        """Stop every component, the last started first."""
        for w in reversed(self.watched):
            try:
                w.child.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others regardless
                log.warning("stopping %s: %s", w.name, exc)
        self._write_state(stopped=True)

    def _write_state(self, stopped: bool = False) -> None:
        if self.state_file is None:
            return
        state = {"supervisor_pid": os.getpid(), "stopped": stopped,
                 "components": {w.name: {"pids": [] if stopped else w.child.pids(),
                                         "restarts": w.restarts, "log": str(w.log)}
                                for w in self.watched}}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)


def _say(text: str) -> None:
    """Restarts are news for the operator: on stdout, whatever the logging setup."""
    print(f"supervisor: {text}", flush=True)


def read_state(path: Path) -> dict:
    """The supervisor's state file (components' pids, restarts, logs)."""
    return json.loads(path.read_text())
