r"""What JSON can carry but the API refuses: NaN/Infinity (Python's ``json`` reads them, strict
JSON has no such numbers, and they cannot be written back) and lone UTF-16 surrogates
(``"\ud800"`` decodes to a string that no UTF-8 encoder accepts). Either one, echoed in a
response or an error, used to turn a bad request into a 500; refusing them at validation keeps
every later step, and every message, on ordinary text and finite numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str, limit: int = 80) -> str:
    r"""``text`` safe to put in any JSON answer: surrogates as ``\udXXX`` escapes, cut to
    ``limit`` characters (an error message never carries a megabyte of someone's input).
    """
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[:limit] + "..."


def check_json_value(value: Any, path: str) -> None:
    """Raise ``ValueError`` naming the place and the fix for the first NaN/Infinity or lone
    surrogate anywhere in ``value`` (dict keys included); return quietly otherwise.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON does not have; send a finite "
                             "number")
    elif isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValueError(f"{path} holds a lone UTF-16 surrogate ({printable(value, 40)}), "
                             "which is not text; send valid Unicode (UTF-8, or \\u escapes "
                             "in pairs)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _SURROGATE.search(key):
                raise ValueError(f"{path} has a key with a lone UTF-16 surrogate "
                                 f"({printable(key, 40)}); send valid Unicode")
            check_json_value(item, f"{path}.{printable(str(key), 40)}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json_value(item, f"{path}[{i}]")


_JSON_TYPE = {bool: "boolean", int: "integer", float: "number", str: "string",
              type(None): "null", list: "array", dict: "object"}


def json_types(schema: dict[str, Any]) -> dict[str, set[str]]:
    """Property name -> the JSON types ``schema`` allows it (typed properties only)."""
    out = {}
    for name, prop in schema.get("properties", {}).items():
        branches = prop.get("anyOf", [prop])
        if all("type" in b for b in branches):
            out[name] = {b["type"] for b in branches}
    return out


def check_json_types(obj: dict[str, Any], allowed: dict[str, set[str]], path: str) -> None:
    """Raise ``ValueError`` for a value whose JSON type the schema does not allow: pydantic's
    lax mode would take ``"5"`` or ``true`` for an integer, which the published schema refuses.
    """
    for name, value in obj.items():
        types = allowed.get(name) if isinstance(name, str) else None
        if types is None:
            continue
        kind = _JSON_TYPE.get(type(value), type(value).__name__)
        if kind not in types and not (kind == "integer" and "number" in types):
            raise ValueError(f"{path}.{name} is a JSON {kind}; send a JSON "
                             f"{' or '.join(sorted(types))}")
