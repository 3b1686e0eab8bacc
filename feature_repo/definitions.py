"""Marquee's Feast objects: what the online store holds for users and items.

The streaming flow writes both feature views through their push sources (online only); the
batch sources behind them exist because Feast wants one for every view, and name the parquet
files an offline backfill would read. ``OBJECTS`` is what ``feature_repo.store.open_store``
applies.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

from streams.contract.tokens import FACETS, MAX_SEQ

# A viewer; join key is the ``user_id`` of the events (string).
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a viewer, keyed by the events' user_id")

# A title; join key is the catalogue's ``item_id`` (string).
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="a catalogue title, keyed by item_id")

# Offline side of the user sequences (only for a backfill; the flow pushes online).
user_tokens_batch = FileSource(
    name="user_tokens_batch", path="data/user_tokens.parquet", timestamp_field="event_timestamp")

# The flow pushes each touched user's newest sequence here, coalesced per batch.
user_tokens_push = PushSource(name="user_tokens_push", batch_source=user_tokens_batch,
                              description="streaming writes of user token sequences")

# The user's most recent event tokens, oldest -> newest, at most MAX_SEQ of them: one int
# array per facet of streams.contract.tokens.FACETS, exactly what the model's inputs are made of.
user_tokens = FeatureView(
    name="user_tokens",
    entities=[user],
    ttl=timedelta(0),  # never expires: a returning user keeps their history
    schema=[Field(name=f"{facet}_seq", dtype=Array(Int64),
                  description=f"{facet} facet ids, oldest first, <= {MAX_SEQ}")
            for facet in FACETS] + [
        Field(name="last_ts", dtype=Int64, description="epoch ms of the newest token"),
        Field(name="n_tokens", dtype=Int64, description="tokens in the arrays"),
    ],
    online=True,
    source=user_tokens_push,
    description="recent event-token sequence per user (final tokens, then provisional ones)",
)

# Offline side of the item statistics.
item_stats_batch = FileSource(
    name="item_stats_batch", path="data/item_stats.parquet", timestamp_field="event_timestamp")

# The flow pushes item counters and catalogue metadata here.
item_stats_push = PushSource(name="item_stats_push", batch_source=item_stats_batch,
                             description="streaming writes of item popularity and exposure")

# Popularity and exposure over sliding windows (event time), plus catalogue metadata for
# cold-start titles the model has never seen.
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="plays_1h", dtype=Int64, description="plays in the last hour"),
        Field(name="plays_24h", dtype=Int64, description="plays in the last 24 hours"),
        Field(name="impressions_24h", dtype=Int64, description="impressions, last 24 hours"),
        Field(name="ctr_24h", dtype=Float64, description="clicks / impressions, last 24 hours"),
        Field(name="release_ms", dtype=Int64, description="release time, epoch ms (0 unknown)"),
        Field(name="genre", dtype=String, description="catalogue genre ('' unknown)"),
        Field(name="kind", dtype=String, description="movie | series | episode ('' unknown)"),
        Field(name="duration_s", dtype=Int64, description="title length in seconds (0 unknown)"),
    ],
    online=True,
    source=item_stats_push,
    description="item popularity, exposure and metadata",
)

# Everything model version 1 reads at serving time.
marquee_v1 = FeatureService(name="marquee_v1", features=[user_tokens, item_stats],
                            description="features of the v1 foundation model and its ranker")

# Column names of the views, read by the writers and the service (one home for each name).
USER_FEATURES: tuple[str, ...] = tuple(f.name for f in user_tokens.schema)
ITEM_FEATURES: tuple[str, ...] = tuple(f.name for f in item_stats.schema)

OBJECTS = [user, item, user_tokens_push, item_stats_push, user_tokens, item_stats, marquee_v1]
