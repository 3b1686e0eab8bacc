"""Which ranking replicas are alive, and their processes: what ``marquee up`` prints, and what
the fault benchmark and the replica-kill test pick from.

Read from Ray's GCS actor table (``ray._private.state``): the public state API
(``ray.util.state.list_actors``) asks the dashboard, which ``serve.app.init_ray`` leaves off
so that it opens no port.
"""

from __future__ import annotations

from dataclasses import dataclass

APP = "marquee"
DEPLOYMENT = "RankingService"


@dataclass(frozen=True)
class Replica:
    """One replica actor: its Ray ids, its worker process and when Ray marked it alive."""

    actor_id: str
    name: str
    pid: int
    alive: bool
    started_s: float  # Unix time, s; when the actor process finished creation (GCS)
    node_ip: str = ""  # the address of the Ray node it runs on


def class_name(app: str = APP, deployment: str = DEPLOYMENT) -> str:
    """The Ray actor class name of a deployment's replicas (also their process title)."""
    return f"ServeReplica:{app}:{deployment}"


def replicas(app: str = APP, deployment: str = DEPLOYMENT,
             alive_only: bool = True) -> list[Replica]:
    """The replica actors of ``app``/``deployment``, oldest first."""
    from ray._private import state

    wanted = class_name(app, deployment)
    found = [Replica(actor_id=aid, name=info.get("Name") or "", pid=int(info.get("Pid") or 0),
                     alive=info.get("State") == "ALIVE",
                     started_s=(info.get("StartTime") or 0) / 1000,
                     node_ip=(info.get("Address") or {}).get("IPAddress") or "")
             for aid, info in state.actors().items() if info.get("ActorClassName") == wanted]
    return sorted((r for r in found if r.alive or not alive_only), key=lambda r: r.started_s)


def running(app: str = APP, deployment: str = DEPLOYMENT) -> int:
    """Replicas Serve routes to (state RUNNING: initialised and passing health checks)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get("RUNNING", 0))
