"""The HTTP API's request and response bodies (published in the OpenAPI document).

The re-ranker's own result types are the response's items and constraint reports, so each of
their fields (and its description) is declared once, where the re-ranker fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from serve.constraints import Constraints
from serve.json_values import check_json_types, check_json_value, json_types
from serve.rerank import ConstraintReport, RankedItem
from streams.contract.events import InteractionEvent, json_schema

_EVENT_TYPES = json_types(json_schema())  # the event contract as published


class RankRequest(BaseModel):
    """``POST /v1/rank``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "user_id": "u000042", "k": 10,
        "events": [{"event_id": "e1", "user_id": "u000042", "item_id": "s0003e01",
                    "action": "play", "ts": 1767300000000, "device": "tv",
                    "surface": "home/top_picks"}],
        "goal": {"goal": {"preset": "short_episodes"}, "min_new_share": 0.2},
        "explain": True}]})

    user_id: str = Field(min_length=1, max_length=128)
    events: list[InteractionEvent] = Field(
        default_factory=list, max_length=500,
        description="the user's in-session events not yet in the feature store (event contract)")
    candidates: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=1000,
        description="rank only these item ids (default: the whole catalogue); ids no catalogue "
                    "holds are dropped and reported (unknown_candidates), titles the user has "
                    "watched or that are not released yet are left out as in a full ranking")
    k: int | None = Field(default=None, ge=1, le=1000, strict=True,
                          description="list length (at most the service's k_max)")
    goal: Constraints | None = Field(
        default=None, description="constraints and the user's goal for this request")
    explain: bool = Field(default=False, strict=True,
                          description="add per-stage latency and all constraints")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_json(cls, value: Any, info: ValidationInfo) -> Any:
        """NaN/Infinity and lone surrogates, anywhere: a 422 that names the place."""
        check_json_value(value, info.field_name or "body")
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _event_types(cls, value: Any) -> Any:
        """Each event's values of the contract's JSON types (``"position": "5"`` is a 422)."""
        if isinstance(value, list):
            for i, event in enumerate(value):
                if isinstance(event, dict):
                    check_json_types(event, _EVENT_TYPES, f"events[{i}]")
        return value


@dataclass(frozen=True)
class RankedItemOut(RankedItem):
    """One item of the list: the re-ranker's, with the catalogue's genre and kind."""

    genre: Annotated[str, Field(description="the title's genre")] = ""
    kind: Annotated[str, Field(description="movie | series | episode")] = ""
    variant: Annotated[str, Field(description="the variant that placed the item: the A/B "
                                  "arm, the interleaving team, or `default` without an "
                                  "experiment")] = "default"

    @classmethod
    def of(cls, item: RankedItem, genre: str, kind: str, variant: str) -> RankedItemOut:
        """The re-ranker's item with its catalogue attributes and its variant."""
        return cls(**vars(item), genre=genre, kind=kind, variant=variant)


class RankResponse(BaseModel):
    """The ranked list and how it was made."""

    request_id: str = Field(pattern="^[0-9a-f]{32}$", description="this answer's id: send it "
                            "back as the request_id of the events about its items "
                            "(impression, click, play...)")
    user_id: str
    model_version: str = Field(description="the model that ranked (interleaving: both, "
                               "joined by +; `popular` for the popular-titles control)")
    experiment: str | None = Field(default=None, description="the running experiment, if any")
    variants: list[str] = Field(description="the variants that made the list: the user's A/B "
                                "arm, the two interleaved teams, or `default`")
    items: list[RankedItemOut]
    binding: list[ConstraintReport]
    relaxed: list[ConstraintReport]
    explanation: str
    degraded: bool = Field(description="made without some inputs (see fallback)")
    fallback: str | None = Field(
        default=None, description="why: no_model | unknown_user | feature_store_unavailable")
    latency_ms: dict[str, float] | None = None
    constraints: list[ConstraintReport] | None = None
    unknown_candidates: int | None = Field(
        default=None, description="how many requested candidates no catalogue holds (dropped, "
                                  "never ranked); only when the request names candidates")
    unknown_candidate_ids: list[str] | None = Field(
        default=None, description="the first few of them (up to 5)")
    excluded_candidates: int | None = Field(
        default=None, description="how many requested candidates were left out because the "
                                  "user has watched them or they are not released yet")


class SimilarItem(BaseModel):
    """A neighbour in the model's item space."""

    item_id: str
    score: float


class SimilarResponse(BaseModel):
    """``GET /v1/similar/{item_id}``."""

    item_id: str
    model_version: str
    items: list[SimilarItem]


class Check(BaseModel):
    """One dependency of the service, as ``/readyz`` found it just now."""

    ok: bool
    detail: str = ""
    latency_ms: float | None = None


class Health(BaseModel):
    """``/healthz`` and ``/readyz`` (with each dependency's check)."""

    status: str
    model_version: str | None = None
    detail: str = ""
    checks: dict[str, Check] | None = None


class FieldError(BaseModel):
    """One problem with a request: where it is and what to change (the input is not echoed)."""

    loc: list[str | int] = Field(description="where: body, then field names and list indexes")
    msg: str = Field(description="what is wrong and the fix")
    type: str = Field(description="the kind of problem, e.g. missing, int_parsing")


class ApiError(BaseModel):
    """Every 4xx answer of the service: one message, or one entry per problem (422)."""

    detail: str | list[FieldError]
