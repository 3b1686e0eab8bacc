"""The generated Ray Serve config: Ray's own schema accepts it, and the app its import path
builds has the options ``marquee up`` deploys with."""

from __future__ import annotations

import pytest
import yaml
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

from infra.cli import main
from infra.deploy.serve_config import IMPORT_PATH, ClusterShape, render, serve_config, validate
from serve.app import deployment_options
from serve.config import ServeSettings


def built(config: dict):
    """The Application Ray Serve builds from the config's import path and args."""
    from ray._common.utils import import_attr

    app = config["applications"][0]
    assert app["import_path"] == IMPORT_PATH
    return call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]),
                                                        app["args"])


def test_default_config_passes_rays_schema_and_builds_the_deployed_options():
    settings = ServeSettings()
    config = validate(render(settings))
    ServeDeploySchema.model_validate(config)
    entry = config["applications"][0]["deployments"][0]
    expected = deployment_options(settings)
    for key in ("num_replicas", "max_ongoing_requests", "max_queued_requests",
                "backpressure_config", "health_check_period_s", "user_config"):
        assert entry[key] == expected[key], key
    assert entry["ray_actor_options"]["num_cpus"] == 1.0  # a cluster places by CPUs
    dep = built(config)._bound_deployment
    assert dep.name == entry["name"]
    assert dep._deployment_config.max_ongoing_requests == entry["max_ongoing_requests"]
    assert dep._deployment_config.max_queued_requests == entry["max_queued_requests"]


def test_settings_travel_as_builder_args():
    settings = ServeSettings(replicas=3, max_queued_requests=7, port=8123)
    config = validate(render(settings))
    args = config["applications"][0]["args"]
    assert args["replicas"] == 3 and args["max_queued_requests"] == 7
    assert config["http_options"]["port"] == 8123
    dep = built(config)._bound_deployment
    assert dep._deployment_config.num_replicas == 3
    assert dep._deployment_config.max_queued_requests == 7


def test_autoscaling_replaces_the_fixed_replica_count():
    shape = ClusterShape(autoscale=(2, 6), target_ongoing=4, max_replicas_per_node=1)
    config = validate(render(ServeSettings(replicas=3), shape))
    entry = config["applications"][0]["deployments"][0]
    assert "num_replicas" not in entry
    assert entry["autoscaling_config"] == {"min_replicas": 2, "initial_replicas": 3,
                                           "max_replicas": 6, "target_ongoing_requests": 4}
    assert entry["max_replicas_per_node"] == 1


@pytest.mark.parametrize("shape", [dict(autoscale=(3, 1)), dict(autoscale=(0, 0)),
                                   dict(num_cpus=-1), dict(max_replicas_per_node=0)])
def test_impossible_shapes_name_the_option(shape):
    with pytest.raises(ValueError, match="--"):
        ClusterShape(**shape)


def test_validate_reports_what_ray_rejects():
    config = serve_config(ServeSettings())
    config["applications"][0]["deployments"][0]["max_ongoing_requests"] = 0
    with pytest.raises(ValueError, match="Ray Serve rejects"):
        validate(yaml.safe_dump(config))


def test_cli_writes_the_file(tmp_path, capsys):
    out = tmp_path / "serve.yaml"
    assert main(["deploy", "serve-config", "--host", "0.0.0.0", "--autoscale", "1", "4",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Ray Serve config")
    assert yaml.safe_load(text)["http_options"]["host"] == "0.0.0.0"
    assert main(["deploy", "serve-config", "--autoscale", "4", "1"]) == 2
    assert "--autoscale 4 1" in capsys.readouterr().err
