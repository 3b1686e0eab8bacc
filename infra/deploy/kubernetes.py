"""Kubernetes manifests for Marquee on a cluster, generated from the settings.

What runs where: the ranking service as a KubeRay ``RayService`` (its ``serveConfigV2`` is
``serve_config.render`` of the same settings, so it cannot drift from ``marquee deploy
serve-config``), the flow as a ``StatefulSet`` of Bytewax processes joined over a headless
Service (process id = pod ordinal), Redis as the online store, and Prometheus scraping as
``ServiceMonitor``s plus a plain scrape config. Kafka is the team's own (``--kafka``). Apps
call the admission front (``infra.front``: HAProxy, a Deployment of ``FRONT_REPLICAS`` pods
before the RayService's ``-serve-svc``), which holds the ranking's bounded queue as it does in
``marquee up``; each pod takes its share of the bounds.

Every flow pod and every Ray pod mounts one ReadWriteMany volume at ``DATA``: the flow
processes agree on new vocabulary ids through a locked file there, write the token log and
the recovery partitions there, and the ranking replicas read the vocabulary and the Feast
registry from it. That volume needs a storage class with shared POSIX locks (NFSv4, CephFS).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from infra.deploy.monitoring import monitors, scrape_config
from infra.deploy.serve_config import ClusterShape, render
from serve.app import RAY_ENV_DEFAULTS
from serve.config import ServeSettings

DATA = "/data"
FLOW, REDIS, RANKING, VOLUME = "marquee-flow", "marquee-redis", "marquee-ranking", "marquee-data"
FRONT, FRONT_IMAGE, FRONT_REPLICAS = "marquee-front", "haproxy:2.6", 2
FLOW_PORT, FLOW_METRICS_PORT, REDIS_PORT, RAY_METRICS_PORT = 2101, 9101, 6379, 8080
NAME = "app.kubernetes.io/name"
CLUSTER = ClusterShape()  # one CPU per replica, a fixed MARQUEE_REPLICAS
POD_INDEX = "apps.kubernetes.io/pod-index"  # set by the StatefulSet controller (k8s >= 1.28)


@dataclass(frozen=True)
class KubeShape:
    """What the settings do not say about a cluster: image, sizes, where Kafka is."""

    image: str = "marquee:latest"
    kafka: str = "kafka-bootstrap:9092"
    flow_processes: int = 2
    flow_workers: int = 1
    ray_workers: int = 2
    ray_workers_max: int = 4
    data_size: str = "50Gi"
    redis_size: str = "20Gi"
    storage_class: str | None = None

    def __post_init__(self) -> None:
        if self.flow_processes < 1 or self.flow_workers < 1:
            raise ValueError("--flow-processes and --flow-workers: give 1 or more")
        if not 0 <= self.ray_workers <= self.ray_workers_max or self.ray_workers_max < 1:
            raise ValueError(f"--ray-workers {self.ray_workers} --ray-workers-max "
                             f"{self.ray_workers_max}: give 0 <= WORKERS <= MAX, MAX >= 1")


def service_settings(settings: ServeSettings, model: str = f"{DATA}/models/marquee.onnx"
                     ) -> ServeSettings:
    """The service's settings on the cluster: every interface, data on the shared volume,
    Redis online, the model file where ``marquee`` exports it to on that volume.
    """
    return settings.model_copy(update={"host": "0.0.0.0", "data_dir": Path(DATA),
                                       "online_store": "redis", "model_path": Path(model)})


def _env(shape: KubeShape) -> list[dict[str, Any]]:
    """What every Marquee container reads (the settings' variables)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": shape.kafka, "MARQUEE_DATA_DIR": DATA,
           "MARQUEE_FLOW_DATA_DIR": DATA, "MARQUEE_ONLINE_STORE": "redis",
           "MARQUEE_REDIS_URL": f"redis://{REDIS}:{REDIS_PORT}/0", "MARQUEE_BIND_HOST": "0.0.0.0"}
    return [{"name": k, "value": v} for k, v in env.items()]



def _pvc(name: str, size: str, mode: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": name}, "spec": spec}


def data_volume(shape: KubeShape) -> list[dict[str, Any]]:
    """The shared data volume (vocabulary, token log, recovery, Feast registry, models)."""
    claim = _pvc(VOLUME, shape.data_size, "ReadWriteMany", shape.storage_class)
    claim["metadata"]["labels"] = {NAME: VOLUME}
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", **claim}]


def _mount() -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"name": "data", "persistentVolumeClaim": {"claimName": VOLUME}},
            {"name": "data", "mountPath": DATA})


def flow(shape: KubeShape) -> list[dict[str, Any]]:
    """Headless Service + StatefulSet: pod N runs ``marquee flow --process-id N``."""
    labels = {NAME: FLOW}
    addresses = ",".join(f"{FLOW}-{i}.{FLOW}:{FLOW_PORT}" for i in range(shape.flow_processes))
    volume, mount = _mount()
    container = {
        "name": "flow", "image": shape.image,
        "command": ["marquee", "flow", "--process-id", "$(MARQUEE_FLOW_PROCESS_ID)",
                    "--addresses", addresses, "--workers", str(shape.flow_workers),
                    "--metrics-port", str(FLOW_METRICS_PORT)],
        "env": [{"name": "MARQUEE_FLOW_PROCESS_ID", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{POD_INDEX}']"}}}, *_env(shape)],
        "ports": [{"name": "bytewax", "containerPort": FLOW_PORT},
                  {"name": "metrics", "containerPort": FLOW_METRICS_PORT}],
        "volumeMounts": [mount],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": FLOW, "labels": labels},
               "spec": {"clusterIP": "None", "selector": labels,
                        # members find each other before any is ready (they are not, until all
                        # have joined)
                        "publishNotReadyAddresses": True,
                        "ports": [{"name": "bytewax", "port": FLOW_PORT},
                                  {"name": "metrics", "port": FLOW_METRICS_PORT}]}}
    stateful = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": FLOW, "labels": labels},
                "spec": {"serviceName": FLOW, "replicas": shape.flow_processes,
                         "podManagementPolicy": "Parallel", "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [container],
                                               "volumes": [volume]}}}}
    return [service, stateful]


def redis(shape: KubeShape) -> list[dict[str, Any]]:
    """Redis with its append-only file on a volume of its own: a restart loses no row."""
    labels = {NAME: REDIS}
    container = {"name": "redis", "image": "redis:7.4",
                 "command": ["redis-server", "--appendonly", "yes", "--dir", "/data"],
                 "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                 "volumeMounts": [{"name": "redis-data", "mountPath": "/data"}],
                 "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]},
                                    "periodSeconds": 5}}
    claim = _pvc("redis-data", shape.redis_size, "ReadWriteOnce", shape.storage_class)
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": REDIS, "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "redis", "port": REDIS_PORT}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": {"name": REDIS, "labels": labels},
         "spec": {"serviceName": REDIS, "replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [container]}},
                  "volumeClaimTemplates": [claim]}}]


def _ray_pod(shape: KubeShape, name: str, head: bool) -> dict[str, Any]:
    volume, mount = _mount()
    ports = [{"name": "serve", "containerPort": 8000},
             {"name": "ray-metrics", "containerPort": RAY_METRICS_PORT}]
    if head:
        ports = [{"name": "gcs", "containerPort": 6379},
                 {"name": "dashboard", "containerPort": 8265},
                 {"name": "client", "containerPort": 10001}, *ports]
    env = [{"name": k, "value": v} for k, v in RAY_ENV_DEFAULTS.items()] + _env(shape)
    container = {"name": name, "image": shape.image, "env": env, "ports": ports,
                 "volumeMounts": [mount],
                 "resources": {"requests": {"cpu": "2" if head else "4",
                                            "memory": "4Gi" if head else "8Gi"}}}
    if not head:  # a ready replica lowers its niceness below Ray's 15 (serve/priority.py)
        container["securityContext"] = {"capabilities": {"add": ["SYS_NICE"]}}
    return {"metadata": {"labels": {NAME: RANKING}},
            "spec": {"containers": [container], "volumes": [volume]}}


def ray_service(settings: ServeSettings, shape: KubeShape,
                cluster: ClusterShape = CLUSTER) -> list[dict[str, Any]]:
    """The ranking service as a KubeRay RayService, and a Service over its pods' metrics."""
    metrics = {"metrics-export-port": str(RAY_METRICS_PORT)}
    service = {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": RANKING, "labels": {NAME: RANKING}},
        "spec": {
            "serveConfigV2": render(settings, cluster),
            "rayClusterConfig": {
                "rayVersion": version("ray"),
                # The head takes no replicas (num-cpus 0): it keeps the GCS and controller.
                "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0",
                                                     "num-cpus": "0", **metrics},
                                  "template": _ray_pod(shape, "ray-head", head=True)},
                "workerGroupSpecs": [{
                    "groupName": "ranking", "replicas": shape.ray_workers,
                    "minReplicas": min(1, shape.ray_workers), "maxReplicas": shape.ray_workers_max,
                    "rayStartParams": dict(metrics),
                    "template": _ray_pod(shape, "ray-worker", head=False)}]}}}
    scrape = {"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": f"{RANKING}-metrics", "labels": {NAME: RANKING}},
              "spec": {"selector": {NAME: RANKING},
                       "ports": [{"name": "serve", "port": settings.port, "targetPort": "serve"},
                                 {"name": "ray-metrics", "port": RAY_METRICS_PORT,
                                  "targetPort": "ray-metrics"}]}}
    return [service, scrape]


def front(settings: ServeSettings, cluster: ClusterShape = CLUSTER) -> list[dict[str, Any]]:
    """The admission front: its HAProxy config (``infra.front.render``) as a ConfigMap, a
    Deployment, and the Service apps call. The bounds are the service's (replicas at most, x
    ``MARQUEE_MAX_ONGOING_REQUESTS`` in flight, ``MARQUEE_MAX_QUEUED_REQUESTS`` waiting),
    split over the front's pods.
    """
    from infra.front import FrontConfig, render

    replicas = cluster.autoscale[1] if cluster.autoscale else settings.replicas
    share = -(-settings.max_ongoing_requests * replicas // FRONT_REPLICAS)
    queue = -(-max(settings.max_queued_requests, 0) // FRONT_REPLICAS)
    cfg = FrontConfig("0.0.0.0", settings.port, f"{RANKING}-serve-svc", 8000, share, queue,
                      settings.request_timeout_ms, settings.retry_after_s)
    labels = {NAME: FRONT}
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": FRONT, "labels": labels},
              "data": {"haproxy.cfg": render(cfg)}}
    container = {"name": "haproxy", "image": FRONT_IMAGE,
                 "ports": [{"name": "http", "containerPort": settings.port}],
                 "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/haproxy",
                                   "readOnly": True}],
                 "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": FRONT, "labels": labels},
        "spec": {"replicas": FRONT_REPLICAS, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container],
                                       "volumes": [{"name": "config",
                                                    "configMap": {"name": FRONT}}]}}}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": FRONT, "labels": labels},
               "spec": {"selector": labels,
                        "ports": [{"name": "http", "port": settings.port,
                                   "targetPort": "http"}]}}
    return [config, deployment, service]


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (the embedded serve config) as literal blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)
_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]  # no &id001


def dump(docs: list[dict[str, Any]]) -> str:
    """Documents as one multi-document YAML text."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


HEADER = ("# Generated by `marquee deploy kubernetes` from the MARQUEE_* settings; regenerate "
          "instead of editing.\n")


def documents(settings: ServeSettings, shape: KubeShape = KubeShape(),
              cluster: ClusterShape = CLUSTER) -> dict[str, list[dict[str, Any]]]:
    """Every manifest by file name (``kubectl apply -f`` the folder)."""
    settings = service_settings(settings)
    return {"data.yaml": data_volume(shape), "redis.yaml": redis(shape),
            "flow.yaml": flow(shape), "ranking.yaml": ray_service(settings, shape, cluster),
            "front.yaml": front(settings, cluster),
            "monitoring.yaml": monitors(FLOW, RANKING)}


def render_files(settings: ServeSettings, shape: KubeShape = KubeShape(),
                 cluster: ClusterShape = CLUSTER) -> dict[str, str]:
    """Every file's text by path relative to the output folder; the plain Prometheus config
    sits in ``prometheus/`` so that ``kubectl apply -f`` on the folder skips it.
    """
    files = {name: HEADER + dump(docs)
             for name, docs in documents(settings, shape, cluster).items()}
    files["prometheus/prometheus.yml"] = HEADER + yaml.safe_dump(
        scrape_config(FLOW, RANKING), sort_keys=False)
    return files


def write(out: Path, settings: ServeSettings, shape: KubeShape = KubeShape(),
          cluster: ClusterShape = CLUSTER) -> list[Path]:
    """Write the files under ``out``; returns their paths."""
    paths = []
    for name, text in render_files(settings, shape, cluster).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths
