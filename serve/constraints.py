"""What a ranking must satisfy: business constraints (from config) and the user's goal (from the
request), as validated pydantic models shared by the re-ranker, the API schema and the config.

Every model rejects unknown fields, so a typo in a request ("max_shar") is a 422 that names the
field instead of a constraint silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Attributes a count or diversity constraint may group candidates by.
Attribute = Literal["genre", "kind", "series"]

# Goals a client can name instead of spelling out the filters.
GOAL_PRESETS: dict[str, dict[str, object]] = {
    "short_episodes": {"kinds": ["episode"], "max_duration_minutes": 30},
    "new_to_me": {"new_to_me": True},
    "new_releases": {"new_releases": True},
    "movie_night": {"kinds": ["movie"], "min_duration_minutes": 80},
}


class _Strict(BaseModel):
    # strict: a number is a JSON number and a flag a JSON boolean (no "0.2", no 0 for false),
    # as the published schema says
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GroupCount(_Strict):
    """At least ``min`` and at most ``max`` items of one group (``genre=drama``) in the list."""

    attribute: Attribute = Field(description="what to group by")
    value: str = Field(min_length=1, max_length=64, description="the group, e.g. `drama`")
    min: int = Field(default=0, ge=0, le=1000)
    max: int | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> GroupCount:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"group_counts: max ({self.max}) < min ({self.min}); "
                             "make max >= min")
        return self


class Diversity(_Strict):
    """At most ``max_items`` of the same group in any ``window`` consecutive slots."""

    attribute: Attribute
    max_items: int = Field(ge=1, le=100, description="m: at most this many per window")
    window: int = Field(ge=2, le=100, description="w: window length in slots")

    @model_validator(mode="after")
    def _sensible(self) -> Diversity:
        if self.max_items >= self.window:
            raise ValueError(f"diversity: max_items ({self.max_items}) >= window "
                             f"({self.window}) constrains nothing; use max_items < window")
        return self


class Pin(_Strict):
    """Show ``item_id`` in the list, at ``position`` (1-based) when given."""

    item_id: str = Field(min_length=1, max_length=128)
    position: int | None = Field(default=None, ge=1, le=1000)


class Goal(_Strict):
    """The user's goal right now, as filters every listed item should pass.

    ``preset`` names a common goal (``short_episodes``, ``new_to_me``, ``new_releases``,
    ``movie_night``); explicit fields refine it. If too few candidates pass, the re-ranker fills
    the rest with the best others and says so (the goal is relaxed, not an error).
    """

    preset: Literal["short_episodes", "new_to_me", "new_releases", "movie_night"] | None = None
    kinds: list[Literal["movie", "series", "episode"]] | None = None
    genres: list[str] | None = Field(default=None, max_length=64)
    exclude_genres: list[str] | None = Field(default=None, max_length=64)
    max_duration_minutes: float | None = Field(default=None, gt=0, le=100_000)
    min_duration_minutes: float | None = Field(default=None, ge=0, le=100_000)
    new_to_me: bool = Field(default=False, description="only titles (and series) not yet seen")
    new_releases: bool = Field(default=False, description="only titles released recently")

    def resolved(self) -> Goal:
        """The goal with its preset expanded (explicit fields win)."""
        if self.preset is None:
            return self
        base = dict(GOAL_PRESETS[self.preset])
        base.update(self.model_dump(exclude_unset=True, exclude={"preset"}))
        return Goal(**base)

    def describe(self) -> str:
        """A short human phrase for explanations, e.g. ``kind in [episode], <= 30 min``."""
        g = self.resolved()
        parts = []
        if g.kinds:
            parts.append(f"kind in {g.kinds}")
        if g.genres:
            parts.append(f"genre in {g.genres}")
        if g.exclude_genres:
            parts.append(f"genre not in {g.exclude_genres}")
        if g.max_duration_minutes is not None:
            parts.append(f"<= {g.max_duration_minutes:g} min")
        if g.min_duration_minutes is not None:
            parts.append(f">= {g.min_duration_minutes:g} min")
        if g.new_to_me:
            parts.append("new to the user")
        if g.new_releases:
            parts.append("new release")
        return ", ".join(parts) or "any title"


class Constraints(_Strict):
    """Everything a list must satisfy. Config gives defaults; a request adds to them."""

    group_counts: list[GroupCount] = Field(default_factory=list, max_length=64)
    min_new_share: float | None = Field(default=None, ge=0, le=1,
                                        description="at least this share of new titles")
    max_overexposed_share: float | None = Field(
        default=None, ge=0, le=1, description="at most this share of over-exposed titles")
    diversity: list[Diversity] = Field(default_factory=list, max_length=8)
    pinned: list[Pin] = Field(default_factory=list, max_length=50)
    blocked: list[str] = Field(default_factory=list, max_length=1000)
    goal: Goal | None = None

    @model_validator(mode="after")
    def _pins_distinct(self) -> Constraints:
        ids = [p.item_id for p in self.pinned]
        if len(ids) != len(set(ids)):
            raise ValueError("pinned: an item is pinned twice; pin each item once")
        positions = [p.position for p in self.pinned if p.position is not None]
        if len(positions) != len(set(positions)):
            raise ValueError("pinned: two items pinned at the same position; use distinct ones")
        clash = set(ids) & set(self.blocked)
        if clash:
            raise ValueError(f"pinned and blocked: {sorted(clash)} both; remove one of them")
        return self

    def merged(self, request: Constraints | None) -> Constraints:
        """Config constraints plus a request's: lists are concatenated, scalars and the goal
        from the request win when set.
        """
        if request is None:
            return self
        if self == _NONE:  # no config constraints: the request as it is (saves a validation)
            return request
        return Constraints(
            group_counts=[*self.group_counts, *request.group_counts],
            min_new_share=(request.min_new_share if request.min_new_share is not None
                           else self.min_new_share),
            max_overexposed_share=(request.max_overexposed_share
                                   if request.max_overexposed_share is not None
                                   else self.max_overexposed_share),
            diversity=[*self.diversity, *request.diversity],
            pinned=[*self.pinned, *request.pinned],
            blocked=[*self.blocked, *request.blocked],
            goal=request.goal or self.goal,
        )


_NONE = Constraints()
