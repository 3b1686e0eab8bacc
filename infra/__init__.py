"""Tooling and operations around the data path: the CLI, benchmarks, the synthetic world, the
demo, the embedded broker, Prometheus and Grafana. The runtime never imports this package.
"""
