"""Continuous training as library calls: register a model, retrain the serving one on the
grown token log, gate it, promote or reject (or enter it into an interleaving experiment), and
watch the registry so a running service switches to what it names.

``marquee retrain``, ``marquee models``, ``marquee serve`` and ``marquee up`` call these, and
the integration test calls the same functions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from models.registry import Registry, Version, registry_root
from models.retrain_settings import RetrainSettings
from streams.contract.layout import DataLayout

ROOT = Path(__file__).resolve().parents[1]


def open_registry(data_dir: Path, settings: RetrainSettings | None = None) -> Registry:
    """The registry of ``MARQUEE_MODEL_REGISTRY``, else ``<data_dir>/models``."""
    settings = settings or RetrainSettings()
    return Registry(registry_root(data_dir, settings.model_registry))


def code_version() -> str:
    """The package version and, in a git checkout, the commit (``+dirty`` with local edits)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        out = version("marquee")
    except PackageNotFoundError:
        out = "unknown"
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "models",
                                "infra"], capture_output=True, text=True, timeout=5).stdout
        out += f" ({rev}{'+dirty' if dirty.strip() else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _write_checkpoint(ckpt: Any, k: int = 200):  # noqa: ANN202 - a folder writer
    def write(folder: Path) -> None:
        from models.export import export_checkpoint

        ckpt.save(folder)
        export_checkpoint(ckpt, folder / "model.onnx", k=k)
    return write


def add_model(registry: Registry, model_dir: Path, promote: bool = False,
              command: str | None = None) -> Version:
    """Register a checkpoint trained elsewhere (``marquee train``): the first version of a
    registry, or one brought in by hand.
    """
    from models.checkpoint import load_checkpoint

    return _add_checkpoint(registry, load_checkpoint(model_dir), model_dir, promote, command)


def _add_checkpoint(registry: Registry, ckpt: Any, model_dir: Path, promote: bool,
                    command: str | None) -> Version:
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.pop("history", None)
    lineage = {"parent": None, "source": str(model_dir.resolve()), "created_at": time.time(),
               "data": ckpt.extra.get("data", {}), "command": command or " ".join(sys.argv),
               "code_version": code_version()}
    version = registry.add(ckpt.version, _write_checkpoint(ckpt), lineage, metrics)
    return registry.promote(version.name, "add") if promote else version


def register_trained(registry: Registry, model_dir: Path,
                     command: str | None = None) -> tuple[Version, str]:
    """The version to serve after a start that trained (or reused) ``model_dir``: a checkpoint
    new to the registry is registered and promoted (fresh training on new data serves); one
    already registered is not added again, and the registry's serving version stays, so a
    promote or rollback done before a restart survives it. Returns it and what was done.
    """
    from models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(model_dir)
    if ckpt.version not in registry.index()["versions"]:
        version = _add_checkpoint(registry, ckpt, model_dir, promote=True, command=command)
        return version, f"registered {version.name} and promoted it"
    serving = registry.serving()
    if serving is None:
        return registry.promote(ckpt.version, "add"), f"promoted {ckpt.version}"
    return serving, f"{ckpt.version} already registered; the registry serves {serving.name}"


def next_retrain_s(registry: Registry, every_s: float, now: float | None = None) -> float:
    """Seconds until a scheduled retrain is due: ``every_s`` after the newest version was
    registered (0: due now). Anchored on the registry, not on the process, so a restarted
    ``marquee up`` or retrain child neither retrains at once nor waits a full period again.
    """
    now = time.time() if now is None else now
    times = [e["registered_at"] for e in registry.index()["versions"].values()]
    return max(0.0, max(times) + every_s - now) if times else 0.0


def _token_span(corpus: Any, cut_ms: int) -> dict[str, Any]:
    """What a candidate trained on: token times from the oldest to the cut (exclusive)."""
    import numpy as np

    first = min(int(t[0]) for t in corpus.ts.values() if len(t))
    before = sum(int(np.searchsorted(t, cut_ms)) for t in corpus.ts.values())
    total = sum(len(t) for t in corpus.ts.values())
    return {"from_ms": first, "to_ms": cut_ms, "tokens": before, "log_tokens": total,
            "newest_ms": max(int(t[-1]) for t in corpus.ts.values() if len(t))}


def retrain_and_gate(data_dir: Path, registry: Registry, settings: RetrainSettings,
                     experiment: Path | None = None, promote: bool = True,
                     device: str = "cpu", progress: bool = False,
                     command: str | None = None) -> dict[str, Any]:
    """``marquee retrain``: warm-start the serving version on ``data_dir``'s token log, examine
    candidate and current, register the candidate, and act on the gate (see the README).
    Returns a report (JSON-ready).
    """
    from models.checkpoint import load_checkpoint, new_version
    from models.data import load_corpus
    from models.retrain import gate, retrain
    from models.train import TrainConfig

    serving = registry.serving()
    if serving is None:
        raise ValueError(f"no serving version in {registry.root}: register one first "
                         "(`marquee models add var/model --promote`)")
    layout = DataLayout(data_dir)
    current = load_checkpoint(serving.folder)
    corpus = load_corpus("tokens", layout.tokens, vocab_path=layout.vocab,
                         catalogue_path=layout.catalogue)
    cfg = TrainConfig(epochs=settings.retrain_epochs, lr=settings.retrain_lr,
                      max_minutes=settings.retrain_minutes, patience=1, lr_decays=0,
                      valid_users=2000, device=device, progress=progress)
    spec = {"format": "tokens", "path": str(layout.tokens), "options": {}}
    t0 = time.monotonic()
    result = retrain(current, corpus, cfg, settings.holdout_hours, data_spec=spec)
    name = new_version("fm")
    while name in registry.index()["versions"]:
        name += "-2"
    result.candidate.version = name
    decision = gate(result.exams, settings.gate_margin)
    metrics = {"version": name, "exams": result.exams, "gate": decision.to_dict(),
               "train": {"seconds": round(result.train_s, 1), "best_epoch":
                         result.train.best_epoch, "valid": result.train.best_valid,
                         "epochs": [r for r in result.train.history]},
               "new_items": result.new_items}
    lineage = {"parent": serving.name, "created_at": time.time(),
               "token_span": _token_span(corpus, result.holdout.cut_ms),
               "holdout": {"hours": settings.holdout_hours, "cut_ms": result.holdout.cut_ms,
                           "recent_users": len(result.holdout.recent)},
               "recipe": {"epochs": cfg.epochs, "lr": cfg.lr, "max_minutes": cfg.max_minutes,
                          "warm_start": serving.name},
               "data": spec, "command": command or " ".join(sys.argv),
               "code_version": code_version()}
    registry.add(name, _write_checkpoint(result.candidate), lineage, metrics)
    report: dict[str, Any] = {"candidate": name, "current": serving.name,
                              "gate": decision.to_dict(), "exams": result.exams,
                              "new_items": result.new_items,
                              "train_s": round(result.train_s, 1),
                              "total_s": round(time.monotonic() - t0, 1)}
    if not decision.promote:
        registry.set_metrics(name, metrics, status="rejected")
        report["action"] = "rejected"
    elif experiment is not None:
        write_experiment(experiment, serving, registry.get(name))
        registry.set_metrics(name, metrics, status="experiment")
        report["action"] = "experiment"
        report["experiment_config"] = str(experiment)
    elif promote:
        registry.promote(name, "retrain")
        report["action"] = "promoted"
    else:
        report["action"] = "passed (not promoted)"
    return report


def write_experiment(path: Path, current: Version, candidate: Version) -> Path:
    """An interleaving experiment config (``serve.experiment_config``) of ``candidate`` vs
    ``current``, validated before it is written (atomically: the service watches the file).
    """
    from models.registry import atomic_write_json
    from serve.experiment_config import parse_experiment

    name = f"retrain-{candidate.name}".lower()[:32].rstrip("-._")
    config = {"name": name, "mode": "interleave",
              "variants": [{"name": "current", "model": str(current.onnx.resolve())},
                           {"name": "candidate", "model": str(candidate.onnx.resolve())}]}
    parse_experiment(config, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)
    return path


class ServingWatch:
    """Tells a running service's owner when the registry names another serving version."""

    def __init__(self, registry: Registry, current: str | None = None) -> None:
        """``current``: the version the service runs (default: the registry's serving one)."""
        self.registry = registry
        if current is None:
            serving = registry.serving()
            current = serving.name if serving else None
        self.current = current

    def changed(self) -> Version | None:
        """The new serving version since the last call (None: unchanged)."""
        serving = self.registry.serving()
        if serving is None or serving.name == self.current:
            return None
        self.current = serving.name
        return serving

    def apply(self, settings: Any, **where: str) -> Any | None:
        """Roll the running app over to a changed serving version (``serve.app.rollover``:
        in place, no dropped request); returns the settings now served (None: no change).
        ``where``: ``name`` and ``route_prefix`` of the app, when not the default one.
        """
        from serve import app

        version = self.changed()
        if version is None:
            return None
        settings = settings.model_copy(update={"model_path": version.onnx})
        app.rollover(settings, version.onnx, **where)
        return settings


class RegistryFollower:
    """Keeps a running ranking app on the registry's serving version: ``marquee serve`` and
    ``marquee up`` call it on their loops' ticks (at most once per ``every_s``). A version
    that fails to load is reported and the running model kept.
    """

    def __init__(self, registry: Registry, settings: Any, current: str, every_s: float = 2.0,
                 **where: str) -> None:
        """``settings`` serve version ``current`` now."""
        self.watch = ServingWatch(registry, current)
        self.settings = settings
        self.every_s = every_s
        self.where = where
        self._next = 0.0

    @classmethod
    def serving(cls, registry: Registry, settings: Any, every_s: float = 2.0,
                **where: str) -> RegistryFollower | None:
        """A follower whose settings serve the registry's serving version now (None: the
        registry has none).
        """
        serving = registry.serving()
        if serving is None:
            return None
        return cls(registry, settings.model_copy(update={"model_path": serving.onnx}),
                   serving.name, every_s, **where)

    def __call__(self) -> None:
        """Roll over when the serving version changed (checked once per ``every_s``)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        try:
            new = self.watch.apply(self.settings, **self.where)
        except Exception as exc:  # noqa: BLE001 - keep serving what runs
            print(f"registry: could not switch to {self.watch.current} ({exc}); the running "
                  "model is kept", flush=True)
            return
        if new is not None:
            self.settings = new
            print(f"registry: now serving {self.watch.current} ({new.model_path})", flush=True)
