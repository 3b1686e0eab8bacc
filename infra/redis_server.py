"""A local Redis for the online store: Debian's ``redis-server`` on a loopback port (or on a
host address given as ``host``, for the multi-host tests).

The benchmark and the tests start one when they need Redis and nobody gave them one
(``MARQUEE_REDIS_URL``), the way ``infra.broker`` starts Tansu when ``KAFKA_BOOTSTRAP_SERVERS``
is unset. Data goes to a folder of the caller's (a temp dir) and nothing is saved to disk:
the online store is rebuilt by replaying the flow, so a throwaway Redis loses nothing.
``make system-deps`` (``infra/install-system-deps.sh``) installs ``redis-server``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.object_store import sigkill, terminate
from streams.launch import free_port


def redis_binary() -> str:
    """Path of ``redis-server``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run `make system-deps` (or "
                           "apt-get install redis-server), or set MARQUEE_REDIS_URL to a "
                           "running Redis")
    return binary


class RedisServer:
    """``redis-server`` on ``host:port`` with its working folder in ``data_dir``. With
    ``persist`` every write is in its append-only file before it is acknowledged (``appendfsync
    always``), so a SIGKILL loses nothing acknowledged; without, no snapshots and no
    append-only file. Has what ``infra.supervisor`` needs of a child.
    """

    def __init__(self, data_dir: Path, port: int | None = None,
                 log_path: Path | None = None, host: str = "127.0.0.1",
                 persist: bool = False) -> None:
        self.data_dir = data_dir
        self.host = host
        self.persist = persist
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://<host>:<port>/0``, the form ``MARQUEE_REDIS_URL`` takes."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it and wait until it accepts connections; a failed start leaves nothing
        running.
        """
        if self.alive():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        durability = (["--appendonly", "yes", "--appendfsync", "always"] if self.persist
                      else ["--appendonly", "no"])
        cmd = [redis_binary(), "--port", str(self.port), "--bind", self.host,
               "--dir", str(self.data_dir), "--save", "", *durability]
        if self.host != "127.0.0.1":
            # Without a password Redis answers only loopback clients unless told otherwise;
            # a host address is one a caller chose to serve other hosts on.
            cmd += ["--protected-mode", "no"]
        log = self.log_path.open("ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log:
                log.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.stop()
                raise RuntimeError(f"redis-server did not start on {self.host}:{self.port} "
                                   f"(exit code {code}; is the port in use?): {' '.join(cmd)}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """Our process answers on the port (not another server that holds it)."""
        import redis

        try:
            info = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5,
                               socket_connect_timeout=0.5).info("server")
        except redis.ConnectionError:
            return False
        return self.process is not None and info.get("process_id") == self.process.pid

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The process id, while it runs."""
        return [self.process.pid] if self.alive() and self.process else []

    def exit_code(self) -> int | None:
        """Its exit code, if it ended."""
        return self.process.poll() if self.process is not None else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        terminate(self.process)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        sigkill(self.process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def redis_for(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a usable Redis: ``url``, else ``MARQUEE_REDIS_URL`` when set, else a
    ``redis-server`` started here on a free port with its data in a temp dir (stopped and
    removed on exit).
    """
    if url is None:
        from feature_repo.store import FeatureSettings

        settings = FeatureSettings()  # MARQUEE_REDIS_URL, from the environment or marquee.env
        url = settings.redis_url if "redis_url" in settings.model_fields_set else None
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="marquee-redis-") as tmp, \
            RedisServer(Path(tmp)) as server:
        yield server.url
