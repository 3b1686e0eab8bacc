"""The experiment config: which variants serve, and how requests are split among them.

A YAML or JSON file named by ``MARQUEE_EXPERIMENTS`` (or the JSON itself in the variable),
validated when the service starts or the config is changed; every error names the fix::

    name: fm-b-vs-a              # metric label and log field; also the default salt
    mode: ab                     # ab | interleave
    variants:
      - {name: a, model: var/models/a.onnx, weight: 50}
      - {name: b, model: var/models/b.onnx, weight: 50}
      - {name: control, model: popular, weight: 10}   # popular titles, no model

``ab`` gives each user one variant by a stable hash of the user id (``serve.experiments``);
``interleave`` team-draft interleaves exactly two variants into every list.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

POPULAR = "popular"  # the model value of the control that is not a model
NAME = r"^[a-z0-9][a-z0-9_.-]{0,31}$"  # safe as a Prometheus label value and a log field


class Mode(StrEnum):
    """How requests are split: one variant per user, or two variants in every list."""

    AB = "ab"
    INTERLEAVE = "interleave"


class Variant(BaseModel):
    """One arm: an ONNX model file of its own, or ``popular`` (the non-model control)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME, description="the variant's label, e.g. a, b, "
                               "control: lowercase letters, digits, _ . -, at most 32")]
    model: str = Field(min_length=1, description=f"an ONNX file (`marquee export`), or "
                       f"`{POPULAR}` for popular and fresh titles (no model)")
    weight: float = Field(1.0, gt=0, le=1e6, description="A/B share relative to the other "
                          "variants' weights (ignored by interleave)")

    @property
    def is_model(self) -> bool:
        """True for a model file, False for the popular control."""
        return self.model != POPULAR

    @field_validator("model")
    @classmethod
    def _model_file(cls, value: str) -> str:
        if value != POPULAR and not Path(value).is_file():
            raise ValueError(f"no model file at {value!r}; give the path of an ONNX file made "
                             f"by `marquee export` (readable by the service), or "
                             f"{POPULAR!r} for the popular-titles control")
        return value


class Experiment(BaseModel):
    """One running experiment (the service runs at most one at a time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME, description="the experiment's label in metrics "
                               "and in the rankings log")]
    mode: Mode = Field(Mode.AB, description="ab (a variant per user) or interleave (two "
                       "variants team-draft interleaved in every list)")
    salt: str | None = Field(None, min_length=1, max_length=128, description="hash salt of "
                             "the A/B allocation (default: the name); a new salt reshuffles "
                             "users")
    variants: list[Variant] = Field(min_length=2, max_length=16)

    @property
    def hash_salt(self) -> str:
        """The salt the allocation hashes with."""
        return self.salt or self.name

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [v.name for v in self.variants]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"variant names {doubled} appear more than once; give each "
                             "variant its own name")
        if self.mode is Mode.INTERLEAVE and len(self.variants) != 2:
            raise ValueError(f"interleave takes exactly 2 variants, not {len(self.variants)}; "
                             "list two, or use mode: ab for more")
        return self


class ExperimentConfigError(ValueError):
    """The experiment config cannot be used: every problem, each with its fix."""


def parse_experiment(data: Any, source: str = "the experiment config") -> Experiment | None:
    """Validate a parsed config (``None`` or ``{}`` = no experiment)."""
    if data is None or data == {}:
        return None
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "config"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field; remove it (fields: name, mode, salt, variants; a " \
                      "variant has name, model, weight)"
            elif err["type"] == "missing":
                msg = "missing; add it"
            lines.append(f"{where}: {msg}")
        raise ExperimentConfigError(f"{source} is not valid:\n  " + "\n  ".join(lines)) from None


def load_experiment(spec: str | Path | None) -> Experiment | None:
    """The experiment of ``MARQUEE_EXPERIMENTS``: a YAML/JSON file's path, or a JSON object."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    if text.startswith("{"):
        source, raw = "MARQUEE_EXPERIMENTS (inline JSON)", text
    else:
        path = Path(text)
        if not path.is_file():
            raise ExperimentConfigError(f"no experiment config at {path}; set "
                                        "MARQUEE_EXPERIMENTS to a YAML or JSON file (or unset "
                                        "it to serve without an experiment)")
        source, raw = str(path), path.read_text()
    try:
        if source.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any parse error is the file's problem
        raise ExperimentConfigError(f"{source} could not be parsed ({exc}); write one YAML "
                                    "(.yaml/.yml) or JSON object") from None
    if data is not None and not isinstance(data, dict):
        raise ExperimentConfigError(f"{source} holds a {type(data).__name__}; write one object "
                                    "with name, mode and variants")
    return parse_experiment(data, source)
