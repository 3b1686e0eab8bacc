"""The streaming tokenizer: a user's interaction events -> event tokens, one event at a time.

``UserTokenizer`` holds back each event for ``max_lateness_ms`` of the user's event time so
that late and out-of-order events within that bound are placed where they belong; later ones
are refused with a reason, as are duplicate event ids. Events then go through the merge rules
of ``streams.contract.merge``. ``preview`` renders the still-open groups as provisional tokens,
which is what the online store shows between two final releases. ``tokenize_events`` (whole
histories) and ``tokenize_session`` (the service's in-session tail) use the same rules.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams.contract.events import InteractionEvent
from streams.contract.merge import TokenizerConfig, TokenMachine
from streams.contract.tokens import (
    FACETS,
    Token,
    Vocab,
)

WIDTH = len(FACETS)  # ints per token in ``UserTokenizer.flat``


class LateEvent(ValueError):
    """An event too old to place: the user's stream moved on by more than the lateness bound."""


class DuplicateEvent(ValueError):
    """An event whose ``event_id`` this user's stream has already accepted."""


@dataclass
class UserTokenizer:
    """One user's tokenizer state: the merge machine, a reorder buffer and recent tokens.

    Picklable, so the dataflow snapshots it for recovery. ``offer`` returns the tokens that
    became final and refuses late or duplicate events with a reason (``push`` raises it).
    """

    user_id: str
    vocab: Vocab
    config: TokenizerConfig = field(default_factory=TokenizerConfig)
    durations: Mapping[str, int] | None = None
    grow_vocab: bool = True
    last_ts: int | None = None  # ts of the user's last stored token, for the first gap

    def __post_init__(self) -> None:
        self.machine = TokenMachine(self.user_id, self.vocab, self.config, self.durations,
                                    self.grow_vocab, self.last_ts)
        self.buffer: list[tuple[int, int, InteractionEvent]] = []  # heap (ts, arrival, event)
        self.arrivals = 0
        self.max_ts: int | None = None
        self.seen: dict[str, int] = {}  # event_id -> ts, for the dedupe window
        self.prune_at = 64  # prune ``seen`` when it grows past this (amortized O(1))
        # Facet ids of the newest final tokens (what the online row starts with), token
        # after token in one flat int array (``FACETS`` order within a token): 32 bytes a
        # token, a row's columns are strided slices, and a snapshot is its bytes.
        self.flat = array("i")
        self.last_token_ts: int | None = None  # ts of the newest final token

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["vocab"] = None  # shared and persisted on its own; ``attach`` gives it back
        state["durations"] = None
        state["recent"] = state.pop("flat").tobytes()  # the layout snapshots always had
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        flat = array("i")
        flat.frombytes(state.pop("recent"))  # type: ignore[arg-type]
        self.__dict__.update(state)
        self.flat = flat

    @property
    def recent(self) -> list[tuple[int, ...]]:
        """The newest final tokens' facet ids, oldest first, one tuple per token."""
        return list(zip(*self.columns()))

    def columns(self) -> list[list[int]]:
        """The newest final tokens' facet ids, one list per facet (``FACETS`` order)."""
        flat = self.flat
        return [flat[i::WIDTH].tolist() for i in range(WIDTH)]

    def attach(self, vocab: Vocab, durations: Mapping[str, int] | None) -> None:
        """Give an unpickled tokenizer its shared vocabulary and catalogue durations back."""
        self.vocab = self.machine.vocab = vocab
        self.durations = durations
        self.machine.durations = durations or {}

    def check(self, event: InteractionEvent) -> str | None:
        """Why ``event`` would be refused (``"duplicate"`` or ``"late"``), or None."""
        if event.event_id in self.seen:
            return "duplicate"
        if self.max_ts is not None and event.ts < self.max_ts - self.config.max_lateness_ms:
            return "late"
        return None

    def offer(self, event: InteractionEvent) -> tuple[list[Token], str | None]:
        """Accept ``event`` and return ``(final tokens, None)``, or ``([], reason)``."""
        ts, event_id, max_ts = event.ts, event.event_id, self.max_ts
        seen = self.seen
        if event_id in seen:  # ``check``, inline (once per event)
            return [], "duplicate"
        if max_ts is not None and ts < max_ts - self.config.max_lateness_ms:
            return [], "late"
        seen[event_id] = ts
        buffer = self.buffer
        heapq.heappush(buffer, (ts, self.arrivals, event))
        self.arrivals += 1
        if max_ts is None or ts > max_ts:
            self.max_ts = max_ts = ts
            if len(seen) > self.prune_at:
                self._forget(max_ts - self.config.dedupe_window_ms)
                self.prune_at = max(64, 2 * len(self.seen))
        if len(seen) > self.config.max_dedupe_ids:
            self._forget_oldest(self.config.max_dedupe_ids // 2)
        horizon = max_ts - self.config.max_lateness_ms
        if len(buffer) > self.config.max_held_events:  # a burst at one instant: bounded
            horizon = max(horizon, buffer[0][0])
        if buffer[0][0] > horizon:
            return [], None
        out: list[Token] = []
        feed = self.machine.feed
        while buffer and buffer[0][0] <= horizon:
            released = feed(heapq.heappop(buffer)[2])
            if released:
                out.extend(released)
        if out:
            self._keep(out)
        return out, None

    def push(self, event: InteractionEvent) -> list[Token]:
        """Like ``offer`` but raises ``LateEvent``/``DuplicateEvent`` for refused events."""
        tokens, reason = self.offer(event)
        if reason == "late":
            raise LateEvent(f"event {event.event_id} is more than "
                            f"{self.config.max_lateness_ms} ms older than user "
                            f"{self.user_id}'s newest event")
        if reason == "duplicate":
            raise DuplicateEvent(f"event {event.event_id} was already accepted")
        return tokens

    def flush(self) -> list[Token]:
        """End of stream (or of an idle user): place every held event and close all groups."""
        out: list[Token] = []
        while self.buffer:
            out.extend(self.machine.feed(heapq.heappop(self.buffer)[2]))
        out.extend(self.machine.end())
        self._keep(out)
        return out

    def _keep(self, tokens: list[Token]) -> None:
        if not tokens:
            return
        flat = self.flat
        for t in tokens:
            flat.extend((t.item, t.action, t.gap, t.hour, t.dow, t.device, t.surface,
                         t.duration))
        excess = len(flat) - WIDTH * self.config.recent_tokens
        if excess > 0:
            del flat[:excess]
        self.last_token_ts = tokens[-1].ts

    def provisional(self) -> list[Token]:
        """Held events and open groups rendered as provisional tokens; the state is left as
        it was (the rendering runs on a clone of the machine).
        """
        released, machine = self._held_released()
        return released + machine.render_open()

    def provisional_facets(self) -> tuple[list[tuple[int, ...]], int | None]:
        """``provisional()`` as facet ids (``FACETS`` order) and the newest one's ts (None:
        nothing provisional), without building the open groups' tokens: what a row needs.
        """
        released, machine = self._held_released()
        facets, last_ts = machine.render_open_facets()
        if not released:
            return facets, last_ts
        return ([t.facet_ids() for t in released] + facets,
                last_ts if facets else released[-1].ts)

    def _held_released(self) -> tuple[list[Token], TokenMachine]:
        """What the held events release when fed in order to a clone of the machine, and that
        clone (the machine itself when nothing is held: nothing then changes it).
        """
        if not self.buffer:
            return [], self.machine
        probe = self.machine.clone()
        out: list[Token] = []
        for _, _, ev in sorted(self.buffer, key=lambda entry: entry[:2]):
            out.extend(probe.feed(ev))
        return out, probe

    def preview(self) -> tuple[list[tuple[int, ...]], int | None]:
        """What the online store shows for this user now: the facet ids (``FACETS`` order)
        of the newest ``recent_tokens`` tokens, final then provisional, and the newest
        token's ts.
        """
        columns, last_ts = self.preview_columns()
        return list(zip(*columns)), last_ts

    def preview_columns(self) -> tuple[list[list[int]], int | None]:
        """``preview`` as one list per facet (``FACETS`` order): the online row's columns."""
        provisional, last_ts = self.provisional_facets()
        columns = self.columns()
        if not provisional:
            return columns, self.last_token_ts
        for column, values in zip(columns, zip(*provisional), strict=True):
            column.extend(values)
        keep = self.config.recent_tokens
        if len(columns[0]) > keep:
            columns = [column[-keep:] for column in columns]
        return columns, last_ts

    def _forget(self, before: int) -> None:
        self.seen = {k: ts for k, ts in self.seen.items() if ts >= before}

    def _forget_oldest(self, keep: int) -> None:
        """Keep the ``keep`` newest ids (by event time, then arrival)."""
        newest = sorted(enumerate(self.seen.items()), key=lambda e: (e[1][1], e[0]))[-keep:]
        self.seen = {k: ts for _, (k, ts) in sorted(newest)}


def tokenize_events(events: Iterable[InteractionEvent], vocab: Vocab, grow_vocab: bool = True,
                    config: TokenizerConfig | None = None,
                    durations: Mapping[str, int] | None = None) -> list[Token]:
    """Tokenize whole histories (no Kafka): events grouped by user, each user's sorted by
    time, every group closed at the end. Tokens come sorted by (user_id, ts).
    """
    config = config or TokenizerConfig()
    by_user: dict[str, list[InteractionEvent]] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, []).append(ev)
    out: list[Token] = []
    for user_id in sorted(by_user):
        machine = TokenMachine(user_id, vocab, config, durations, grow_vocab)
        seen: set[str] = set()
        for ev in sorted(by_user[user_id], key=lambda e: e.ts):
            if ev.event_id not in seen:
                seen.add(ev.event_id)
                out.extend(machine.feed(ev))
        out.extend(machine.end())
    return out


def tokenize_session(events: list[InteractionEvent], vocab: Vocab, last_ts: int | None,
                     grow_vocab: bool = False, config: TokenizerConfig | None = None,
                     durations: Mapping[str, int] | None = None) -> list[Token]:
    """A user's in-session events not yet in the store, as the store would show them: final
    tokens then the open groups rendered provisionally. ``last_ts`` (the stored history's
    newest token) gives the first token's gap; the vocabulary is read-only by default.
    """
    if not events:
        return []
    config = config or TokenizerConfig()
    machine = TokenMachine(events[0].user_id, vocab, config, durations, grow_vocab, last_ts)
    out: list[Token] = []
    for ev in sorted(events, key=lambda e: e.ts):
        out.extend(machine.feed(ev))
    return out + machine.render_open()
