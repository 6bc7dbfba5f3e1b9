"""YAML for the `meta.yaml` files, written with PyYAML's safe dumper (block style, keys in the order given).

PyYAML quotes every string that a reader could take for a number, boolean, date or null, so values round-trip through
`yaml.safe_load`; numpy scalars are turned into plain Python numbers first (the safe dumper refuses them).
"""
from __future__ import annotations

from typing import Any, Mapping

import yaml


def _plain(value: Any) -> Any:
    """Plain Python data: mappings to dicts, sequences to lists, numpy scalars to Python scalars."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to YAML")


#: characters PyYAML writes raw with allow_unicode but reads back as line breaks (NEL, LS, PS)
_BREAKS = ("\x85", "\u2028", "\u2029")


def _has_break_chars(value: Any) -> bool:
    if isinstance(value, str):
        return any(ch in value for ch in _BREAKS)
    if isinstance(value, dict):
        return any(_has_break_chars(k) or _has_break_chars(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_break_chars(v) for v in value)
    return False


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of a mapping whose leaves are str, int, float, bool or None.

    Non-ASCII text is written as is (names with accents stay readable), except when a string holds a character that
    PyYAML would read back as a line break: then everything non-ASCII is escaped so the file round-trips.
    """
    if not isinstance(data, Mapping):
        raise TypeError("the top level must be a mapping")
    plain = _plain(data)
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=not _has_break_chars(plain),
                          default_flow_style=False, width=4096)
