"""A simulated audience: members of the synthetic world who ask the real service for a ranking
(``POST /v1/rank``), look at what it shows them and react to it with events that carry the
ranking's ``request_id``, sent to the real broker. Tooling for tests, benchmarks and demos;
the runtime never imports it.

**Who reacts.** A member is a user of ``infra.synthetic`` as their whole history left them:
latent genre tastes (moved by past satisfaction), the series they are in the middle of, the
titles they have seen. The service ranks them from the same history (the flow wrote it to the
online store), so a model that learned tastes and binges ranks what they want higher.

**How they react** (``react``, pure and seeded): every listed title is an impression; the
member looks down the list and examines slot *p* with probability ``examine_decay ** p``
(position bias); an examined title is clicked with its attraction (a base rate, plus the
member's affinity for its genre times the title's draw within the genre, as the synthetic
world picks titles; high for the next episode of a series in progress, low for a title
already seen); a click becomes a play, the play a completion with the probability the
synthetic world uses (liked genres are finished, others abandoned early), with watch time to
match. After ``max_plays`` plays the member stops looking. Time is compressed: a play's end is
reported seconds after it starts, with the full ``watch_seconds``, so outcomes stay inside the
flow's join window.

Everything is seeded: the same seed, members and lists give the same events, ids included.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.synthetic import GENRES, SyntheticWorld

if TYPE_CHECKING:
    from streams.config import KafkaSettings
    from streams.contract.catalogue import Title

DEVICES = {"evening_tv": "tv", "commuter": "phone", "mixed": "web"}
SURFACE = "home/top_picks"


@dataclass(frozen=True)
class Behaviour:
    """How members react to a list (probabilities)."""

    examine_decay: float = 0.85  # P(slot p is looked at) = examine_decay ** p, p from 0
    base: float = 0.02  # attraction of any unseen title
    taste: float = 0.5  # extra attraction at full genre affinity
    continuing: float = 0.7  # attraction of the next episode of a series in progress
    seen: float = 0.01  # attraction of a title already watched
    play_after_click: float = 0.85
    max_plays: int = 2


@dataclass(frozen=True)
class Member:
    """What a member's reactions depend on."""

    user_id: str
    device: str
    affinity: dict[str, float]  # genre -> taste weight / the strongest one, in (0, 1]
    appeal: dict[str, float]  # title -> its draw within its genre (``SyntheticWorld.appeal``)
    next_episodes: frozenset[str]  # the next episode of each series in progress
    seen: frozenset[str]


def members(world: SyntheticWorld, count: int | None = None) -> list[Member]:
    """The first ``count`` users of ``world`` (all by default) as their histories left them."""
    out = []
    appeal = {t.item_id: world.appeal(t.item_id) for t in world.catalogue}  # shared, read-only
    for index in range(world.config.n_users if count is None else count):
        user = world.settled_user(index)
        top = max(user.taste)
        # ``watching`` maps a series to the number of its last completed episode
        nxt = frozenset(f"{s}e{episode + 1:02d}" for s, episode in user.watching.items())
        out.append(Member(user.user_id, DEVICES[user.habit],
                          {g: w / top for g, w in zip(GENRES, user.taste, strict=True)},
                          appeal, nxt, frozenset(user.seen)))
    return out


def attraction(member: Member, title: Title, behaviour: Behaviour) -> float:
    """The chance that ``member``, having looked at ``title``, clicks it."""
    if title.item_id in member.next_episodes:
        return behaviour.continuing
    if title.item_id in member.seen:
        return behaviour.seen
    pull = member.affinity.get(title.genre, 0.0) * member.appeal.get(title.item_id, 0.0) ** 0.5
    return min(1.0, behaviour.base + behaviour.taste * pull)


def react(member: Member, items: Sequence[str], titles: dict[str, Title], rng: random.Random,
          behaviour: Behaviour = Behaviour(), now_ms: int = 0, request_id: str | None = None,
          event_prefix: str = "sim") -> list[dict[str, Any]]:
    """The events ``member`` produces on being shown ``items`` (best first): impressions of
    all, then clicks, plays and their ends for what attracted them.
    """
    base: dict[str, Any] = {"user_id": member.user_id, "device": member.device,
                            "surface": SURFACE}
    if request_id is not None:
        base["request_id"] = request_id
    events: list[dict[str, Any]] = []

    def emit(item: str, action: str, ts: int, slot: int, watch: float = 0.0) -> None:
        events.append({**base, "event_id": f"{event_prefix}-{len(events)}", "item_id": item,
                       "action": action, "ts": ts, "position": slot, "watch_seconds": watch})

    for slot, item in enumerate(items):
        emit(item, "impression", now_ms + slot * 20, slot)
    clock, plays = now_ms + 1_000, 0
    for slot, item in enumerate(items):
        if plays >= behaviour.max_plays:
            break
        title = titles.get(item)
        if title is None or rng.random() >= behaviour.examine_decay ** slot:
            continue
        if rng.random() >= attraction(member, title, behaviour):
            continue
        emit(item, "click", clock, slot)
        clock += 500
        if rng.random() >= behaviour.play_after_click:
            continue
        affinity = member.affinity.get(title.genre, 0.0)
        completes = item in member.next_episodes or rng.random() < 0.15 + 0.8 * affinity
        share = rng.uniform(0.92, 1.0) if completes else rng.uniform(0.02, 0.3)
        emit(item, "play", clock, slot)
        emit(item, "complete" if completes else "stop", clock + 2_000, slot,
             round(title.duration_s * share, 1))
        clock += 3_000
        plays += 1
    return events


@dataclass
class AudienceRun:
    """What a run sent and got (the simulator's own tally; verdicts come from the flow)."""

    requests: int = 0
    failed: int = 0
    events: int = 0
    rankings: Counter[str] = field(default_factory=Counter)  # by the answer's variants
    plays: Counter[str] = field(default_factory=Counter)  # by the played item's variant
    seconds: float = 0.0


class Audience:
    """Members who call the service at ``url`` and send their reactions to the broker."""

    def __init__(self, url: str, crowd: list[Member], titles: dict[str, Title],
                 behaviour: Behaviour = Behaviour(), seed: int = 0, k: int = 10) -> None:
        if not crowd:
            raise ValueError("an audience needs at least one member")
        self.url, self.crowd, self.titles = url.rstrip("/"), crowd, titles
        self.behaviour, self.seed, self.k = behaviour, seed, k

    def member(self, n: int) -> Member:
        """Who makes request ``n`` (a function of the seed and ``n``)."""
        return self.crowd[random.Random(f"{self.seed}:who:{n}").randrange(len(self.crowd))]

    def request(self, n: int, client: Any) -> tuple[dict[str, Any] | None, list[dict]]:
        """Request ``n``: the service's answer (None if it failed) and the member's events."""
        import httpx

        member = self.member(n)
        try:
            reply = client.post(f"{self.url}/v1/rank",
                                json={"user_id": member.user_id, "k": self.k})
        except httpx.TransportError:  # counted as failed: the caller says how many
            return None, []
        if reply.status_code != 200:
            return None, []
        answer = reply.json()
        items = [i["item_id"] for i in answer["items"]]
        rng = random.Random(f"{self.seed}:react:{n}")
        events = react(member, items, self.titles, rng, self.behaviour,
                       now_ms=int(time.time() * 1000), request_id=answer["request_id"],
                       event_prefix=f"sim{self.seed}-{n}")
        return answer, events

    def run(self, requests: int, kafka: KafkaSettings, rate: float | None = None,
            concurrency: int = 4, start: int = 0, batch: int = 200) -> AudienceRun:
        """Make ``requests`` requests (numbered from ``start``), at most ``rate`` per second,
        ``concurrency`` at a time; send the events to ``kafka``'s events topic as they come.
        """
        import httpx

        from streams.produce import produce_events

        out, pending = AudienceRun(), []
        began = time.monotonic()

        def one(n: int) -> tuple[dict[str, Any] | None, list[dict]]:
            if rate:
                delay = began + (n - start) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            return self.request(n, client)

        def flush() -> None:
            if pending:
                sent = produce_events(pending, kafka, progress=False)
                if sent.undelivered:
                    raise RuntimeError(f"{sent.undelivered} simulated events not delivered")
                out.events += len(pending)
                pending.clear()

        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(concurrency) as pool:
            for answer, events in pool.map(one, range(start, start + requests)):
                out.requests += 1
                if answer is None:
                    out.failed += 1
                    continue
                out.rankings["+".join(answer.get("variants") or [])] += 1
                team = {i["item_id"]: i.get("variant") or "" for i in answer["items"]}
                out.plays.update(team[e["item_id"]] for e in events if e["action"] == "play")
                pending.extend(events)
                if len(pending) >= batch * self.k:
                    flush()
            flush()
        out.seconds = time.monotonic() - began
        return out
