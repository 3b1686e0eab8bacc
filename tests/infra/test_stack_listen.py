"""``marquee up --only stream`` exposes nothing: every port it opens (broker, object store,
flow metrics, Prometheus) listens on loopback, and Prometheus has no unauthenticated admin
API. ``MARQUEE_BIND_HOST`` opens the user-facing ones (flow metrics, Prometheus) on purpose.
"""

from __future__ import annotations

import httpx
import pytest

from streams.launch import free_port
from tests.infra.test_stack import caught_up, state, until, up
from tests.sockets import Listener, children, listeners

pytestmark = pytest.mark.integration

PARTS = {"broker", "flow", "prometheus"}


def _listening(tmp_path, **env: str) -> tuple[dict[str, int], dict[int, list[Listener]]]:
    """Start ``up --only stream``; its ports and ``{port: listeners}`` of its process tree."""
    data = tmp_path / "stack"
    data.mkdir()
    ports = {"broker": free_port(), "flow": free_port(), "prometheus": free_port()}
    proc = up(data, ports, **env)
    try:
        until(lambda: PARTS <= set(state(data)["components"]), "the stack to start", 90)
        until(lambda: caught_up(ports["flow"]), "the flow to serve its metrics")
        reload = httpx.post(f"http://127.0.0.1:{ports['prometheus']}/-/reload", timeout=5)
        assert reload.status_code in (403, 404, 405), reload.text  # lifecycle API is off
        assert httpx.get(f"http://127.0.0.1:{ports['prometheus']}/-/ready",
                         timeout=5).status_code == 200  # and the server does answer
        found: dict[int, list[Listener]] = {}
        for sock in listeners(children(proc.pid)):
            found.setdefault(sock.port, []).append(sock)
        return ports, found
    finally:
        proc.terminate()
        proc.wait(60)


def test_up_listens_on_loopback_only_and_refuses_prometheus_reload(tmp_path) -> None:
    ports, found = _listening(tmp_path)
    for part in PARTS:  # the lister sees the stack's own ports, so an empty answer can't pass
        assert [s.address for s in found.get(ports[part], [])] == ["127.0.0.1"], (part, found)
    exposed = [str(s) for socks in found.values() for s in socks if not s.loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert len(found) == 4, found  # + the object store behind the broker (an ephemeral port)


def test_bind_host_opens_flow_metrics_and_prometheus(tmp_path) -> None:
    ports, found = _listening(tmp_path, MARQUEE_BIND_HOST="0.0.0.0")
    for part in ("flow", "prometheus"):  # 0.0.0.0, or :: (dual stack) for Prometheus
        assert [s.address in ("0.0.0.0", "::") for s in found[ports[part]]] == [True], found
    # The embedded broker is a development broker: it stays on loopback (README).
    assert [s.address for s in found[ports["broker"]]] == ["127.0.0.1"]
