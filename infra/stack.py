"""``marquee up``: the stack kept running, supervised, on durable state.

The broker, the flow and Prometheus are child processes under ``infra.supervisor``: one that
exits is restarted with backoff, and a crash loop stops the stack with a non-zero exit. Every
child resumes from durable state in the data folder: the broker from its storage, the flow
from its recovery snapshots (taken every few seconds), the features and token log from their
files. So a second ``up`` (or a restart of any one component) continues where the last one
stopped; ``up --fresh`` starts from nothing.

On the first start ``up`` seeds the synthetic world, runs the flow over it to the end of the
topic (on the recovery folder the tailing flow then resumes from), trains and serves, like
``marquee demo``. ``--only stream`` runs the streaming half alone (broker, flow, Prometheus)
for teams that bring their own producers.

The trained model is registered in the model registry, and the service runs the registry's
serving version and follows it on the supervision loop's tick: ``marquee models
promote|rollback`` and a promoting retrain switch the running service, and survive a restart
of ``up``. ``--retrain-every`` adds ``marquee retrain --every`` as one more supervised child.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infra.continuous import RegistryFollower, open_registry, register_trained
from infra.demo import DemoConfig, show_rankings, step, world_of
from infra.pipeline import (
    Layout,
    run_flow_to_end,
    running_front,
    seed_events,
    service_settings,
    start_app,
    stop_service,
    train_and_export,
    wait_ready,
)
from infra.supervisor import CrashLoop, Processes, RestartPolicy, Supervisor
from models.registry import Version
from streams.config import KafkaSettings
from streams.contract.listen import ListenSettings, address, is_loopback, reachable
from streams.contract.tokens import DAY_MS
from streams.topics import create_topics, marquee_topics

DURABLE_FETCH_WAIT_MS = 500
# Two ranking replicas unless told otherwise: a replica that dies then costs only the requests
# in flight on it while Ray starts its replacement; with one, every request fails or waits
# until the replacement is up (docs/design.md, "Two replicas in `up`").
UP_REPLICAS = 2


def serve_replicas(flag: int | None = None) -> int:
    """Ranking replicas for ``up``: ``--replicas``, else ``MARQUEE_REPLICAS`` (environment or
    marquee.env), else ``UP_REPLICAS``.
    """
    if flag is not None:
        return flag
    from serve.config import ServeSettings

    settings = ServeSettings()
    return settings.replicas if "replicas" in settings.model_fields_set else UP_REPLICAS


def recovery_dir(layout: Layout) -> Path:
    """The flow's recovery snapshots (one partition per worker)."""
    return layout.root / "recovery"


def wipe(layout: Layout) -> None:
    """``--fresh``: forget the stack's state in ``layout`` (events, features, token log,
    vocabulary, snapshots, markers). A trained model stays: it is reused only when its data
    key and recipe match, and retrained otherwise. The model registry stays too.
    """
    for name in ("broker", "recovery", "tokens", "feast", "prometheus"):
        shutil.rmtree(layout.root / name, ignore_errors=True)
    for name in ("vocab.json", "seeded.json", "caught_up.json", "stack.json",
                 *_table_files(layout.experiments)):
        (layout.root / name).unlink(missing_ok=True)


def _table_files(table: Path) -> tuple[str, ...]:
    """The experiment counts' SQLite file and its WAL companions (they go with the snapshots:
    a flow counting from the start again must not meet rows of the last one).
    """
    return tuple(table.name + suffix for suffix in ("", "-wal", "-shm"))


def _flow(kafka: KafkaSettings, layout: Layout, metrics_port: int) -> Processes:
    from infra.pipeline import flow_env
    from streams import launch

    env = flow_env(kafka, layout, tail=True, metrics_port=metrics_port)

    def start() -> list[subprocess.Popen]:
        log = (layout.root / "flow.log").open("ab")
        try:
            return launch.start(launch.Launch(recovery_dir=recovery_dir(layout), snapshot_s=5),
                                env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()  # the children hold their own descriptors

    return Processes(start)


def _prometheus(layout: Layout, cfg: DemoConfig, url: str | None, host: str) -> Processes:
    """Prometheus on ``host`` (MARQUEE_BIND_HOST), scraping the flow and the service there."""
    from infra.prometheus import start_prometheus, write_config

    near = reachable(host)
    targets = {"marquee-flow": [address(near, cfg.flow_metrics_port)]}
    if url is not None:
        targets["marquee-serve"] = [address(near, cfg.serve_port)]
    config = write_config(layout.root / "prometheus.yml", targets)
    return Processes(lambda: [start_prometheus(config, layout.root / "prometheus",
                                               cfg.prometheus_port, host=host).process])


def _once(marker: Path, key: str) -> bool:
    """True when ``marker`` records ``key`` (a step already done for this data)."""
    return marker.exists() and json.loads(marker.read_text()).get("key") == key


def _done(marker: Path, key: str, **facts: Any) -> None:
    marker.write_text(json.dumps({"key": key, **facts}))


def run_up(cfg: DemoConfig, fresh: bool = False, serve: bool = True,
           policy: RestartPolicy | None = None, retrain_every: str | None = None) -> int:
    """Start (or resume) the stack and keep it running until SIGINT/SIGTERM (exit 0) or a
    crash loop (exit 1, with the component and its log named). ``retrain_every`` (e.g.
    ``6h``): also a supervised ``marquee retrain`` on that schedule.
    """
    layout = Layout(cfg.data_dir)
    host = ListenSettings().bind_host  # the flow and the service read it themselves
    if fresh:
        wipe(layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    _stop_on_signals(stop)
    sup = Supervisor(policy, state_file=layout.root / "stack.json")
    url = follow = None
    try:
        kafka = _start_broker(sup, cfg, layout)
        if serve:
            url, follow = _seed_train_serve(cfg, kafka, layout)
            _stop_on_signals(stop)  # ray.init replaced the handlers with one that aborts
            if (gate := running_front()) is not None:  # restarted like the other children
                sup.add("front", gate, layout.root / "front" / "haproxy.log")
        sup.add("flow", _flow(kafka, layout, cfg.flow_metrics_port), layout.root / "flow.log")
        sup.add("prometheus", _prometheus(layout, cfg, url, host),
                layout.root / "prometheus" / "prometheus.log")
        if retrain_every:
            sup.add("retrain", retrain_child(layout, kafka, retrain_every),
                    layout.root / "retrain.log")
        _print_up(kafka, layout, cfg, url, host, retrain_every)
        # The follower runs on this loop, not a thread of its own: one thread talks to Ray
        # Serve, and the service is stopped only after the last switch returned.
        sup.run(stop, extra=follow)
        return 0
    except CrashLoop as exc:
        print(f"marquee up: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        sup.stop_all()
        if url is not None:
            stop_service()


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM end the supervision loop, so the stack stops in order, exit 0."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def _start_broker(sup: Supervisor, cfg: DemoConfig, layout: Layout) -> KafkaSettings:
    """The user's cluster when ``KAFKA_BOOTSTRAP_SERVERS`` is set, else the embedded broker
    (durable, supervised); Marquee's topics exist on return.
    """
    kafka = KafkaSettings()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from infra.broker import EmbeddedBroker

        broker = EmbeddedBroker(port=cfg.broker_port or 9092, log_path=layout.root / "broker.log",
                                data_dir=layout.root / "broker")  # the same storage each start
        sup.add("broker", broker, layout.root / "broker.log")
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.bootstrap})
        # Tansu on S3 answers a 10 ms fetch empty when it cannot read the records in time,
        # so the flows this stack starts wait longer (docs/design.md, "Durable broker").
        os.environ.setdefault("MARQUEE_FLOW_FETCH_WAIT_MS", str(DURABLE_FETCH_WAIT_MS))
    create_topics(kafka, marquee_topics(kafka))
    return kafka


def retrain_command(layout: Layout, every: str) -> list[str]:
    """``marquee retrain --every`` on ``layout`` and its registry (resolved here, so the child
    writes where ``up`` follows).
    """
    return [sys.executable, "-m", "infra.cli", "retrain", "--every", every,
            "--data-dir", str(layout.root), "--registry", str(open_registry(layout.root).root)]


def retrain_child(layout: Layout, kafka: KafkaSettings, every: str) -> Processes:
    """The scheduled retrain as a supervised child logging to ``retrain.log``."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}

    def start() -> list[subprocess.Popen]:
        with (layout.root / "retrain.log").open("ab") as log:
            return [subprocess.Popen(retrain_command(layout, every), env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)]

    return Processes(start)


def serving_model(layout: Layout) -> Version:
    """Register the model ``up`` trained (or reused) and return the registry's serving
    version (``register_trained``: no duplicate per restart; a promote or rollback made
    before the restart keeps serving).
    """
    registry = open_registry(layout.root)
    version, done = register_trained(registry, layout.model_dir, command="marquee up")
    print(f"      registry {registry.root}: {done}", flush=True)
    return version


def _seed_train_serve(cfg: DemoConfig, kafka: KafkaSettings,
                      layout: Layout) -> tuple[str, RegistryFollower]:
    """First start: seed, tokenize to the end, train; every start: register the model, serve
    the registry's serving version and show a ranking. Returns the URL and the follower that
    keeps the service on the registry.
    """
    world_cfg, world = world_of(cfg)
    key = json.dumps({**asdict(world_cfg), "start_ms": None}, sort_keys=True)
    total = 7
    if not _once(layout.root / "seeded.json", key):
        step(1, total, f"synthetic world: {cfg.users} users x {cfg.days} days -> "
                        f"{kafka.events_topic}")
        report = seed_events(kafka, layout, world_cfg)
        _done(layout.root / "seeded.json", key, delivered=report.delivered)
    else:
        step(1, total, f"synthetic world already in {kafka.events_topic} (up --fresh reseeds)")
    if not _once(layout.root / "caught_up.json", key):
        step(2, total, "Bytewax flow over the topic (recovery on: the tailing flow resumes "
                        "where this one ends)")
        run_flow_to_end(kafka, layout, recovery=recovery_dir(layout))
        _done(layout.root / "caught_up.json", key)
    else:
        step(2, total, f"flow state resumed from {recovery_dir(layout)}")
    step(3, total, f"foundation model (train <= {cfg.train_minutes} min unless reused)")
    onnx, reused = train_and_export(layout, minutes=cfg.train_minutes, data_key=key)
    print(f"      {'reused' if reused else 'exported'} {onnx}", flush=True)
    version = serving_model(layout)
    replicas = serve_replicas(cfg.serve_replicas)
    step(4, total, f"Ray Serve ranking app on port {cfg.serve_port}, {replicas} replicas, "
                   f"model {version.name}")
    settings = service_settings(layout, version.onnx, port=cfg.serve_port, replicas=replicas,
                                kafka=kafka)
    url = start_app(layout, settings)
    wait_ready(url)
    print(f"      {_replica_line(replicas)}", flush=True)
    step(5, total, f"a ranking for u000007 (POST {url}/v1/rank)")
    show_rankings(url, world, "u000007", world_cfg.start_ms + cfg.days * DAY_MS, 5, total)
    # a switch made since `version` was read is picked up on the first tick
    return url, RegistryFollower(open_registry(layout.root), settings, version.name)


def _replica_line(wanted: int) -> str:
    """The replica processes Ray has alive (what a SIGKILL would hit), checked against
    ``wanted``.
    """
    from serve.replicas import replicas

    alive = replicas()
    pids = ", ".join(str(r.pid) for r in alive)
    if len(alive) != wanted:
        return f"WARNING: {len(alive)} ranking replica processes alive ({pids}), not {wanted}"
    return f"{wanted} ranking replica processes (pids {pids})"


def _print_up(kafka: KafkaSettings, layout: Layout, cfg: DemoConfig, url: str | None,
              host: str, retrain_every: str | None) -> None:
    print("the stack is up and supervised; Ctrl-C stops it", flush=True)
    print(f"      KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} "
          f"(produce with `marquee produce`)", flush=True)
    registry = open_registry(layout.root).root
    if url is not None:
        print(f"      ranking: {url}/v1/rank   docs: {url}/docs   readiness: {url}/readyz",
              flush=True)
        print(f"      models: {registry} is followed (`marquee models promote|rollback "
              f"--data-dir {layout.root}` switch the service)", flush=True)
    if retrain_every:
        print(f"      retrain: every {retrain_every} after the newest version "
              f"(log {layout.root / 'retrain.log'})", flush=True)
    print(f"      Prometheus: http://{address(reachable(host), cfg.prometheus_port)} (flow "
          f":{cfg.flow_metrics_port}/metrics); listening on {host}"
          f"{'' if is_loopback(host) else ': put auth and TLS in front (README)'}", flush=True)
    print(f"      state: {layout.root} (pids and restarts in {layout.root / 'stack.json'})",
          flush=True)
    print("      Grafana: provision infra/grafana (data source + dashboards)", flush=True)
