"""The replicas' multiprocess metrics folder: made by the import, one per host."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

CHECK = ("import os, serve.metrics as m; m.REQUESTS.labels('/v1/rank', '200', 'v').inc(); "
         "print(os.environ[m.MULTIPROC_ENV]); print(m.render()[0].decode())")


def _run(folder: Path) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    return out.stdout.splitlines()


def test_a_missing_folder_is_made_and_each_host_writes_its_own(tmp_path: Path) -> None:
    base = tmp_path / "not-made-yet" / "prometheus-multiproc"
    lines = _run(base)
    host = base / socket.gethostname()
    assert lines[0] == str(host)
    assert any(p.name.startswith("counter_") for p in host.iterdir())
    assert any(line.startswith("marquee_requests_total{") and line.endswith(" 1.0")
               for line in lines)
    # A second replica on the same host shares the folder: /metrics merges both.
    lines = _run(host)
    assert lines[0] == str(host)
    assert any(line.startswith("marquee_requests_total{") and line.endswith(" 2.0")
               for line in lines)
