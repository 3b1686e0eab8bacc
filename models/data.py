"""Training and evaluation data: per-user token sequences, the leave-one-out split, windows.

Three sources give the same ``Corpus`` (one int array [T, 8] of facet ids per user):
- ``load_sasrec``: ``user item`` files. No context exists, so every token is a ``watch`` and the
  time/context facets are padding (0): the model must not learn from invented timestamps.
- ``load_token_log``: the flow's offline token log (parquet dir, docs/contracts.md), with
  ``vocab.json`` and optionally ``catalogue.jsonl`` beside it.
- ``corpus_from_events``: contract events tokenized in memory by the flow's own tokenizer
  (the synthetic world uses it, without Kafka).

Interactions are tokens whose action is in ``POSITIVE_ACTIONS``: those are what the model
predicts and what the protocol evaluates. Leave-one-out: the last interaction is the test
target, the one before it the validation target. The model sees history up to and including
the interaction before the target (with that interaction's own follow-ups, such as a rating),
never the impressions and click that led to the target itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streams.contract.catalogue import Title, read_catalogue
from streams.contract.events import InteractionEvent
from streams.contract.layout import DataLayout
from streams.contract.tokenizer import tokenize_events
from streams.contract.tokens import DAY_MS, FACETS, Token, Vocab, duration_bucket

POSITIVE_ACTIONS = ("watch", "complete", "abandon")
FOLLOW_UPS = ("rate", "add_to_list")  # tokens about the interaction just before them
I_ITEM, I_ACTION, I_DURATION = FACETS.index("item"), FACETS.index("action"), \
    FACETS.index("duration")


@dataclass
class Corpus:
    """Per-user facet-id arrays plus what the model needs to know about the catalogue."""

    sequences: dict[str, np.ndarray]  # user -> [T, len(FACETS)] int64, time order
    weights: dict[str, np.ndarray]  # user -> [T] float32
    vocab: Vocab
    item_meta: np.ndarray | None = None  # [n_items, 4] genre, kind, age, length ids
    genres: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ref_ms: int = 0
    cold_items: set[int] = field(default_factory=set)  # never training targets
    # user -> [T] int64 event time (ms) per token, where the source has times (token logs,
    # synthetic events; not SASRec files): what a time-based holdout cuts on
    ts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        """Item table size (incl. pad/unknown)."""
        return self.vocab.size("item")

    def positive_ids(self) -> np.ndarray:
        """Action ids that count as interactions."""
        return np.array([self.vocab.lookup("action", a) for a in POSITIVE_ACTIONS])


def constant_facets(corpus: Corpus) -> tuple[str, ...]:
    """Context facets with at most one value (besides padding) in the whole corpus: nothing to
    learn from them (``ModelConfig.constant_facets``).
    """
    if not corpus.sequences:
        return ()
    ids = np.concatenate(list(corpus.sequences.values()))  # [T, len(FACETS)]
    return tuple(f for j, f in enumerate(FACETS) if j != I_ITEM
                 and len(np.unique(ids[:, j][ids[:, j] > 0])) <= 1)


# ---- loading ---------------------------------------------------------------------------------
def load_sasrec(path: Path) -> Corpus:
    """A SASRec-format file: each line one ``watch`` of an item, context facets 0."""
    from streams.contract.files import read_sasrec_sequences

    vocab = Vocab()
    watch = vocab.lookup("action", "watch")
    sequences, weights = {}, {}
    for user, items in read_sasrec_sequences(path).items():
        arr = np.zeros((len(items), len(FACETS)), dtype=np.int64)
        arr[:, I_ITEM] = [vocab.id("item", i) for i in items]
        arr[:, I_ACTION] = watch
        sequences[user], weights[user] = arr, np.ones(len(items), np.float32)
    return Corpus(sequences, weights, vocab)


def corpus_from_tokens(tokens: list[Token], vocab: Vocab) -> Corpus:
    """Group tokens (sorted by user, ts) into per-user arrays."""
    sequences: dict[str, list[tuple[int, ...]]] = {}
    weights: dict[str, list[float]] = {}
    times: dict[str, list[int]] = {}
    for tok in tokens:
        sequences.setdefault(tok.user_id, []).append(tok.facet_ids())
        weights.setdefault(tok.user_id, []).append(tok.weight)
        times.setdefault(tok.user_id, []).append(tok.ts)
    return Corpus({u: np.asarray(s, dtype=np.int64) for u, s in sequences.items()},
                  {u: np.asarray(w, dtype=np.float32) for u, w in weights.items()}, vocab,
                  ts={u: np.asarray(t, dtype=np.int64) for u, t in times.items()})


def load_token_log(path: Path, vocab_path: Path | None = None,
                   catalogue_path: Path | None = None) -> Corpus:
    """The flow's parquet token log; ``vocab.json``/``catalogue.jsonl`` default to those of
    the data folder it sits in.
    """
    import pandas as pd

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise FileNotFoundError(f"no *.parquet files under {path}; run the flow first")
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    missing = [c for c in ("user_id", "ts", "token_id", *FACETS) if c not in frame.columns]
    if missing:
        raise ValueError(f"token log {path} lacks columns {missing} (see docs/contracts.md)")
    frame = frame.drop_duplicates("token_id").sort_values(["user_id", "ts", "token_id"])
    folder = DataLayout(path.parent)
    vocab_path = vocab_path or folder.vocab
    if not vocab_path.exists():
        raise FileNotFoundError(f"no vocabulary at {vocab_path}; pass --vocab")
    vocab = Vocab.load(vocab_path)
    facets = frame[list(FACETS)].to_numpy(np.int64)
    weight = (frame["weight"].to_numpy(np.float32) if "weight" in frame.columns
              else np.ones(len(frame), np.float32))
    users = frame["user_id"].to_numpy()
    times = frame["ts"].to_numpy(np.int64)
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(users)]
    spans = list(zip(starts, ends, strict=True))
    corpus = Corpus({users[a]: facets[a:b] for a, b in spans},
                    {users[a]: weight[a:b] for a, b in spans}, vocab,
                    ts={users[a]: times[a:b] for a, b in spans})
    catalogue_path = catalogue_path or folder.catalogue
    if catalogue_path.exists():
        attach_catalogue(corpus, read_catalogue(catalogue_path), int(frame["ts"].max()))
    return corpus


def corpus_from_events(events: Iterable[dict], titles: Mapping[str, Title]) -> Corpus:
    """Contract events (in time order) tokenized by the flow's own rules, with the catalogue's
    metadata attached.
    """
    vocab = Vocab()
    durations = {t.item_id: t.duration_s for t in titles.values()}
    tokens = tokenize_events((InteractionEvent(**e) for e in events), vocab,
                             durations=durations)
    corpus = corpus_from_tokens(tokens, vocab)
    attach_catalogue(corpus, titles, max(t.ts for t in tokens))
    return corpus


def age_bucket(age_ms: int) -> int:
    """Release age at the reference time: 1 = not yet released then, 2 = < 1 day, then log2
    days up to 15.
    """
    if age_ms < 0:
        return 1
    days = age_ms / DAY_MS
    return 2 if days < 1 else min(3 + int(np.log2(days)), 15)


def attach_catalogue(corpus: Corpus, titles: Mapping[str, Title], ref_ms: int) -> None:
    """Fill the item-tower metadata ids of every item in the vocabulary (0 where unknown)."""
    corpus.genres = sorted({t.genre for t in titles.values()})
    corpus.kinds = sorted({t.kind for t in titles.values()})
    genre_id = {g: i + 1 for i, g in enumerate(corpus.genres)}
    kind_id = {k: i + 1 for i, k in enumerate(corpus.kinds)}
    meta = np.zeros((corpus.n_items, 4), dtype=np.int64)
    for idx, item in enumerate(corpus.vocab.items_by_id()):
        t = titles.get(item)
        if idx < 2 or t is None:
            continue
        meta[idx] = (genre_id[t.genre], kind_id[t.kind], age_bucket(ref_ms - t.release_ms),
                     duration_bucket(float(t.duration_s)))
    corpus.item_meta, corpus.ref_ms = meta, ref_ms


# ---- split -----------------------------------------------------------------------------------
@dataclass
class Split:
    """Leave-one-out cut points per user: history ends (exclusive) and target items."""

    train: dict[str, int]  # user -> number of leading tokens used for training
    valid: dict[str, tuple[int, int]]  # user -> (history end, target item)
    test: dict[str, tuple[int, int]]


def context_end(seq: np.ndarray, pos: int, follow: set[int]) -> int:
    """End (exclusive) of the history ending with the interaction at ``pos`` and its
    follow-up tokens about the same item.
    """
    end = pos + 1
    while (end < len(seq) and seq[end, I_ACTION] in follow
           and seq[end, I_ITEM] == seq[pos, I_ITEM]):
        end += 1
    return end


def leave_one_out(corpus: Corpus) -> Split:
    """Last interaction = test, second to last = validation; users with < 3 train only."""
    positive = corpus.positive_ids()
    follow = {corpus.vocab.lookup("action", a) for a in FOLLOW_UPS}
    split = Split({}, {}, {})
    for user, seq in corpus.sequences.items():
        pos = np.flatnonzero(np.isin(seq[:, I_ACTION], positive))
        if len(pos) < 3:
            split.train[user] = len(seq)
            continue
        v_end = context_end(seq, pos[-3], follow)
        t_end = context_end(seq, pos[-2], follow)
        split.train[user] = v_end
        split.valid[user] = (v_end, int(seq[pos[-2], I_ITEM]))
        split.test[user] = (t_end, int(seq[pos[-1], I_ITEM]))
    return split


def known_items(corpus: Corpus, split: Split) -> np.ndarray:
    """1.0 for items interacted with in the training prefixes (their id embedding is trained),
    else 0 (cold: known to the model by metadata only).
    """
    positive = corpus.positive_ids()
    known = np.zeros(corpus.n_items, np.float32)
    for user, end in split.train.items():
        seq = corpus.sequences[user][:end]
        known[seq[np.isin(seq[:, I_ACTION], positive), I_ITEM]] = 1.0
    known[list(corpus.cold_items)] = 0.0
    known[:2] = 0.0
    return known


# ---- tensors ---------------------------------------------------------------------------------
@dataclass
class Windows:
    """Training windows, left-padded: inputs [N, L, F] and per-position targets."""

    tokens: np.ndarray  # [N, L, len(FACETS)] int64
    item: np.ndarray  # [N, L] next interaction's item (0 = no loss here)
    mtp: np.ndarray  # [N, L, k-1] items of the interactions after that
    action: np.ndarray  # [N, L] next token's action
    duration: np.ndarray  # [N, L] next token's duration bucket
    weight: np.ndarray  # [N, L] float32

    def __len__(self) -> int:
        return len(self.tokens)


def training_windows(corpus: Corpus, split: Split, max_len: int, mtp_k: int) -> Windows:
    """Cut every user's training prefix into windows of ``max_len`` tokens from its end.

    The windows do not overlap, so one epoch trains every position of every prefix exactly
    once (as SASRec does, which trains its last ``max_len`` positions; longer users add
    their earlier windows).

    The item targets live at decision points (an interaction or its follow-ups): the next
    interaction's item, and for multi-token prediction the ones after it. Cold items are
    never targets.
    """
    positive = corpus.positive_ids()
    follow = np.array([corpus.vocab.lookup("action", a) for a in FOLLOW_UPS])
    cold = np.array(sorted(corpus.cold_items), dtype=np.int64)
    rows: list[tuple[np.ndarray, ...]] = []
    n_extra = max(mtp_k - 1, 0)
    for user, end in split.train.items():
        seq, w = corpus.sequences[user][:end], corpus.weights[user][:end]
        if len(seq) < 2:
            continue
        is_pos = np.isin(seq[:, I_ACTION], positive)
        pos = np.flatnonzero(is_pos)
        decision = is_pos | np.isin(seq[:, I_ACTION], follow)
        nxt = np.searchsorted(pos, np.arange(len(seq)), side="right")  # index into pos
        targets = np.zeros((len(seq), 1 + n_extra), np.int64)
        for j in range(1 + n_extra):
            at = nxt + j
            ok = at < len(pos)
            targets[ok, j] = seq[pos[at[ok]], I_ITEM]
        targets[~decision] = 0
        if len(cold):
            targets[np.isin(targets, cold)] = 0
        action = np.r_[seq[1:, I_ACTION], 0]
        duration = np.r_[seq[1:, I_DURATION], 0]
        weight = np.r_[w[1:], 0.0].astype(np.float32)
        # End the prefix at its last position with a target: the newest token of a window is
        # where serving reads the user state (recency position 0), so it must be trained.
        # Kept, that tail token had no target and position 0 learnt nothing (a train/serve gap).
        has_target = np.flatnonzero(targets[:, 0] > 0)
        if not len(has_target):
            continue
        keep = has_target[-1] + 1
        seq, targets = seq[:keep], targets[:keep]
        action, duration, weight = action[:keep], duration[:keep], weight[:keep]
        for b in range(len(seq), 0, -max_len):  # non-overlapping, newest first
            a = max(b - max_len, 0)
            rows.append((seq[a:b], targets[a:b], action[a:b], duration[a:b], weight[a:b]))
    n = len(rows)
    out = Windows(np.zeros((n, max_len, len(FACETS)), np.int64), np.zeros((n, max_len), np.int64),
                  np.zeros((n, max_len, n_extra), np.int64), np.zeros((n, max_len), np.int64),
                  np.zeros((n, max_len), np.int64), np.zeros((n, max_len), np.float32))
    for i, (s, t, act, dur, wt) in enumerate(rows):
        k = len(s)
        out.tokens[i, -k:], out.item[i, -k:], out.mtp[i, -k:] = s, t[:, 0], t[:, 1:]
        out.action[i, -k:], out.duration[i, -k:], out.weight[i, -k:] = act, dur, wt
    return out


@dataclass
class EvalSet:
    """Histories (left-padded) and targets for ranking evaluation."""

    users: list[str]
    tokens: np.ndarray  # [U, L, F]
    target: np.ndarray  # [U]
    seen: list[np.ndarray]  # per user: item ids interacted with in the history


def eval_set(corpus: Corpus, cuts: dict[str, tuple[int, int]], max_len: int) -> EvalSet:
    """Inputs for the users in ``cuts`` (validation or test cut points)."""
    positive = np.r_[corpus.positive_ids(),
                     [corpus.vocab.lookup("action", a) for a in FOLLOW_UPS]]
    users = sorted(cuts)
    tokens = np.zeros((len(users), max_len, len(FACETS)), np.int64)
    target = np.zeros(len(users), np.int64)
    seen = []
    for i, user in enumerate(users):
        end, item = cuts[user]
        full = corpus.sequences[user][:end]
        seq = full[-max_len:]
        tokens[i, -len(seq):] = seq
        target[i] = item
        seen.append(np.unique(full[np.isin(full[:, I_ACTION], positive), I_ITEM]))
    return EvalSet(users, tokens, target, seen)


def load_corpus(fmt: str, path: Path | None = None, **options: object) -> Corpus:
    """Dispatch on ``--format``: ``sasrec`` reads a file, ``tokens`` a token log folder
    (``options``: vocab_path, catalogue_path).
    """
    if fmt == "sasrec":
        if path is None:
            raise ValueError("--format sasrec needs --data FILE")
        return load_sasrec(path)
    if fmt == "tokens":
        if path is None:
            raise ValueError("--format tokens needs --data DIR (the token log)")
        return load_token_log(path, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown format {fmt!r}; use tokens or sasrec")
