"""Files that several processes share: a lock to take turns, and writes readers never see half
done. The flow's members, the service and the tools open the same data folder at once.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def replace_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data``: written beside it, then renamed over it in one step, so a
    reader sees the old content or the new, never a part.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (what left a file, a folder, a namespace may still be
    using it).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True
