"""The manifest's JSON Schema, generated from the dataclasses the runtime parses it with (one source of truth).

Published as `docs/manifest.schema.json` for deployers who read bundles from other languages; a test keeps the
published file equal to `manifest_json_schema()` and validates exported manifests against it.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from .manifest import SCHEMA_VERSION, Manifest

_SCALARS = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
            bool: {"type": "boolean"}}


def _schema_of(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a, defs) for a in args]}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs)}
    if is_dataclass(hint):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            defs[name] = _object_schema(hint, defs)
        return {"$ref": f"#/$defs/{name}"}
    return dict(_SCALARS[hint])


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {f.name: _schema_of(hints[f.name], defs) for f in fields(cls)}
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    out: dict[str, Any] = {"type": "object", "properties": props, "required": required,
                           "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        out["description"] = " ".join(cls.__doc__.split())
    return out


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of `manifest.json` at this runtime's schema version."""
    defs: dict[str, Any] = {}
    root = _object_schema(Manifest, defs)
    root["properties"]["schema_version"] = {"type": "string", "pattern": rf"^{SCHEMA_VERSION.split('.')[0]}\.[0-9]+$"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"bst-rt bundle manifest (schema {SCHEMA_VERSION.split('.')[0]}.x)", **root, "$defs": defs}


def schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":  # python -m bst_rt.runtime.manifest_schema > docs/manifest.schema.json
    print(schema_text(), end="")
