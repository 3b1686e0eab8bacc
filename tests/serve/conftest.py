"""Serve fixtures: a small real world (synthetic events -> tokens -> Feast SQLite store, ONNX
models made by the real export code) and one Ray Serve start for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.bench.sample_world import SampleWorld
from infra.front import Front
from serve.config import ServeSettings


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> SampleWorld:
    return SampleWorld(tmp_path_factory.mktemp("serve-world"))


@pytest.fixture(scope="session")
def served(front_served: tuple[str, ServeSettings, Front]) -> tuple[str, ServeSettings]:
    """The app running on Ray Serve behind its admission front, as ``marquee up`` runs it
    (one start per session), and its settings.
    """
    url, settings, _ = front_served
    return url, settings


@pytest.fixture(scope="session")
def front_served(world: SampleWorld, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[str, ServeSettings, Front]]:
    """``served``, with the front itself."""
    import ray

    from infra import front
    from serve import app

    app.init_ray(num_cpus=2, direct_ingress=True)  # as the front starts it
    settings = world.settings()  # the port is chosen once Ray's own processes are up
    gate = None
    try:
        url, gate = front.serve(settings, tmp_path_factory.mktemp("front"))
        assert gate is not None
        yield url, settings, gate
    finally:
        if gate is not None:
            gate.stop()
        app.stop()
        ray.shutdown()
