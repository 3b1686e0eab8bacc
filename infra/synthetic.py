"""A deterministic synthetic streaming-service world for the demo, the tests and the benchmarks.

What a sequence model can learn here and a popularity baseline cannot:

1. **Binges.** Series are watched episode by episode: after episode *e* of a series the next
   play is usually episode *e+1* (autoplay on a TV, "continue watching" elsewhere). The next
   title is a function of the last one, not of global popularity.
2. **Tastes.** Each user has a sparse latent taste over genres; most picks come from those
   genres, so co-watched titles cluster per user.
3. **Satisfaction.** A title in a liked genre is usually completed; one outside it is
   abandoned after a few minutes, and an abandon lowers that genre's weight for the next picks.
   Only a model that sees the action/duration facets of a token can use this.
4. **Context.** Devices have habits: TVs in the evening pick long titles (movies), phones on the
   commute pick short episodes. Device and hour of the last tokens predict the kind of the next.
5. **Cold start.** About a tenth of the catalogue is released mid-stream; users whose taste
   matches a new title's genre pick it up soon after release, so metadata (genre, kind, release
   age) predicts interest in titles a model never saw during training.

Everything is derived from ``seed``: the same config yields the same events, ids included,
so replays are detectable as duplicates.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.contract.catalogue import Title, write_catalogue
from streams.contract.tokens import DAY_MS, HOUR_MS, KNOWN_VALUES

if TYPE_CHECKING:
    from models.data import Corpus

GENRES = (
    "drama", "comedy", "thriller", "documentary", "animation", "scifi",
    "romance", "horror", "crime", "family", "action", "reality",
)
SURFACES = tuple(s for s in KNOWN_VALUES["surface"] if s != "search")  # rows a title shows in


@dataclass(frozen=True)
class WorldConfig:
    """Size and shape of the synthetic world; defaults make ~1M events over 30 days."""

    seed: int = 7
    n_users: int = 2000
    n_movies: int = 400
    n_series: int = 60
    episodes_per_series: int = 8
    days: int = 30
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    new_title_share: float = 0.1
    sessions_per_day: float = 0.8
    row_size: int = 5


@dataclass
class _User:
    index: int
    user_id: str
    taste: list[float]
    habit: str  # evening_tv | commuter | mixed
    rng: random.Random
    watching: dict[str, int] = field(default_factory=dict)  # series_id -> next episode index
    seen: set[str] = field(default_factory=set)


class SyntheticWorld:
    """The catalogue, the users and an event stream in timestamp order."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.catalogue = self._make_catalogue()
        self._by_genre: dict[str, list[Title]] = {g: [] for g in GENRES}
        self._series: dict[str, list[Title]] = {}
        for title in self.catalogue:
            if title.kind == "episode":
                self._series.setdefault(title.series_id, []).append(title)
                if title.episode == 1:
                    self._by_genre[title.genre].append(title)
            else:
                self._by_genre[title.genre].append(title)
        # Zipf-like popularity weights inside each genre: the head is watched by many.
        self._cum_weights = {
            g: list(itertools.accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(len(titles))))
            for g, titles in self._by_genre.items()
        }
        self._appeal: dict[str, float] | None = None

    def appeal(self, item_id: str) -> float:
        """How much a title draws the users who like its genre, relative to the genre's most
        drawn one (1.0): its share of the genre's picks here (a series counts as its first
        episode; a later episode, reached out of order, draws little).
        """
        if self._appeal is None:
            self._appeal = {}
            for titles, cum in ((self._by_genre[g], self._cum_weights[g]) for g in GENRES):
                weights = [b - a for a, b in zip([0.0, *cum], cum, strict=False)]
                for t, w in zip(titles, weights, strict=True):
                    self._appeal[t.item_id] = w / weights[0]
        return self._appeal.get(item_id, 0.05)

    # ---- catalogue -----------------------------------------------------------------------
    def _make_catalogue(self) -> list[Title]:
        cfg = self.config
        rng = random.Random(cfg.seed)
        horizon = cfg.days * DAY_MS
        titles: list[Title] = []

        def release() -> int:
            if rng.random() < cfg.new_title_share:
                return cfg.start_ms + int(rng.uniform(0.2, 0.9) * horizon)
            return cfg.start_ms - int(rng.expovariate(1 / 400) * DAY_MS) - DAY_MS

        for i in range(cfg.n_movies):
            titles.append(Title(f"m{i:05d}", rng.choice(GENRES), "movie", release(),
                                int(rng.uniform(80, 150) * 60)))
        for s in range(cfg.n_series):
            genre, rel = rng.choice(GENRES), release()
            minutes = rng.choice((22, 25, 30, 45, 55))
            for e in range(1, cfg.episodes_per_series + 1):
                titles.append(Title(f"s{s:04d}e{e:02d}", genre, "episode",
                                    rel + (e - 1) * DAY_MS // 4, minutes * 60, f"s{s:04d}", e))
        return titles

    def write_catalogue(self, path: Path) -> Path:
        """Write the catalogue as JSON lines for the flow, training and the service."""
        return write_catalogue(path, self.catalogue)

    # ---- users ---------------------------------------------------------------------------
    def _make_user(self, index: int) -> _User:
        rng = random.Random(self.config.seed * 1_000_003 + index)
        liked = rng.sample(range(len(GENRES)), k=rng.choice((1, 2, 2, 3)))
        taste = [0.04] * len(GENRES)
        for rank, g in enumerate(liked):
            taste[g] += 1.0 / (rank + 1)
        habit = rng.choices(("evening_tv", "commuter", "mixed"), (0.45, 0.3, 0.25))[0]
        return _User(index, f"u{index:06d}", taste, habit, rng)

    def settled_user(self, index: int) -> _User:
        """User ``index`` as their whole history left them (tastes moved by satisfaction,
        series in progress, titles seen): who the simulated audience (``infra.audience``) is.
        """
        user = self._make_user(index)
        for _ in self._user_events(user):
            pass
        return user

    def events(self, limit: int | None = None,
               per_user: int | None = None) -> Iterator[dict[str, Any]]:
        """All users' events merged in timestamp order (each user's stream is ordered).

        ``per_user`` keeps each user's first events only: a stream with every user in it
        (``limit`` alone cuts the timeline, and with it the users whose first session comes
        later). A user's events do not depend on the other users, so the first ``k`` users'
        events are the same in every world with at least ``k`` users.
        """
        streams = (itertools.islice(self._user_events(self._make_user(i)), per_user)
                   for i in range(self.config.n_users))
        merged = heapq.merge(*streams, key=lambda ev: ev["ts"])
        for count, event in enumerate(merged):
            if limit is not None and count >= limit:
                return
            yield event

    def _session_start(self, user: _User, day_start: int) -> tuple[int, str]:
        rng = user.rng
        habit = user.habit if user.habit != "mixed" else rng.choice(("evening_tv", "commuter"))
        if habit == "evening_tv" and rng.random() < 0.8:
            return day_start + int(rng.uniform(19, 23.5) * HOUR_MS), "tv"
        if habit == "commuter" and rng.random() < 0.8:
            hour = rng.choice((rng.uniform(7, 9), rng.uniform(17, 19)))
            return day_start + int(hour * HOUR_MS), "phone"
        return day_start + int(rng.uniform(8, 23) * HOUR_MS), rng.choice(("tablet", "web", "tv"))

    def _user_events(self, user: _User) -> Iterator[dict[str, Any]]:
        cfg, rng = self.config, user.rng
        seq, clock = 0, 0
        for day in range(cfg.days):
            n_sessions = _poisson(rng, cfg.sessions_per_day)
            starts = sorted(self._session_start(user, cfg.start_ms + day * DAY_MS)
                            for _ in range(n_sessions))
            for start, device in starts:
                start = max(start, clock + 30 * 60_000)  # sessions never overlap
                session_id = f"{user.user_id}-{day}-{start % 100000}"
                session = self._session(user, start, device)
                while True:
                    try:
                        ev = next(session)
                    except StopIteration as end:
                        clock = end.value
                        break
                    ev["event_id"] = f"e{cfg.seed}-{user.index}-{seq}"
                    ev["session_id"] = session_id
                    seq += 1
                    yield ev

    # ---- one session ---------------------------------------------------------------------
    def _pick(self, user: _User, now: int, device: str) -> tuple[Title, str]:
        """The next title and the surface it was found on."""
        rng = user.rng
        in_progress = [s for s, e in user.watching.items()
                       if self._series[s][e].release_ms <= now]
        if in_progress and rng.random() < (0.75 if device in ("phone", "tv") else 0.5):
            series = max(in_progress, key=lambda s: (user.watching[s], s))
            return self._series[series][user.watching[series]], "home/continue_watching"
        for _ in range(20):
            genre = rng.choices(GENRES, user.taste)[0]
            titles, weights = self._by_genre[genre], self._cum_weights[genre]
            if not titles:
                continue
            title = rng.choices(titles, cum_weights=weights)[0]
            if title.release_ms > now or title.item_id in user.seen:
                fresh = [t for t in titles if now - 14 * DAY_MS < t.release_ms <= now
                         and t.item_id not in user.seen]
                if not fresh:
                    continue
                return rng.choice(fresh), "home/new_releases"
            short = title.duration_s < 3600
            if device == "phone" and not short and rng.random() < 0.7:
                continue  # commuters skip long titles
            if device == "tv" and short and title.kind == "episode" and rng.random() < 0.3:
                continue
            surface = rng.choice(("home/top_picks", "home/trending", "home/because_you_watched"))
            if now - title.release_ms < 14 * DAY_MS:
                surface = "home/new_releases"
            return title, surface
        title = rng.choice([t for t in self.catalogue if t.release_ms <= now and t.episode <= 1])
        return title, "home/trending"

    def _session(self, user: _User, start: int, device: str
                 ) -> Generator[dict[str, Any], None, int]:
        rng = user.rng
        now = start
        base = {"user_id": user.user_id, "device": device}
        n_plays = 1 + _poisson(rng, 2.0 if device == "tv" else 1.2)
        for _ in range(n_plays):
            title, surface = self._pick(user, now, device)
            if rng.random() < 0.08:  # a search first: the title is found on the results surface
                yield {**base, "item_id": "", "action": "search", "ts": now,
                       "surface": "search", "position": 0, "watch_seconds": 0.0}
                now += int(rng.uniform(4, 15) * 1000)
                surface = "search/results"
            position = (0 if surface == "home/continue_watching"
                        else rng.randrange(self.config.row_size))
            if surface != "player/autoplay":
                row = self._row(user, title, position, now)
                for slot, shown in enumerate(row):
                    yield {**base, "item_id": shown.item_id, "action": "impression", "ts": now,
                           "surface": surface, "position": slot, "watch_seconds": 0.0}
                    now += rng.randint(40, 400)
                if rng.random() < 0.05:  # an accidental click on a neighbour, no play
                    other = row[(position + 1) % len(row)]
                    yield {**base, "item_id": other.item_id, "action": "click", "ts": now,
                           "surface": surface, "position": (position + 1) % len(row),
                           "watch_seconds": 0.0}
                    now += int(rng.uniform(1, 4) * 1000)
                now += int(rng.uniform(1, 8) * 1000)
                yield {**base, "item_id": title.item_id, "action": "click", "ts": now,
                       "surface": surface, "position": position, "watch_seconds": 0.0}
                now += int(rng.uniform(1, 3) * 1000)
            now = yield from self._watch(user, title, base, surface, position, now)
            # Binge: autoplay the next episode on a TV.
            while (title.kind == "episode" and device == "tv" and rng.random() < 0.6
                   and user.watching.get(title.series_id) == title.episode):
                nxt = self._series[title.series_id][title.episode]
                if nxt.release_ms > now:
                    break
                title, surface, position = nxt, "player/autoplay", 0
                now = yield from self._watch(user, title, base, surface, position, now + 5000)
            now += int(rng.uniform(10, 120) * 1000)
        return now

    def _row(self, user: _User, chosen: Title, position: int, now: int) -> list[Title]:
        rng, size = user.rng, self.config.row_size
        row = []
        while len(row) < size - 1:
            genre = rng.choice(GENRES)
            titles = self._by_genre[genre]
            if titles:
                t = rng.choices(titles, cum_weights=self._cum_weights[genre])[0]
                if t.release_ms <= now and t.item_id != chosen.item_id:
                    row.append(t)
        row.insert(min(position, len(row)), chosen)
        return row

    def _watch(self, user: _User, title: Title, base: dict[str, Any], surface: str,
               position: int, now: int) -> Generator[dict[str, Any], None, int]:
        """Play → (pause, resume)* → stop | complete; returns the clock after it."""
        rng = user.rng
        g = GENRES.index(title.genre)
        affinity = user.taste[g] / max(user.taste)
        completes = rng.random() < 0.15 + 0.8 * affinity
        total = title.duration_s * (rng.uniform(0.92, 1.0) if completes else rng.uniform(0.02, 0.3))
        common = {**base, "item_id": title.item_id, "surface": surface, "position": position}
        yield {**common, "action": "play", "ts": now, "watch_seconds": 0.0}
        watched = 0.0
        while total - watched > 120 and rng.random() < 0.25:
            chunk = rng.uniform(60, total - watched - 60)
            watched += chunk
            now += int(chunk * 1000)
            yield {**common, "action": "pause", "ts": now, "watch_seconds": round(chunk, 1)}
            now += int(rng.uniform(5, 300) * 1000)
            yield {**common, "action": "resume", "ts": now, "watch_seconds": 0.0}
        rest = total - watched
        now += int(rest * 1000)
        action = "complete" if completes else "stop"
        yield {**common, "action": action, "ts": now, "watch_seconds": round(rest, 1)}
        user.seen.add(title.item_id)
        if completes:
            user.taste[g] *= 1.05
            if title.kind == "episode":
                if title.episode < len(self._series[title.series_id]):
                    user.watching[title.series_id] = title.episode
                else:
                    user.watching.pop(title.series_id, None)
        else:
            user.taste[g] *= 0.7
            user.watching.pop(title.series_id, None)
        if rng.random() < 0.1:
            now += 2000
            stars = max(1, min(5, round(1 + 4 * affinity + rng.gauss(0, 0.7))))
            yield {**common, "action": "rate", "ts": now, "watch_seconds": 0.0,
                   "value": float(stars)}
        elif rng.random() < 0.05:
            now += 2000
            yield {**common, "action": "add_to_list", "ts": now, "watch_seconds": 0.0}
        return now + 1000


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler; lam is small here."""
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def synthetic_corpus(n_users: int = 2000, seed: int = 7, days: int = 30,
                     cold_share: float = 0.5) -> Corpus:
    """The world tokenized in memory (no Kafka) as a training corpus; ``cold_share`` of the
    titles released mid-stream are held out of training targets to measure cold start.
    """
    from models.data import corpus_from_events

    world = SyntheticWorld(WorldConfig(seed=seed, n_users=n_users, days=days))
    corpus = corpus_from_events(world.events(), {t.item_id: t for t in world.catalogue})
    new = sorted(t.item_id for t in world.catalogue if t.release_ms > world.config.start_ms)
    held = random.Random(seed).sample(new, int(len(new) * cold_share))
    corpus.cold_items = {corpus.vocab.lookup("item", i) for i in held} - {1}
    return corpus
