"""The compose file passes the Compose Specification's schema, and its services are what the
code expects: the ports of the settings' defaults, environment variables the settings read,
a flow command ``marquee`` accepts, and data that outlives a container."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from infra.cli import build_parser
from infra.demo import DemoConfig
from infra.deploy.schemas import ManifestError, validate_compose
from infra.prometheus import DEFAULT_TARGETS
from infra.settings_table import rows
from streams.config import DEFAULT_BOOTSTRAP

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "infra" / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return validate_compose(COMPOSE.read_text())


def published(service: dict) -> set[int]:
    """Host ports a service publishes (``ip:host:container``)."""
    return {int(str(p).split(":")[-2]) for p in service.get("ports", [])}


def settings_default(variable: str) -> str:
    (default,) = [d for var, d, _, _ in rows() if var == variable]
    return default.strip("`")


def test_services_publish_the_ports_the_settings_default_to(compose):
    services = compose["services"]
    assert published(services["kafka"]) == {int(DEFAULT_BOOTSTRAP.rsplit(":", 1)[1])}
    redis_port = urlsplit(settings_default("MARQUEE_REDIS_URL")).port
    assert published(services["redis"]) == {redis_port}
    listen = services["prometheus"]["command"]
    assert f"--web.listen-address=127.0.0.1:{DemoConfig().prometheus_port}" in listen


def test_every_marquee_variable_it_sets_or_names_is_read_by_the_settings(compose):
    known = {var for var, *_ in rows()}
    flow = compose["services"]["flow"]
    named = set(flow["environment"]) | set(re.findall(r"\b(?:MARQUEE|KAFKA)_[A-Z_]+(?==)",
                                                      COMPOSE.read_text()))
    named -= {"MARQUEE_IMAGE"}  # compose's own interpolation, not a setting
    assert named and named <= known, named - known
    assert flow["environment"]["MARQUEE_REDIS_URL"] == settings_default("MARQUEE_REDIS_URL")


def test_the_flow_runs_a_real_marquee_command_scraped_where_prometheus_looks(compose):
    argv = compose["services"]["flow"]["command"]
    assert argv[0] == "marquee"
    args = build_parser().parse_args(argv[1:])
    assert args.func.__name__ == "_flow"
    (target,) = DEFAULT_TARGETS["marquee-flow"]  # infra/prometheus/prometheus.yml
    assert args.metrics_port == int(target.rsplit(":", 1)[1])


def test_kafka_and_redis_keep_their_data_on_named_volumes(compose):
    services, volumes = compose["services"], compose["volumes"]
    redis = services["redis"]
    assert redis["command"][1:3] == ["--appendonly", "yes"]
    data_dir = redis["command"][redis["command"].index("--dir") + 1]
    assert f"redis-data:{data_dir}" in redis["volumes"] and "redis-data" in volumes
    kafka = services["kafka"]
    assert f"kafka-data:{kafka['environment']['KAFKA_LOG_DIRS']}" in kafka["volumes"]
    assert "kafka-data" in volumes


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c["services"]["redis"].update(ports={"6379": 6379}), "services/redis/ports"),
    (lambda c: c["services"]["redis"].update(imag="redis"),
     "services/redis: 'imag' does not match"),
    (lambda c: c["services"]["flow"].update(profiles="marquee"), "services/flow/profiles"),
    (lambda c: c.update(service={}), "(top): 'service' does not match"),
], ids=["wrong-type", "unknown-field", "wrong-type-list", "unknown-top-level"])
def test_a_broken_compose_file_is_rejected(compose, change, problem):
    broken = copy.deepcopy(compose)
    change(broken)
    with pytest.raises(ManifestError, match=re.escape(problem)):
        validate_compose(yaml.safe_dump(broken))
