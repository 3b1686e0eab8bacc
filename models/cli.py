"""Subcommands of the `models` package (added as its issues land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to `marquee`."""
