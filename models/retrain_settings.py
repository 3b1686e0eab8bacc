"""Settings of continuous training (``marquee retrain``, ``marquee models``): where versions are
kept, the warm-start budget, the time-based holdout and the gate's margin. ``MARQUEE_*``
variables override the defaults; the defaults are the measured cheap recipe (docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contract.settings import ENV_FILE


def period_s(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``1d`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise ValueError(f"period {text!r}: a number with s, m, h or d (e.g. 1h)") from None
    if value <= 0:
        raise ValueError(f"period {text!r} must be positive")
    return value


class RetrainSettings(BaseSettings):
    """``MARQUEE_GATE_MARGIN=0.05`` etc."""

    model_config = SettingsConfigDict(env_prefix="MARQUEE_", env_file=ENV_FILE, extra="ignore",
                                      frozen=True)

    model_registry: Path | None = Field(
        None, description="model registry folder: one folder per version (checkpoint, ONNX, "
        "metrics, lineage) and index.json naming the serving one (default: DATA_DIR/models)")
    retrain_epochs: int = Field(4, ge=1, le=1000, description="most epochs of a warm-start "
                                "retrain (early stopping on validation may end it sooner)")
    retrain_lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate of a "
                              "warm-start retrain")
    retrain_minutes: float = Field(3.0, gt=0, description="wall-clock budget of a retrain's "
                                   "training (checked after each epoch)")
    holdout_hours: float = Field(
        12.0, gt=0, description="the gate's recent slice: each user's first interaction in the "
        "newest this-many hours of the token log is a target, and the candidate trains only "
        "on what came before (a time-based holdout, never a random one)")
    gate_margin: float = Field(
        0.02, ge=0, le=1, description="the gate promotes a candidate whose NDCG@10 is at least "
        "(1 - margin) x the serving model's, on the recent slice and on the standard split")
    retrain_every: str | None = Field(
        None, description="marquee up: retrain on this schedule (e.g. 6h, 30m, 1d), as a "
        "supervised `marquee retrain --every` child; a retrain is due this long after the "
        "registry's newest version (unset: no schedule)")

    @field_validator("retrain_every")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is not None:
            period_s(value)  # fails at load, naming the value
        return value
