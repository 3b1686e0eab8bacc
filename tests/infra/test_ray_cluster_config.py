"""What the Ray cluster tests and ``marquee bench cluster`` start, checked without a cluster:
``ray start`` command lines, and the ``serve run`` config (Ray Serve's own schema, the
placement options, the no-op floor's builder)."""

from __future__ import annotations

from pathlib import Path

from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

from infra.bench.cluster import print_report
from infra.ray_cluster import GCS_PORT, NOOP_APP, RayNode, cluster_config, node_env
from serve.config import ServeSettings


def test_head_and_worker_start_lines():
    head = RayNode("10.213.0.10", Path("/tmp/x/h"), num_cpus=2).argv()
    worker = RayNode("10.213.0.11", Path("/tmp/x/w"), head="10.213.0.10").argv()
    assert head[1:2] == ["start"] and "--head" in head and "--include-dashboard" in head
    assert head[head.index("--port") + 1] == str(GCS_PORT)
    assert head[head.index("--num-cpus") + 1] == "2"
    assert "--head" not in worker and "--include-dashboard" not in worker  # head-only flag
    assert worker[worker.index("--address") + 1] == f"10.213.0.10:{GCS_PORT}"
    assert worker[worker.index("--node-ip-address") + 1] == "10.213.0.11"


def test_nodes_import_this_checkout_read_serves_defaults_and_share_a_token():
    env = node_env("t0k", {"X": "1"})
    assert env["PYTHONPATH"].split(":")[0] == str(Path(__file__).resolve().parents[2])
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["X"] == "1"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t0k"


def test_spread_config_passes_rays_schema_with_one_replica_per_node_and_the_floor():
    settings = ServeSettings(replicas=2, host="0.0.0.0", port=8000, online_store="redis")
    config = cluster_config(settings, spread=True, env={"MARQUEE_REDIS_URL": "redis://r:1/0"},
                            noop=True)
    ServeDeploySchema.model_validate(config)
    rank, floor = config["applications"]
    entry = rank["deployments"][0]
    assert entry["max_replicas_per_node"] == 1 and entry["ray_actor_options"]["num_cpus"] == 1
    assert rank["runtime_env"]["env_vars"]["MARQUEE_REDIS_URL"] == "redis://r:1/0"
    assert floor["name"] == NOOP_APP and floor["route_prefix"] == "/noop"
    assert floor["deployments"][0]["num_replicas"] == 2
    assert floor["deployments"][0]["max_replicas_per_node"] == 1
    from ray._common.utils import import_attr

    app = call_user_app_builder_with_args_if_necessary(import_attr(floor["import_path"]), {})
    assert app._bound_deployment.name == floor["deployments"][0]["name"]


def test_one_node_config_has_no_placement_limit():
    config = cluster_config(ServeSettings(replicas=2), spread=False, noop=True)
    for app in config["applications"]:
        assert "max_replicas_per_node" not in app["deployments"][0]


def test_report_has_a_row_per_topology_and_client_count(capsys):
    run = {"clients": 1, "rps": 80.0, "p50_ms": 11.0, "p99_ms": 22.0, "errors": 0}
    report = {name: {"rank": [run, {**run, "clients": 16}], "noop": [run, {**run, "clients": 16}]}
              for name in ("1 node", "2 nodes")}
    print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[1].startswith("1 node") and lines[4].startswith("2 nodes")
