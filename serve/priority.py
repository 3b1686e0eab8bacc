"""The CPU priority a ranking replica takes once it can serve.

Ray starts every worker process at niceness 15 (its ``worker_niceness``), so a replica's
whole life, booting and serving, runs behind anything else on the host at 0: the admission
front, the flow, the broker, a load generator. When a replica dies, its replacement boots
(Python, Ray, the model: seconds of a core) at the same 15 as the replica that survived, and
on a small host takes half of its CPU exactly when it is carrying the whole load. A replica
that is ready lowers its own niceness to ``niceness`` (0 by default): serving replicas then
run at the host's normal priority, booting ones stay at 15 and use what serving leaves idle.

Lowering niceness needs ``CAP_SYS_NICE`` (root has it; a pod adds it with
``securityContext.capabilities.add: ["SYS_NICE"]``) or an ``RLIMIT_NICE`` that allows it;
without either the replica stays where Ray put it and says so once.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def take(niceness: int | None) -> int:
    """Set this process's niceness to ``niceness`` (None: leave it); returns the niceness the
    process has afterwards. Never raises: a replica that cannot change it serves as it is.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness is None or niceness == current:
        return current
    try:
        for tid in threads():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
            except ProcessLookupError:
                pass  # the thread ended meanwhile
    except OSError as exc:
        log.warning("replica stays at niceness %d, not %d (%s): give the process CAP_SYS_NICE "
                    "(or RLIMIT_NICE), or set MARQUEE_REPLICA_NICENESS to %d or more to "
                    "silence this", current, niceness, exc.strerror, current)
        return current
    return os.getpriority(os.PRIO_PROCESS, 0)


def threads() -> list[int]:
    """The thread ids of this process: Linux applies a niceness to one thread (the id given), not
    to the process, and a replica runs Ray's, gRPC's and ONNX Runtime's threads beside its
    event loop's. Elsewhere, the process itself.
    """
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]
