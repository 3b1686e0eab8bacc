"""Every command the README names exists in the CLI (a merge can drop a registration)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from infra.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (none for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_in_the_readme_is_registered():
    named = set(re.findall(r"`marquee ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", README.read_text()))
    assert len(named) > 10
    top = subcommands(build_parser())
    missing = []
    for words in sorted(named):
        first, *rest = words.split()
        if first not in top:
            missing.append(words)
            continue
        below = subcommands(top[first])
        if rest and below and rest[0] not in below:
            missing.append(words)
    assert not missing, f"README names commands the CLI lacks: {missing}"
