"""A replica's niceness change reaches every thread of its process (Linux applies one to a
thread), and a refused change leaves the process serving as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_take_moves_every_thread_of_the_process() -> None:
    out = _run("""
        import os, threading
        from serve import priority
        os.setpriority(os.PRIO_PROCESS, 0, 15)
        go = threading.Event()
        workers = [threading.Thread(target=go.wait) for _ in range(3)]
        for t in workers:
            t.start()
        print(priority.take(5))
        print(sorted({os.getpriority(os.PRIO_PROCESS, t.native_id) for t in workers}))
        go.set()
    """)
    assert out.splitlines()[:2] == ["5", "[5]"], out


def test_none_leaves_the_niceness_alone() -> None:
    assert _run("""
        import os
        from serve import priority
        os.setpriority(os.PRIO_PROCESS, 0, 7)
        print(priority.take(None))
    """).strip() == "7"


def test_a_refused_change_is_reported_and_not_raised() -> None:
    if os.geteuid() != 0:
        return  # needs a process that can drop its own privilege: root here
    out = _run("""
        import logging, os, sys
        logging.basicConfig(stream=sys.stdout, format="%(message)s")
        from serve import priority
        os.setpriority(os.PRIO_PROCESS, 0, 10)
        os.setuid(65534)  # nobody: no CAP_SYS_NICE, so 10 -> 0 is refused
        print(priority.take(0))
    """)
    assert out.splitlines()[-1] == "10", out
    assert "CAP_SYS_NICE" in out and "MARQUEE_REPLICA_NICENESS" in out, out
