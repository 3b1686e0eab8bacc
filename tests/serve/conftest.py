"""Serve fixtures: a small real world (synthetic events -> tokens -> Feast SQLite store, ONNX
models made by the real export code) and one Ray Serve start for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.bench.sample_world import SampleWorld
from serve.config import ServeSettings


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> SampleWorld:
    return SampleWorld(tmp_path_factory.mktemp("serve-world"))


@pytest.fixture(scope="session")
def served(world: SampleWorld) -> Iterator[tuple[str, ServeSettings]]:
    """The app running on Ray Serve (one start per session) and its settings."""
    import ray

    from serve import app

    app.init_ray(num_cpus=2)
    settings = world.settings()  # the port is chosen once Ray's own processes are up
    try:
        url = app.start(settings, noop=False)
        yield url, settings
    finally:
        app.stop()
        ray.shutdown()
