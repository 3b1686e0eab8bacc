"""The whole path as library calls: events -> flow -> features -> model -> service.

``marquee demo``, ``marquee up`` and the end-to-end test call these same functions, so what the
test proves is what users run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.synthetic import SyntheticWorld, WorldConfig
from streams import launch
from streams.config import KafkaSettings
from streams.contract.layout import DataLayout
from streams.contract.vocab_files import journal_path
from streams.produce import ProduceReport, produce_events

if TYPE_CHECKING:
    from serve.config import ServeSettings


@dataclass(frozen=True)
class Layout(DataLayout):
    """One pipeline's data folder (``DataLayout``) plus where its model goes."""

    @property
    def model_dir(self) -> Path:
        """The trained checkpoint directory."""
        return self.root / "model"

    @property
    def onnx(self) -> Path:
        """The exported ranking model."""
        return self.model_dir / "model.onnx"


def seed_events(kafka: KafkaSettings, layout: Layout, world: WorldConfig,
                events: int | None = None, progress: bool = True) -> ProduceReport:
    """Write the synthetic catalogue and produce the world's events (the first ``events`` of
    them, or all) to the events topic.
    """
    sim = SyntheticWorld(world)
    sim.write_catalogue(layout.catalogue)
    report = produce_events(sim.events(events), kafka, total=events, progress=progress)
    if report.undelivered:
        raise RuntimeError(f"producer: {report.summary()}")
    return report


def flow_env(kafka: KafkaSettings, layout: Layout, tail: bool,
             metrics_port: int | None = None) -> dict[str, str]:
    """Environment for a flow process reading ``kafka`` and writing under ``layout``."""
    env = {**os.environ,
           "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "MARQUEE_EVENTS_TOPIC": kafka.events_topic,
           "MARQUEE_DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
           "MARQUEE_RANKINGS_TOPIC": kafka.rankings_topic,
           "MARQUEE_FLOW_DATA_DIR": str(layout.root),
           "MARQUEE_FLOW_TAIL": "true" if tail else "false",
           "MARQUEE_FLOW_FINISH_AT_EOF": "false" if tail else "true"}
    if metrics_port:
        env["MARQUEE_FLOW_METRICS_PORT"] = str(metrics_port)
    return env


def reset_features(layout: Layout) -> None:
    """Forget what a previous run's flow wrote (token log, vocabulary, Feast files,
    experiment counts).
    """
    shutil.rmtree(layout.tokens, ignore_errors=True)
    shutil.rmtree(layout.feast, ignore_errors=True)
    layout.vocab.unlink(missing_ok=True)
    journal_path(layout.vocab).unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):  # the experiment counts
        layout.experiments.with_name(layout.experiments.name + suffix).unlink(missing_ok=True)


def run_flow_to_end(kafka: KafkaSettings, layout: Layout, timeout: float = 600.0,
                    recovery: Path | None = None) -> None:
    """Run the flow over everything in the events topic, close open tokens, and return.

    With ``recovery``, its snapshots resume where an interrupted run stopped, and a tailing
    flow started on the same folder afterwards goes on from the end of the topic.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "flow.log").open("ab") as log:
        code = launch.run(launch.Launch(recovery_dir=recovery, snapshot_s=5),
                          flow_env(kafka, layout, tail=False), timeout=timeout,
                          stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"flow exited with {code}; see {layout.root / 'flow.log'}")


def start_flow(kafka: KafkaSettings, layout: Layout, metrics_port: int | None = None,
               recovery_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a tailing flow in the background (``marquee up``); the caller stops it."""
    layout.root.mkdir(parents=True, exist_ok=True)
    log = (layout.root / "flow.log").open("ab")
    (proc,) = launch.start(launch.Launch(recovery_dir=recovery_dir, snapshot_s=5),
                           flow_env(kafka, layout, tail=True, metrics_port=metrics_port),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def _fingerprint(layout: Layout) -> str:
    parts = sorted((p.name, p.stat().st_size) for p in layout.tokens.glob("**/*.parquet"))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def train_and_export(layout: Layout, minutes: float | None = 1.0, reuse: bool = True,
                     progress: bool = True, epochs: int = 30, data_key: str | None = None,
                     **model: Any) -> tuple[Path, bool]:
    """Train on the token log for at most ``minutes`` (and ``epochs``) and export ONNX;
    returns (onnx, reused).

    With ``reuse``, a model trained on the same data by the same training recipe
    (``models.train.RECIPE``) is kept: same ``data_key`` when given (e.g. the synthetic
    world's config), else the same token log files and sizes.
    """
    from models.data import load_corpus
    from models.export import export
    from models.train import RECIPE, TrainConfig, train, write_outputs

    stamp = layout.model_dir / "trained_on.txt"
    print_ = print if progress else (lambda *a, **k: None)
    key = f"{data_key or _fingerprint(layout)} recipe={RECIPE}"  # new training code retrains
    if reuse and layout.onnx.exists() and stamp.exists() and stamp.read_text() == key:
        return layout.onnx, True
    corpus = load_corpus("tokens", layout.tokens, vocab_path=layout.vocab,
                         catalogue_path=layout.catalogue)
    model_cfg = {"max_len": 50, "d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2,
                 "mtp_k": 3, **model}
    cfg = TrainConfig(epochs=epochs, batch_size=128, patience=3, max_minutes=minutes,
                      valid_users=500, progress=progress)
    spec = {"format": "tokens", "path": str(layout.tokens), "options": {}}
    metrics = write_outputs(train(corpus, model_cfg, cfg, data_spec=spec, tag="demo"),
                            layout.model_dir)
    print_(f"      trained: best epoch {metrics['best_epoch']}, "
           f"validation {json.dumps(metrics['valid'])}")
    export(layout.model_dir, layout.onnx)
    stamp.write_text(key)
    return layout.onnx, False


def start_service(layout: Layout, model_path: Path | None, port: int = 8000,
                  replicas: int | None = None, kafka: KafkaSettings | None = None) -> str:
    """Start the Ray Serve ranking app over this layout's features and model, behind the
    admission front (``infra.front``) unless ``MARQUEE_FRONT_ENABLED=false``; returns the URL
    clients call (``service_settings`` says what it runs).
    """
    return start_app(layout, service_settings(layout, model_path, port, replicas, kafka))


def service_settings(layout: Layout, model_path: Path | None, port: int = 8000,
                     replicas: int | None = None,
                     kafka: KafkaSettings | None = None) -> ServeSettings:
    """The ranking app's settings over this layout's features and ``model_path``.

    ``replicas=None`` leaves the count to ``MARQUEE_REPLICAS`` (default 1); ``kafka`` is the
    broker and topic the rankings log goes to (default: ``KAFKA_BOOTSTRAP_SERVERS``).
    """
    from serve.config import ServeSettings

    over: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    if kafka is not None:
        over |= {"bootstrap_servers": kafka.bootstrap_servers,
                 "rankings_topic": kafka.rankings_topic}
    return ServeSettings(data_dir=layout.root, model_path=model_path, port=port, **over)


def start_app(layout: Layout, settings: ServeSettings) -> str:
    """Start the ranking app of ``settings`` behind the admission front (when enabled);
    returns the URL clients call.
    """
    from infra import front

    global _FRONT
    url, _FRONT = front.serve(settings, layout.root / "front")
    return url


_FRONT: Any = None  # the admission front start_service started (infra.front.Front)


def running_front() -> Any:
    """The admission front of the running service (None when it is off or not started), for
    the caller that supervises it.
    """
    return _FRONT


def stop_service() -> None:
    """Stop the admission front and shut Ray Serve down."""
    from serve.app import stop

    global _FRONT
    if _FRONT is not None:
        _FRONT.stop()
        _FRONT = None
    stop()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    """Poll ``/readyz`` until the service says it is ready."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/readyz not ready after {timeout}s")
