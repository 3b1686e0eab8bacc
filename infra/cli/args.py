"""What every parser module of the CLI shares: how a command is declared, how its help reads,
and how results are printed. One home, so the command groups only say what is theirs.
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples kept as written; each option's default shown unless its help
    already names one (or it has none).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def command(sub: argparse._SubParsersAction, name: str, func: Handler, help: str,
            description: str | None = None,
            examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A subcommand that runs ``func(args)``, with its examples under its help. A one-line
    description is wrapped; one with line breaks is shown as written.
    """
    text = description or help
    if "\n" not in text:
        text = textwrap.fill(text, 79)
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    p = sub.add_parser(name, help=help, description=text, epilog=epilog,
                       formatter_class=Formatter)
    p.set_defaults(func=func)
    return p


def model_dirs(p: argparse.ArgumentParser, many: bool = False,
               help: str = "model directory (from marquee train)") -> None:
    """``--model DIR`` (or several with ``many``)."""
    p.add_argument("--model", type=Path, required=True, nargs="+" if many else None, help=help)


def out_path(p: argparse.ArgumentParser, default: Path | None, help: str) -> None:
    """``--out PATH``: required when there is no default."""
    p.add_argument("--out", type=Path, default=default, required=default is None, help=help)


def print_json(result: Any) -> int:
    """Print a command's result as indented JSON; the exit status of a command that did."""
    print(json.dumps(result, indent=2, default=str))
    return 0


def log_progress() -> None:
    """Send the library's INFO logs (epochs, stages) to stderr with timestamps."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
