"""The Kubernetes manifests: the committed files are what the generator writes, every document
passes the Kubernetes and CRD schemas, broken ones do not, and the parts fit together (flow
members, the embedded Serve config, the Prometheus targets)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from infra.cli import build_parser, main
from infra.deploy.kubernetes import (
    DATA,
    POD_INDEX,
    KubeShape,
    documents,
    render_files,
    service_settings,
)
from infra.deploy.schemas import ManifestError, validate_document, validate_file
from infra.deploy.serve_config import render
from serve.app import RAY_ENV_DEFAULTS
from serve.config import ServeSettings
from streams.launch import Member, parse_addresses

COMMITTED = Path(__file__).resolve().parents[3] / "infra" / "deploy" / "kubernetes"


@pytest.fixture
def settings(monkeypatch) -> ServeSettings:
    """The settings' defaults, whatever this machine's MARQUEE_* environment says."""
    import os

    for key in [k for k in os.environ if k.startswith("MARQUEE_")]:
        monkeypatch.delenv(key)
    return ServeSettings(_env_file=None)


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    """Every committed document by kind/name."""
    out = {}
    for path in sorted(COMMITTED.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def test_committed_files_are_what_the_generator_writes(settings):
    files = render_files(settings)
    committed = {str(p.relative_to(COMMITTED)): p.read_text()
                 for p in COMMITTED.rglob("*") if p.is_file()}
    assert committed.keys() == files.keys()
    for name, text in files.items():
        assert committed[name] == text, f"{name} drifted: run `marquee deploy kubernetes " \
                                        "--out infra/deploy/kubernetes`"


def test_every_committed_document_passes_its_schema():
    kinds = [d["kind"] for p in sorted(COMMITTED.glob("*.yaml")) for d in validate_file(p)]
    assert sorted(kinds) == sorted(["PersistentVolumeClaim", "Service", "StatefulSet",
                                    "Service", "StatefulSet", "RayService", "Service",
                                    "ServiceMonitor", "ServiceMonitor", "ConfigMap",
                                    "Deployment", "Service"])


def test_flow_members_take_their_id_from_the_pod_index_and_peers_from_the_headless_service(docs):
    sts, svc = docs["StatefulSet/marquee-flow"], docs["Service/marquee-flow"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MARQUEE_FLOW_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        f"metadata.labels['{POD_INDEX}']"
    argv = container["command"]
    assert argv[0] == "marquee"
    replicas = sts["spec"]["replicas"]
    for index in range(replicas):  # what each pod runs, $(VAR) expanded as the kubelet does
        args = build_parser().parse_args(
            [a.replace("$(MARQUEE_FLOW_PROCESS_ID)", str(index)) for a in argv[1:]])
        assert args.func.__name__ == "_flow" and args.process_id == index
        member = Member(args.process_id, tuple(parse_addresses(args.addresses)))
        host, port = member.addresses[index].rsplit(":", 1)
        assert host == f"{sts['metadata']['name']}-{index}.{svc['metadata']['name']}"
        assert int(port) in {p["containerPort"] for p in container["ports"]}
    assert len(member.addresses) == replicas
    # recovery (DATA_DIR/recovery by default) lands on the persistent volume
    assert env["MARQUEE_FLOW_DATA_DIR"]["value"] == DATA
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == DATA
    (volume,) = sts["spec"]["template"]["spec"]["volumes"]
    claim = docs[f"PersistentVolumeClaim/{volume['persistentVolumeClaim']['claimName']}"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every member sees every part


def test_ray_service_embeds_the_serve_config_and_rays_defaults(docs, settings):
    service = docs["RayService/marquee-ranking"]
    assert service["spec"]["serveConfigV2"] == render(service_settings(settings))
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]]
    assert len(templates) == 2
    for template in templates:
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert RAY_ENV_DEFAULTS.items() <= env.items()
            assert env["MARQUEE_REDIS_URL"] == "redis://marquee-redis:6379/0"


def test_redis_persists_its_append_only_file_on_a_volume(docs):
    sts = docs["StatefulSet/marquee-redis"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["redis-server", "--appendonly", "yes"]
    data = container["command"][container["command"].index("--dir") + 1]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == data
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == [mount["name"]]
    assert docs["Service/marquee-redis"]["spec"]["ports"][0]["port"] == 6379


def _pod_ports(docs) -> list[tuple[dict, str]]:
    """(pod labels, container port name) of every pod template."""
    out = []
    for doc in docs.values():
        if doc["kind"] == "StatefulSet":
            templates = [doc["spec"]["template"]]
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            templates = [cluster["headGroupSpec"]["template"]] + [
                g["template"] for g in cluster["workerGroupSpecs"]]
        else:
            continue
        for t in templates:
            out += [(t["metadata"]["labels"], p["name"])
                    for c in t["spec"]["containers"] for p in c["ports"]]
    return out


def test_service_monitors_select_services_whose_ports_exist(docs):
    services = [d for d in docs.values() if d["kind"] == "Service"]
    monitors = [d for d in docs.values() if d["kind"] == "ServiceMonitor"]
    scraped = set()
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services
                      if wanted.items() <= s["metadata"].get("labels", {}).items()
                      and s["metadata"]["name"].startswith(monitor["metadata"]["name"])]
        ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports
            scraped.add(endpoint["port"])
    assert scraped == {"metrics", "serve", "ray-metrics"}


def test_plain_scrape_config_keeps_exactly_the_metrics_ports(docs):
    config = yaml.safe_load((COMMITTED / "prometheus" / "prometheus.yml").read_text())
    found = {}
    for job in config["scrape_configs"]:
        kept = []
        for labels, port in _pod_ports(docs):
            meta = {"__meta_kubernetes_pod_label_app_kubernetes_io_name":
                    labels["app.kubernetes.io/name"],
                    "__meta_kubernetes_pod_container_port_name": port}
            if all(re.fullmatch(r["regex"], meta[r["source_labels"][0]])
                   for r in job["relabel_configs"] if r.get("action") == "keep"):
                kept.append(port)
        found[job["job_name"]] = kept
    # one flow pod template; the Ray head's and the workers' templates
    assert found == {"marquee-flow": ["metrics"], "marquee-serve": ["serve"] * 2,
                     "ray": ["ray-metrics"] * 2}


def _broken(docs, key, change):
    doc = copy.deepcopy(docs[key])
    change(doc)
    return doc


@pytest.mark.parametrize(("key", "change", "problem"), [
    ("StatefulSet/marquee-flow", lambda d: d["spec"].update(replicas="two"), "replicas"),
    ("StatefulSet/marquee-flow",
     lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name' is a required"),
    ("Service/marquee-redis", lambda d: d["spec"].update(clusterIp="None"), "clusterIp"),
    ("RayService/marquee-ranking",
     lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(replicas="2"),
     "workerGroupSpecs/0/replicas"),
    ("RayService/marquee-ranking",
     lambda d: d["spec"]["rayClusterConfig"].pop("headGroupSpec"), "'headGroupSpec' is a required"),
    ("RayService/marquee-ranking", lambda d: d["spec"].update(serveConfig="x"), "serveConfig"),
    ("RayService/marquee-ranking",
     lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
     ["containers"][0].update(imagePullPolicy=3), "headGroupSpec"),
    ("RayService/marquee-ranking",
     lambda d: d["spec"].update(serveConfigV2=d["spec"]["serveConfigV2"].replace(
         "max_ongoing_requests: 32", "max_ongoing_requests: 0")), "serveConfigV2"),
    ("ServiceMonitor/marquee-flow", lambda d: d["spec"].pop("selector"),
     "'selector' is a required"),
    ("ServiceMonitor/marquee-flow",
     lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"), "interval"),
    ("ServiceMonitor/marquee-flow", lambda d: d["spec"]["endpoints"][0].update(portName="x"),
     "portName"),
], ids=["type", "required", "unknown", "crd-type", "crd-required", "crd-unknown",
        "ray-pod-type", "ray-serve-config", "monitor-required", "monitor-pattern",
        "monitor-unknown"])
def test_broken_manifests_are_rejected_naming_the_problem(docs, key, change, problem):
    validate_document(docs[key])
    with pytest.raises(ManifestError, match=re.escape(problem)):
        validate_document(_broken(docs, key, change))


def test_cli_writes_checked_files_for_a_bigger_cluster(tmp_path, settings):
    out = tmp_path / "k8s"
    assert main(["deploy", "kubernetes", "--out", str(out), "--image", "reg.example/m:1",
                 "--flow-processes", "3", "--autoscale", "2", "6"]) == 0
    flow = list(yaml.safe_load_all((out / "flow.yaml").read_text()))[1]
    assert flow["spec"]["replicas"] == 3
    assert flow["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/m:1"
    ray = next(yaml.safe_load_all((out / "ranking.yaml").read_text()))
    assert "autoscaling_config" in ray["spec"]["serveConfigV2"]
    with pytest.raises(ValueError, match="--ray-workers"):
        documents(settings, KubeShape(ray_workers=5, ray_workers_max=4))


def test_the_front_holds_the_services_bounds_split_over_its_pods(docs, tmp_path, settings):
    import subprocess

    from infra.front import executable

    cfg = docs["ConfigMap/marquee-front"]["data"]["haproxy.cfg"]
    deployment = docs["Deployment/marquee-front"]
    pods = deployment["spec"]["replicas"]
    assert f"server ray {docs['RayService/marquee-ranking']['metadata']['name']}-serve-svc:8000" \
        in cfg
    inflight = settings.replicas * settings.max_ongoing_requests
    assert f"maxconn {-(-inflight // pods)}" in cfg
    assert f"queue(rank) ge {-(-settings.max_queued_requests // pods)}" in cfg
    service = docs["Service/marquee-front"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)  # HAProxy accepts it, the Service's name unresolved here
    check = subprocess.run([executable(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
