"""Prometheus scraping of Marquee on Kubernetes: ``ServiceMonitor``s for clusters that run the
Prometheus Operator, and the same targets as a plain ``prometheus.yml`` (pod discovery) for
those that do not. The targets are the flow's metrics port, the ranking service's
``/metrics`` on its HTTP port, and Ray's own metrics port on every Ray pod.
"""

from __future__ import annotations

from typing import Any

NAME = "app.kubernetes.io/name"
INTERVAL = "15s"


def monitors(flow: str, ranking: str) -> list[dict[str, Any]]:
    """One ServiceMonitor for the flow's Service, one for the Ray pods' metrics Service."""
    def monitor(name: str, selector: str, ports: list[str]) -> dict[str, Any]:
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": name, "labels": {NAME: selector}},
                "spec": {"selector": {"matchLabels": {NAME: selector}},
                         "endpoints": [{"port": port, "path": "/metrics", "interval": INTERVAL}
                                       for port in ports]}}

    return [monitor(flow, flow, ["metrics"]),
            monitor(ranking, ranking, ["serve", "ray-metrics"])]


def _pod_job(job: str, app: str, port: str) -> dict[str, Any]:
    """Pods labelled ``app`` in any namespace, their container port named ``port``."""
    return {"job_name": job, "metrics_path": "/metrics",
            "kubernetes_sd_configs": [{"role": "pod"}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                 "regex": app, "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
                 "regex": port, "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]}


def scrape_config(flow: str, ranking: str) -> dict[str, Any]:
    """A whole ``prometheus.yml`` (``promtool check config`` accepts it); its
    ``scrape_configs`` are what a team adds to its own Prometheus.
    """
    return {"global": {"scrape_interval": INTERVAL},
            "scrape_configs": [_pod_job("marquee-flow", flow, "metrics"),
                               _pod_job("marquee-serve", ranking, "serve"),
                               _pod_job("ray", ranking, "ray-metrics")]}
