"""Resident memory and CPU time of processes, and how busy the machine is, from Linux's /proc.

The stream benchmark runs each flow in a child process and says, beside each figure, what
else used the CPUs meanwhile (the broker, other work on a shared machine). /proc is read
directly: the figures must not depend on an optional package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
HZ = os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times


def status_kb(text: str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in kB."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"/proc status field {field}: unit {unit!r}, expected kB")
            return int(number)
    raise KeyError(f"/proc status has no {field} line (not Linux, or a kernel thread?)")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of ``pid`` now."""
    return status_kb((PROC / str(pid) / "status").read_text(), "VmRSS") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Highest resident memory ``pid`` has had."""
    return status_kb((PROC / str(pid) / "status").read_text(), "VmHWM") * 1024


@dataclass(frozen=True)
class ProcStat:
    """What the benchmark needs of ``/proc/<pid>/stat``."""

    comm: str
    ppid: int
    cpu_ticks: int  # utime + stime, all threads


def parse_stat(text: str) -> ProcStat:
    """Parse ``/proc/<pid>/stat``. The command name sits in parentheses and may itself hold
    spaces and parentheses, so the fields are counted from the last ``)``.
    """
    head, _, tail = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()  # fields[0] is field 3 (state)
    return ProcStat(comm, int(fields[1]), int(fields[11]) + int(fields[12]))


def stat(pid: int | str = "self") -> ProcStat:
    """``/proc/<pid>/stat`` parsed."""
    return parse_stat((PROC / str(pid) / "stat").read_text())


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid -> command name."""
    out = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = parse_stat((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if st.ppid == pid:
            out[int(entry.name)] = st.comm
    return out


def parse_machine(text: str) -> tuple[int, int]:
    """``(busy, total)`` ticks over all CPUs from the first line of ``/proc/stat``.

    Idle is ``idle + iowait``; steal (time a hypervisor gave to another guest) counts as busy,
    since it is time this machine could not use.
    """
    fields = text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"/proc/stat starts with {fields[0]!r}, expected the 'cpu' line")
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def machine() -> tuple[int, int]:
    """``(busy, total)`` ticks of the machine so far."""
    return parse_machine((PROC / "stat").read_text())


class CpuWatch:
    """CPU used during one phase of a benchmark: by the whole machine, and by the named
    processes (the broker, Redis) that run beside the measured one.
    """

    def __init__(self, pids: dict[int, str]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[tuple[int, int], dict[int, int]]:
        ticks = {}
        for pid in self.pids:
            try:
                ticks[pid] = stat(pid).cpu_ticks
            except OSError:
                ticks[pid] = 0
        return machine(), ticks

    def stop(self, wall_s: float) -> dict[str, float]:
        """Cores busy on average over ``wall_s``: ``machine`` (all work) and each watched
        process by command name (summed when several share one).
        """
        (busy0, _), ticks0 = self.start
        (busy1, _), ticks1 = self._read()
        wall = max(wall_s, 1e-9)
        out = {"machine": (busy1 - busy0) / HZ / wall}
        for pid, name in self.pids.items():
            used = max(ticks1.get(pid, 0) - ticks0.get(pid, 0), 0) / HZ / wall
            out[name] = out.get(name, 0.0) + used
        return out
