"""The merge rules: one user's events, in order, -> event tokens (``TokenMachine``).

Plain Python, no Bytewax: the dataflow, the model's data builder and the service all run them
(through ``streams.contract.tokenizer``), so the three agree on every token. The rules (all
windows in ``TokenizerConfig``):

1. **Sessions.** An event starts a new session when its ``session_id`` differs from the
   previous event's (both set) or when more than ``session_gap_ms`` passed since it
   (``session_gap_ms + max_play_ms`` while a watch group is open: watching is not idleness).
   Nothing merges across sessions; the first token of a session has ``session_start``.
2. **Watching.** play/pause/resume/stop/complete on the same item in one session are one
   token. A group is closed by a stop/complete of that item, by a play of another item, or
   by the session's end. Its action is ``complete`` when closed by a complete, ``abandon``
   when less than ``abandon_completion`` of the title (or, duration unknown, less than
   ``abandon_seconds``) was watched, else ``watch``. It carries the summed watch seconds and
   the completion ratio (watched / title duration, 0 when unknown).
3. **Impressions.** Impressions of the same item on the same surface within
   ``impression_window_ms`` of the group's first one collapse into one token (``n_events``
   counts them). An impression is *accidental* when the user's next event that is not an
   impression on that surface came less than ``min_impression_ms`` later (scrolled past); a
   group is accidental when all its impressions are. The session's last row counts as seen.
4. **Clicks.** A click is accidental unless a play of the same item follows within
   ``click_play_window_ms`` in the same session.
5. Accidental tokens get ``weight = accidental_weight``; at 0 (the default) they are dropped.
   rate, add_to_list and search are single-event tokens.

Tokens are released in timestamp order once final, so ``gap`` (time since the previous
released token) and ``session_start`` never change after release.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from streams.contract.events import Action, InteractionEvent
from streams.contract.tokens import (
    MAX_SEQ,
    UNKNOWN,
    Token,
    Vocab,
    dow_id,
    duration_bucket,
    gap_bucket,
    hour_id,
)

WATCH_ACTIONS = frozenset({Action.PLAY, Action.PAUSE, Action.RESUME, Action.STOP, Action.COMPLETE})


@dataclass(frozen=True)
class TokenizerConfig:
    """The merge rules' knobs; the defaults suit a streaming service's UI."""

    session_gap_ms: int = 30 * 60_000
    max_play_ms: int = 4 * 3_600_000  # extra idle time allowed while a watch group is open
    impression_window_ms: int = 60_000
    min_impression_ms: int = 1_000
    click_play_window_ms: int = 60_000
    accidental_weight: float = 0.0  # 0 drops accidental tokens, (0, 1) down-weights them
    abandon_completion: float = 0.5
    abandon_seconds: float = 600.0  # used when the title's duration is unknown
    max_lateness_ms: int = 10_000  # per user event time; later events are refused
    dedupe_window_ms: int = 3_600_000  # event ids remembered this long (per user event time)
    # Event time is the producer's: a burst of events at one instant would be held (reorder
    # buffer) and remembered (dedupe) without end. These bound a user's state in count too.
    max_held_events: int = 1_000  # past this, the oldest held event is placed at once
    max_dedupe_ids: int = 4_096  # past this, the oldest ids are forgotten
    recent_tokens: int = MAX_SEQ

    def __post_init__(self) -> None:
        if not 0.0 <= self.accidental_weight <= 1.0:
            raise ValueError("accidental_weight must be in [0, 1] (0 drops accidental tokens)")
        for name in ("session_gap_ms", "max_play_ms", "impression_window_ms", "min_impression_ms",
                     "click_play_window_ms", "max_lateness_ms", "dedupe_window_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 milliseconds")
        if self.dedupe_window_ms < self.max_lateness_ms:
            raise ValueError("dedupe_window_ms must be >= max_lateness_ms, or a late duplicate "
                             "could be counted twice")


_TOKEN_NEW = object.__new__


def _new_token(fields: dict[str, object]) -> Token:
    """``Token(**fields)`` without the frozen dataclass ``__init__`` (17 ``object.__setattr__``
    calls, ~5x the cost): the same instance dict, so equality, hashing, pickling and repr are
    those of ``Token``. ``fields`` must name every field (the tests compare both paths).
    """
    token = _TOKEN_NEW(Token)
    token.__dict__.update(fields)
    return token


class _Draft:
    """A token under construction: its first event plus what merged into it."""

    __slots__ = ("kind", "ts", "event_id", "item_id", "device", "surface", "session", "action",
                 "watch_seconds", "n_events", "decided", "closed", "weight", "pending", "ok")

    def __init__(self, kind: str, ev: InteractionEvent, session: int) -> None:
        self.kind = kind  # impression | click | watch | single
        self.ts = ev.ts
        self.event_id = ev.event_id
        self.item_id = ev.item_id
        self.device = ev.device
        self.surface = ev.surface
        self.session = session
        self.action = ev.action._value_ if kind != "watch" else "watch"  # _value_: no descriptor
        self.watch_seconds = ev.watch_seconds if kind == "watch" else 0.0
        self.n_events = 1
        self.decided = kind == "single"
        self.closed = False
        self.weight = 1.0
        self.pending = 0  # 1 while the group's dwell on its surface is not known yet
        self.ok = False  # at least one impression was on screen long enough


    def copy(self) -> _Draft:
        """A draft with the same fields (slot by slot, written out: the generic loop over
        ``__slots__`` cost most of a clone).
        """
        c = _Draft.__new__(_Draft)
        c.kind, c.ts, c.event_id, c.item_id = self.kind, self.ts, self.event_id, self.item_id
        c.device, c.surface, c.session, c.action = (self.device, self.surface, self.session,
                                                    self.action)
        c.watch_seconds, c.n_events, c.decided = self.watch_seconds, self.n_events, self.decided
        c.closed, c.weight, c.pending, c.ok = self.closed, self.weight, self.pending, self.ok
        return c


@dataclass
class _Emitted:
    """What the release of the next token depends on: the previous released token."""

    last_ts: int | None = None
    last_session: int = -1


class TokenMachine:
    """The merge rules over events that arrive in timestamp order (one user).

    ``feed`` returns the tokens that became final; ``end`` closes everything (end of the
    stream); ``render_open`` renders the open groups provisionally without changing state.
    """

    def __init__(self, user_id: str, vocab: Vocab, config: TokenizerConfig,
                 durations: Mapping[str, int] | None = None, grow_vocab: bool = True,
                 last_ts: int | None = None) -> None:
        self.user_id = user_id
        self.vocab = vocab
        self.config = config
        self.durations = durations or {}
        self.grow_vocab = grow_vocab
        self.drafts: deque[_Draft] = deque()
        self.open_watch: dict[str, _Draft] = {}
        self.open_imp: dict[tuple[str, str], _Draft] = {}
        self.open_clicks: dict[str, list[_Draft]] = {}
        self.click_deadlines: deque[tuple[int, _Draft]] = deque()
        self.imp_deadlines: deque[tuple[int, _Draft]] = deque()
        self.dwell: dict[str, list[tuple[int, _Draft]]] = {}  # surface -> (shown at, group)
        self.session = 0
        self.last_event_ts = last_ts
        self.last_session_id: str | None = None
        self.emitted = _Emitted(last_ts=last_ts, last_session=-1 if last_ts is None else 0)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["vocab"] = None  # shared and persisted on its own; the owner reattaches it
        state["durations"] = {}
        return state

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickle as plain tuples (``_restore_machine``): each draft once as a tuple of its
        fields, the maps and queues as indices into them, so a draft shared by several of
        them stays one object. A snapshot pickles every touched user's machine, and the
        generic path (a dict per slotted draft) cost most of a user's pickle. Machines
        pickled by ``__getstate__`` still load (pickle's default path).
        """
        index: dict[int, int] = {}
        rows: list[tuple[object, ...]] = []

        def ref(d: _Draft) -> int:
            i = index.get(id(d))
            if i is None:
                i = index[id(d)] = len(rows)
                rows.append((d.kind, d.ts, d.event_id, d.item_id, d.device, d.surface,
                             d.session, d.action, d.watch_seconds, d.n_events, d.decided,
                             d.closed, d.weight, d.pending, d.ok))
            return i

        layout = ([ref(d) for d in self.drafts],
                  [(k, ref(d)) for k, d in self.open_watch.items()],
                  [(k, ref(d)) for k, d in self.open_imp.items()],
                  [(k, [ref(d) for d in ds]) for k, ds in self.open_clicks.items()],
                  [(t, ref(d)) for t, d in self.click_deadlines],
                  [(t, ref(d)) for t, d in self.imp_deadlines],
                  [(k, [(t, ref(d)) for t, d in v]) for k, v in self.dwell.items()])
        return (_restore_machine, (self.user_id, self.config, self.grow_vocab, self.session,
                                   self.last_event_ts, self.last_session_id,
                                   self.emitted.last_ts, self.emitted.last_session, rows,
                                   layout))

    # ---- the rules ----------------------------------------------------------------------
    def feed(self, ev: InteractionEvent) -> list[Token]:
        """Apply one event (not older than the previous one) and release final tokens."""
        now = ev.ts
        if self.last_event_ts is not None and self._new_session(ev):
            self._end_session()
            self.session += 1
        self.last_event_ts = now
        self.last_session_id = ev.session_id
        action = ev.action
        # The cheap tests inline: most events have nothing to expire or resolve.
        if ((self.click_deadlines and self.click_deadlines[0][0] < now)
                or (self.imp_deadlines and self.imp_deadlines[0][0] < now)):
            self._expire(now)
        if self.dwell:
            self._resolve_dwell(now, ev.surface if action is Action.IMPRESSION else None)
        if action is Action.IMPRESSION:
            self._impression(ev)
        elif action is Action.CLICK:
            draft = self._new(ev, "click")
            self.open_clicks.setdefault(ev.item_id, []).append(draft)
            self.click_deadlines.append((now + self.config.click_play_window_ms, draft))
        elif action in WATCH_ACTIONS:
            self._watch(ev)
        else:
            self._new(ev, "single")
        return self._release()

    def end(self) -> list[Token]:
        """Close every open group as at the end of a session and release everything."""
        self._end_session()
        return self._release()

    def _new_session(self, ev: InteractionEvent) -> bool:
        if self.last_event_ts is None:
            return False
        idle = ev.ts - self.last_event_ts
        if self.open_watch:  # a title is playing (or paused): watching is not idleness
            idle -= self.config.max_play_ms
        if idle > self.config.session_gap_ms:
            return True
        return (ev.session_id is not None and self.last_session_id is not None
                and ev.session_id != self.last_session_id)

    def _new(self, ev: InteractionEvent, kind: str) -> _Draft:
        draft = _Draft(kind, ev, self.session)
        self.drafts.append(draft)
        return draft

    def _impression(self, ev: InteractionEvent) -> None:
        key = (ev.item_id, ev.surface)
        group = self.open_imp.get(key)
        if group is None or group.ts + self.config.impression_window_ms < ev.ts:
            group = self._new(ev, "impression")
            self.open_imp[key] = group
            self.imp_deadlines.append((ev.ts + self.config.impression_window_ms, group))
        else:
            group.n_events += 1
        if group.pending == 0:  # the group's first unresolved showing: its dwell decides
            group.pending = 1  # (later ones end with it and would only shorten it)
            self.dwell.setdefault(ev.surface, []).append((ev.ts, group))

    def _watch(self, ev: InteractionEvent) -> None:
        item = ev.item_id
        if ev.action is Action.PLAY:
            for click in self.open_clicks.pop(item, ()):
                click.decided = True  # a play followed: the click was meant
            for other in [g for i, g in self.open_watch.items() if i != item]:
                self._close_watch(other, completed=False)
        group = self.open_watch.get(item)
        if group is None:
            group = self._new(ev, "watch")
            self.open_watch[item] = group
        else:
            group.n_events += 1
            group.watch_seconds += ev.watch_seconds
        if ev.action is Action.STOP or ev.action is Action.COMPLETE:
            self._close_watch(group, completed=ev.action is Action.COMPLETE)

    def _close_watch(self, group: _Draft, completed: bool) -> None:
        del self.open_watch[group.item_id]
        group.closed = group.decided = True
        if completed:
            group.action = "complete"
            return
        duration = self.durations.get(group.item_id)
        if duration:
            short = group.watch_seconds / duration < self.config.abandon_completion
        else:
            short = group.watch_seconds < self.config.abandon_seconds
        group.action = "abandon" if short else "watch"

    def _expire(self, now: int) -> None:
        """Decide clicks whose play window passed and close impression groups past theirs."""
        while self.click_deadlines and self.click_deadlines[0][0] < now:
            _, click = self.click_deadlines.popleft()
            self._accidental_click(click)
        while self.imp_deadlines and self.imp_deadlines[0][0] < now:
            _, group = self.imp_deadlines.popleft()
            self._close_impression(group)

    def _accidental_click(self, click: _Draft) -> None:
        if click.decided:
            return
        click.decided = True
        click.weight = self.config.accidental_weight
        same = self.open_clicks.get(click.item_id)
        if same is not None:
            same.remove(click)
            if not same:
                del self.open_clicks[click.item_id]

    def _close_impression(self, group: _Draft) -> None:
        if group.closed:
            return
        group.closed = True
        key = (group.item_id, group.surface)
        if self.open_imp.get(key) is group:
            del self.open_imp[key]
        self._decide_impression(group)

    def _decide_impression(self, group: _Draft) -> None:
        if group.closed and (group.ok or group.pending == 0):
            group.decided = True
            group.weight = 1.0 if group.ok else self.config.accidental_weight

    def _resolve_dwell(self, now: int, impression_surface: str | None) -> None:
        """An event that is not an impression on surface S ends the dwell of S's impressions."""
        if not self.dwell:
            return
        for surface in [s for s in self.dwell if s != impression_surface]:
            for shown_at, group in self.dwell.pop(surface):
                group.pending -= 1
                if now - shown_at >= self.config.min_impression_ms:
                    group.ok = True
                self._decide_impression(group)

    def _end_session(self) -> None:
        for group in list(self.open_watch.values()):
            self._close_watch(group, completed=False)
        for shown in self.dwell.values():
            for _, group in shown:
                group.pending -= 1
                group.ok = True  # the session's last row: nothing says it was scrolled past
                self._decide_impression(group)
        self.dwell.clear()
        for _, group in self.imp_deadlines:
            self._close_impression(group)
        self.imp_deadlines.clear()
        for _, click in self.click_deadlines:
            self._accidental_click(click)
        self.click_deadlines.clear()

    # ---- release ------------------------------------------------------------------------
    def _release(self) -> list[Token]:
        drafts = self.drafts
        if not drafts or not drafts[0].decided:
            return []
        out: list[Token] = []
        while drafts and drafts[0].decided:
            draft = drafts.popleft()
            if draft.weight > 0:
                out.append(self._token(draft, self.emitted, final=True))
        return out

    def _token(self, d: _Draft, emitted: _Emitted, final: bool) -> Token:
        """Render a draft as the token after ``emitted`` and advance ``emitted``."""
        session_start = d.session != emitted.last_session
        item, action, gap, hour, dow, device, surface, duration = self._facets(d, emitted)
        duration_s = self.durations.get(d.item_id)
        watched = d.watch_seconds
        return _new_token({
            "user_id": self.user_id, "ts": d.ts, "item_id": d.item_id, "item": item,
            "action": action, "gap": gap, "hour": hour, "dow": dow,
            "device": device, "surface": surface, "duration": duration,
            "watch_seconds": watched,
            "completion": min(watched / duration_s, 1.0) if duration_s else 0.0,
            "session_start": session_start,
            "weight": d.weight if final else 1.0, "n_events": d.n_events,
            "event_id": d.event_id})

    def _facets(self, d: _Draft, emitted: _Emitted) -> tuple[int, ...]:
        """The facet ids (``FACETS`` order) of a draft rendered after ``emitted``, which it
        advances: all an online row needs of a token, without building one.
        """
        tables = self.vocab.tables
        item = tables["item"].get(d.item_id) if d.item_id else UNKNOWN
        device = tables["device"].get(d.device)
        surface = tables["surface"].get(d.surface)
        if item is None or device is None or surface is None:  # new value: assign or look up
            item, device, surface = self._ids(d)
        last = emitted.last_ts
        ts = d.ts
        emitted.last_ts = ts
        emitted.last_session = d.session
        return (item, tables["action"][d.action], 1 if last is None else gap_bucket(ts - last),
                hour_id(ts), dow_id(ts), device, surface, duration_bucket(d.watch_seconds))

    def _ids(self, d: _Draft) -> tuple[int, int, int]:
        vocab = self.vocab
        if self.grow_vocab:
            return (vocab.id("item", d.item_id) if d.item_id else UNKNOWN,
                    vocab.id("device", d.device), vocab.id("surface", d.surface))
        return (vocab.lookup("item", d.item_id) if d.item_id else UNKNOWN,
                vocab.lookup("device", d.device), vocab.lookup("surface", d.surface))

    def clone(self) -> TokenMachine:
        """A copy whose later ``feed`` calls leave this machine as it is (cheaper than
        ``copy.deepcopy``: only the drafts and the maps that point at them are copied).
        """
        twin = TokenMachine.__new__(TokenMachine)  # not copy.copy: no __getstate__ round
        twin.__dict__.update(self.__dict__)
        mapping: dict[int, _Draft] = {}

        def twin_of(d: _Draft) -> _Draft:  # also drafts already released but still queued
            c = mapping.get(id(d))
            if c is None:
                c = mapping[id(d)] = d.copy()
            return c

        twin.drafts = deque(twin_of(d) for d in self.drafts)
        twin.open_watch = {k: twin_of(d) for k, d in self.open_watch.items()}
        twin.open_imp = {k: twin_of(d) for k, d in self.open_imp.items()}
        twin.open_clicks = {k: [twin_of(d) for d in ds] for k, ds in self.open_clicks.items()}
        twin.click_deadlines = deque((t, twin_of(d)) for t, d in self.click_deadlines)
        twin.imp_deadlines = deque((t, twin_of(d)) for t, d in self.imp_deadlines)
        twin.dwell = {k: [(t, twin_of(d)) for t, d in v] for k, v in self.dwell.items()}
        twin.emitted = _Emitted(self.emitted.last_ts, self.emitted.last_session)
        return twin

    def render_open_facets(self) -> tuple[list[tuple[int, ...]], int | None]:
        """``[t.facet_ids() for t in self.render_open()]`` and the last one's ts (None when
        there is none), without building the tokens.
        """
        emitted = _Emitted(self.emitted.last_ts, self.emitted.last_session)
        facets = self._facets
        shown = [d for d in self.drafts if not d.decided or d.weight > 0]
        return [facets(d, emitted) for d in shown], (shown[-1].ts if shown else None)

    def render_open(self) -> list[Token]:
        """The open groups as provisional tokens (clicks and impressions kept, an unfinished
        watch shown as ``watch``); the state is left as it was.
        """
        emitted = _Emitted(self.emitted.last_ts, self.emitted.last_session)
        out = []
        for d in self.drafts:
            if d.decided:
                if d.weight > 0:
                    out.append(self._token(d, emitted, final=True))
            else:
                out.append(self._token(d, emitted, final=False))
        return out


def _restore_machine(user_id: str, config: TokenizerConfig, grow_vocab: bool, session: int,
                     last_event_ts: int | None, last_session_id: str | None,
                     emitted_ts: int | None, emitted_session: int,
                     rows: list[tuple[object, ...]], layout: tuple[list, ...]) -> TokenMachine:
    """A ``TokenMachine`` from ``TokenMachine.__reduce__``'s tuples (vocab and durations
    unset: the owner attaches them, as after ``__getstate__``).
    """
    drafts = []
    new = _Draft.__new__
    for row in rows:
        d = new(_Draft)
        (d.kind, d.ts, d.event_id, d.item_id, d.device, d.surface, d.session, d.action,
         d.watch_seconds, d.n_events, d.decided, d.closed, d.weight, d.pending, d.ok) = row
        drafts.append(d)
    queue, watch, imp, clicks, click_due, imp_due, dwell = layout
    m = TokenMachine.__new__(TokenMachine)
    m.user_id, m.vocab, m.config, m.durations, m.grow_vocab = user_id, None, config, {}, grow_vocab
    m.drafts = deque([drafts[i] for i in queue])
    m.open_watch = {k: drafts[i] for k, i in watch}
    m.open_imp = {k: drafts[i] for k, i in imp}
    m.open_clicks = {k: [drafts[i] for i in ids] for k, ids in clicks}
    m.click_deadlines = deque([(t, drafts[i]) for t, i in click_due])
    m.imp_deadlines = deque([(t, drafts[i]) for t, i in imp_due])
    m.dwell = {k: [(t, drafts[i]) for t, i in v] for k, v in dwell}
    m.session, m.last_event_ts, m.last_session_id = session, last_event_ts, last_session_id
    m.emitted = _Emitted(emitted_ts, emitted_session)
    return m

