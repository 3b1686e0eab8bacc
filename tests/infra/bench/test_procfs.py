"""Parsing /proc: resident memory, CPU ticks, parent pids, machine-wide busy time."""

from __future__ import annotations

import os
import time

import pytest

from infra.bench import procfs

STATUS = """Name:\tpython
VmPeak:\t  900000 kB
VmHWM:\t  512000 kB
VmRSS:\t  400000 kB
Threads:\t3
"""


def test_status_fields_are_read_in_kb():
    assert procfs.status_kb(STATUS, "VmRSS") == 400_000
    assert procfs.status_kb(STATUS, "VmHWM") == 512_000
    with pytest.raises(KeyError, match="VmSwap"):
        procfs.status_kb(STATUS, "VmSwap")
    with pytest.raises(ValueError, match="unit"):
        procfs.status_kb("VmRSS:\t12 MB\n", "VmRSS")


def test_stat_counts_fields_from_the_last_parenthesis():
    # a command name with a space and a ')' in it must not shift the fields
    text = "4242 (odd) name) S 17 4242 4242 0 -1 4194304 99 0 0 0 250 31 0 0 20 0 1 0 294175"
    st = procfs.parse_stat(text)
    assert st == procfs.ProcStat("odd) name", 17, 281)


def test_machine_busy_excludes_idle_and_iowait():
    busy, total = procfs.parse_machine("cpu  100 10 50 800 40 0 5 7 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (100 + 10 + 50 + 5 + 7, 1012)
    with pytest.raises(ValueError, match="cpu"):
        procfs.parse_machine("intr 1 2 3\n")


def test_this_process_reads_back_sane_values():
    assert procfs.rss_bytes() > 10 * 2**20
    assert procfs.peak_rss_bytes() >= procfs.rss_bytes()
    assert procfs.stat().ppid == os.getppid()
    watch = procfs.CpuWatch({os.getpid(): "me"})
    start = time.perf_counter()
    while time.perf_counter() - start < 0.3:
        pass
    cores = watch.stop(time.perf_counter() - start)
    assert 0.3 < cores["me"] <= 1.2
    assert cores["machine"] >= cores["me"] - 0.2
