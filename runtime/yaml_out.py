"""A tiny YAML emitter for the `meta.yaml` files: block mappings and sequences of plain data, no PyYAML needed.

Strings are always double-quoted with JSON escapes (a JSON string is a valid YAML double-quoted scalar), so no value
can be misread as a number, boolean, date or null.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
#: characters YAML does not allow raw (or reads as line breaks): written as escapes inside double quotes
_NEEDS_ESCAPE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_RESERVED = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of a mapping whose leaves are str, int, float, bool or None."""
    if not isinstance(data, Mapping):
        raise TypeError("the top level must be a mapping")
    return "".join(_block(data, 0)) or "{}\n"


def _key(key: object) -> str:
    text = str(key)
    return text if _PLAIN_KEY.fullmatch(text) and text.lower() not in _RESERVED else _quoted(text)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar: JSON escapes, plus YAML escapes for what YAML will not take raw."""
    return _NEEDS_ESCAPE.sub(_escape, json.dumps(text, ensure_ascii=False))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 readers (PyYAML) only take floats with a dot: 1e-05 must be written 1.0e-05
        return text if "." in mantissa else f"{mantissa}.0{e}{exponent}"
    if isinstance(value, str):
        return _quoted(value)
    if hasattr(value, "item"):  # numpy scalars
        return _scalar(value.item())  # type: ignore[union-attr]
    raise TypeError(f"cannot write {type(value).__name__} to YAML")


def _is_empty_container(value: object) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and len(value) == 0


def _block(value: object, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, (Mapping, list, tuple)) and not _is_empty_container(item):
                lines.append(f"{pad}{_key(key)}:\n")
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{pad}{_key(key)}: {_inline(item)}\n")
    else:  # sequence
        for item in value:  # type: ignore[union-attr]
            if isinstance(item, (Mapping, list, tuple)) and not _is_empty_container(item):
                nested = _block(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}\n")
    return lines


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return _scalar(value)
