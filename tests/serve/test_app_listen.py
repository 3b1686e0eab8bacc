"""Ray Serve as ``marquee serve`` starts it listens on loopback: the HTTP proxy and Ray's own
ports (GCS, raylet, object manager, workers, dashboard agent with the metrics export port,
runtime-env agent). One socket per Serve replica remains on every interface: Ray Serve binds
its inter-deployment gRPC server to ``[::]:0`` with no setting (it takes Ray's token; README,
"Exposing Marquee", says how to close it). The test fails if anything else appears.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

from tests.sockets import children, listeners

pytestmark = pytest.mark.integration

RAY_CORE = ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def test_serve_and_ray_listen_on_loopback_but_the_replica_grpc_port(served) -> None:
    url, _ = served
    found = listeners(children(os.getpid()))
    proxy = [s for s in found if s.port == urlparse(url).port]
    assert [s.address for s in proxy] == ["127.0.0.1"]
    for part in RAY_CORE:  # each is running and seen, so "nothing exposed" means something
        assert any(part in s.command for s in found), (part, [str(s) for s in found])
    exposed = [s for s in found if not s.loopback]
    replica_grpc = [s for s in exposed
                    if s.command.startswith("ray::ServeReplica") and s.address == "::"]
    others = [str(s) for s in exposed if s not in replica_grpc]
    assert not others, f"listening beyond loopback: {others}"
    per_replica = [s.pid for s in replica_grpc]
    assert len(per_replica) == len(set(per_replica)), [str(s) for s in replica_grpc]
