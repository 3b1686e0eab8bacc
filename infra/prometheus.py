"""Run Debian's ``prometheus`` beside the stack and ask it questions.

The committed ``infra/prometheus/prometheus.yml`` is rendered by ``render_config`` with the
default ports; ``marquee up`` and the tests render one with the ports actually in use.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from streams.contract.listen import LOOPBACK, address, reachable

PROM_DIR = Path(__file__).parent / "prometheus"
RULES = PROM_DIR / "alerts.yml"
# Default scrape targets: the flow's metrics port and the ranking service's HTTP port.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "marquee-flow": ["127.0.0.1:9101"],
    "marquee-serve": ["127.0.0.1:8000"],
}


def render_config(targets: dict[str, list[str]] | None = None, rules: Path | None = RULES,
                  scrape_interval: str = "5s") -> dict[str, Any]:
    """A prometheus.yml as a dict: one job per Marquee component, plus the alert rules."""
    targets = targets or DEFAULT_TARGETS
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics",
             "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in targets.items()
        ],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    return config


def write_config(path: Path, targets: dict[str, list[str]] | None = None,
                 rules: Path | None = RULES) -> Path:
    """Write a rendered config to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(render_config(targets, rules), sort_keys=False))
    return path


@dataclass
class Prometheus:
    """A running Prometheus server, on loopback unless started on another ``host``."""

    process: subprocess.Popen[bytes]
    port: int
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        """Base URL of its web UI and API."""
        return f"http://{address(reachable(self.host), self.port)}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises ValueError with Prometheus' message if ``expr`` is invalid."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise ValueError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
        return list(body["data"]["result"])

    def targets_up(self) -> dict[str, bool]:
        """``{job: healthy}`` for every scrape target."""
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return {t["labels"]["job"]: t["health"] == "up" for t in body["data"]["activeTargets"]}

    def stop(self) -> None:
        """Terminate the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_prometheus(config: Path, data_dir: Path, port: int, timeout: float = 30.0,
                     host: str = LOOPBACK) -> Prometheus:
    """Start ``prometheus`` with ``config`` on ``host:port``; waits until it is ready.

    Without ``--web.enable-lifecycle``: its ``/-/reload`` and ``/-/quit`` take no
    credentials, so anyone who reaches the port could reconfigure or stop it. A new config
    takes a restart (``marquee up`` renders one per start anyway).
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed; run `make setup` "
                           "(infra/install-system-deps.sh installs Debian's prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
         f"--web.listen-address={address(host, port)}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(process, port, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}; "
                               f"see {data_dir / 'prometheus.log'}")
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"prometheus not ready on port {port} after {timeout}s")
