"""The table of every environment variable Marquee reads, generated from the settings classes
so the README cannot drift from the code (``marquee settings``; a test compares the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic_settings import BaseSettings

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    """(component, settings class) of every part that reads the environment."""
    from feature_repo.store import FeatureSettings
    from infra.front import FrontSettings
    from models.retrain_settings import RetrainSettings
    from serve.config import ServeSettings
    from streams.config import KafkaSettings
    from streams.contract.listen import ListenSettings
    from streams.flow import FlowSettings

    return [("Kafka clients", KafkaSettings), ("flow", FlowSettings),
            ("feature store", FeatureSettings), ("service", ServeSettings),
            ("admission front (marquee up, serve)", FrontSettings),
            ("Prometheus (marquee up)", ListenSettings),
            ("continuous training (marquee retrain, models, up)", RetrainSettings)]


def variable(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of field ``name``: its first alias, else prefix + name."""
    alias = cls.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return (cls.model_config.get("env_prefix", "") + name).upper()


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "JSON object (see the description)"
    if value is None:
        return "unset"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, components, description), one per variable: a variable read by
    several components (``MARQUEE_DATA_DIR``) is one row naming all of them.
    """
    found: dict[str, list[str]] = {}
    for component, cls in settings_classes():
        for name, field in cls.model_fields.items():
            var = variable(cls, name)
            if var not in found:
                found[var] = [_default(field), component, field.description or ""]
                continue
            found[var][1] += f", {component}"
            if len(field.description or "") > len(found[var][2]):
                found[var][2] = field.description or ""
    return [(var, default, who, what.replace("|", "\\|"))
            for var, (default, who, what) in found.items()]


def markdown() -> str:
    """The settings as a Markdown table."""
    lines = ["| variable | default | read by | what it does |", "| --- | --- | --- | --- |"]
    lines += [f"| `{var}` | {default} | {who} | {what} |" for var, default, who, what in rows()]
    return "\n".join(lines)


def with_table(text: str) -> str:
    """``text`` with the table between the settings markers replaced by the current one."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} block to fill; add the two marker lines")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown()}\n{END}{tail}"


def write_readme(path: Path) -> bool:
    """Refresh the README's settings table; True when it changed."""
    text = path.read_text()
    new = with_table(text)
    if new != text:
        path.write_text(new)
    return new != text
