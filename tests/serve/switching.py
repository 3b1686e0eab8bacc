"""A model switch under load, as the rollover, experiment and registry tests make one: two
clients ranking while the switch happens; nothing dropped, no flapping back.
"""

from __future__ import annotations

import threading
import time

import httpx


def _load(url: str, user: str, seen: list[str], errors: list[str],
          stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post(f"{url}/v1/rank", json={"user_id": user, "k": 5})
            except httpx.HTTPError as exc:  # a dropped request: say so, don't kill the thread
                errors.append(repr(exc))
                continue
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
            else:
                seen.append(r.json()["model_version"])


def switch_under_load(url: str, user: str, change, want: str, warm_s: float = 0.5,  # noqa: ANN001
                      settle_s: float = 0.3) -> list[list[str]]:
    """Run ``change()`` under load from two clients; each client's versions, once both see
    ``want``; asserts nothing was dropped.
    """
    per_client: list[list[str]] = [[], []]
    errors: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(url, user, seen, errors, stop))
               for seen in per_client]
    for w in workers:
        w.start()
    time.sleep(warm_s)
    change()
    deadline = time.time() + 60
    while time.time() < deadline and not all(s and s[-1] == want for s in per_client):
        time.sleep(0.2)
    time.sleep(settle_s)
    stop.set()
    for w in workers:
        w.join()
    assert not errors
    for seen in per_client:
        assert seen[-1] == want
        assert set(seen[seen.index(want):]) == {want}  # no flapping back
    return per_client
