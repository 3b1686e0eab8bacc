"""Point the admission front's replica slots at the running replicas (direct ingress).

Ray Serve gives each ingress replica an HTTP port of its own and replaces a replica that dies
with one on another port. ``FrontRoutes`` reads the replicas from the Serve controller every
``period_s`` and, when they changed or HAProxy was started again, points the front's slots at
them through HAProxy's runtime API: a slot per replica set to its address and made ready,
every other slot in maintenance. The front keeps its connections, queue and counters; no reload.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Targets = Mapping[str, list[tuple[str, int]]]  # route prefix -> (host, port) of each replica


def commands(backend: str, prefix: str, slots: int, targets: list[tuple[str, int]]) -> list[str]:
    """Runtime API commands that give ``backend``'s slots ``prefix1..prefixN`` these
    ``targets`` in order (extra targets are left out; unused slots go to maintenance).
    """
    out = []
    for i in range(1, slots + 1):
        server = f"{backend}/{prefix}{i}"
        if i <= len(targets):
            host, port = targets[i - 1]
            out += [f"set server {server} addr {host} port {port}",
                    f"set server {server} state ready"]
        else:
            out.append(f"set server {server} state maint")
    return out


def send(socket_path: Path, lines: list[str], timeout_s: float = 2.0) -> str:
    """Send runtime API commands in one connection; HAProxy's answer (a line per address
    change, nothing for a state change, the reason for a refusal).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        sock.sendall(("; ".join(lines) + "\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class FrontRoutes:
    """Keeps a front's slots on the replicas ``targets()`` names (a daemon thread)."""

    def __init__(self, socket_path: Path, slots: int, backends: Mapping[str, tuple[str, str]],
                 targets: Callable[[], Targets], period_s: float = 0.5) -> None:
        self.socket_path, self.slots, self.backends = socket_path, slots, dict(backends)
        self.targets, self.period_s = targets, period_s
        self.applied: dict[str, list[tuple[str, int]]] | None = None  # what the front has now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self, force: bool = False) -> bool:
        """Read the replicas and apply them if they changed (or ``force``); True if applied."""
        found = self.targets()
        wanted = {b: list(found.get(route, []))[:self.slots]
                  for b, (_, route) in self.backends.items()}
        if not force and wanted == self.applied:
            return False
        for route in {route for _, route in self.backends.values()}:
            if len(found.get(route, [])) > self.slots:
                log.warning("%d replicas serve %s but the front has %d slots; the rest get no "
                            "traffic (raise MARQUEE_REPLICAS to size the front)",
                            len(found[route]), route, self.slots)
        lines = [c for b, (prefix, _) in self.backends.items()
                 for c in commands(b, prefix, self.slots, wanted[b])]
        refused = [line for line in send(self.socket_path, lines).splitlines()
                   if line.strip() and not line.startswith(("IP changed", "no need to change"))
                   and "changed from" not in line]
        if refused:
            raise RuntimeError(f"HAProxy refused the replica routes: {refused[:3]}")
        self.applied = wanted
        log.info("front routes: %s", {b: [f"{h}:{p}" for h, p in t] for b, t in wanted.items()})
        return True

    def start(self) -> None:
        """Apply now, then follow in the background. If the replicas cannot be read (a Ray
        without direct ingress or without the controller call), the front serves through
        Ray's proxy, its backup server, and says so.
        """
        try:
            self.sync(force=True)
        except Exception as exc:  # noqa: BLE001 - the proxy still serves; say why and the fix
            log.warning("the front routes through Ray's proxy, not to the replicas' own ports: "
                        "%s (a Ray Serve with direct ingress, >= 2.60, routes directly; "
                        "MARQUEE_FRONT_DIRECT=false chooses the proxy)", exc)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="front-routes", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following (the slots keep their last replicas)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - Ray restarting or the front down: next tick
                log.debug("front routes not updated: %s", exc)
