"""`manifest.json`: the one contract between `bst-train export` and the runtime.

Keys equal dataclass fields. The runtime reads nothing else from the export side: graph I/O names, the order of the
heads graph's family and pool axes, the systems' policies and every file's sha256 are all here.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError

MANIFEST_NAME = "manifest.json"
#: major.minor; a reader refuses another major, accepts any minor of its own major
SCHEMA_VERSION = "1.3"  # 1.1: optional `portable` section (docs/portable.md); 1.2: portable contract v2 (resample graph); 1.3: graphs[*].int8_format


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: list[str | int]


@dataclass(frozen=True)
class FileSpec:
    """Any file of the bundle (graphs included): what load_bundle verifies before a session opens."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class GraphSpec:
    name: str
    file: str
    sha256: str
    size: int
    opset: int
    precision: str  # "fp32" | "int8"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: measured agreement with the graph's source at export time (tolerance, max_abs_diff, cosine, label agreement)
    parity: dict[str, Any] = field(default_factory=dict)
    #: weight format of an int8 graph (`bst_rt.runtime.int8_format.INT8_FORMATS`); "" for fp32, and for int8 graphs
    #: of manifests before 1.3 (their only format, `LEGACY_INT8_FORMAT`)
    int8_format: str = ""

    def file_spec(self) -> FileSpec:
        return FileSpec(self.file, self.sha256, self.size)


@dataclass(frozen=True)
class TextSpec:
    template_version: str
    tokenizer_file: str
    max_tokens: int
    tokenizer_source: str = ""


@dataclass(frozen=True)
class AudioSpec:
    sample_rate_hz: int
    clip_samples: int
    chunk_rule: str
    mel: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadsSpec:
    """Axis order of the heads graph and the families the runtime falls back on."""

    families: list[str]
    pools: list[str]
    pool_weights: list[list[float]]
    text_only_family: str
    audio_only_family: str
    class_text_embeddings_file: str


@dataclass(frozen=True)
class Manifest:
    schema_version: str
    bundle_id: str
    created: str
    classes: list[str]
    text: TextSpec
    audio: AudioSpec
    heads: HeadsSpec
    graphs: dict[str, GraphSpec]
    files: dict[str, FileSpec]
    #: SystemPolicy JSON objects keyed by system id ("1".."4")
    systems: dict[str, dict[str, Any]]
    ranker: dict[str, Any]
    provenance: dict[str, Any]
    clap_weights: str = "checkpoint"
    #: the graph-only contract for non-Python clients (`bst_rt.runtime.portable.portable_section`); {} when absent
    portable: dict[str, Any] = field(default_factory=dict)

    def all_files(self) -> list[FileSpec]:
        return [g.file_spec() for g in self.graphs.values()] + list(self.files.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _build(cls, data: Any, where: str):
    """Dataclass from a dict, naming the manifest key that is missing or unknown."""
    if data is None:
        raise BundleError(f"{where}: missing; not a complete bst-rt manifest (re-export the bundle)")
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown = sorted(set(data) - names)
    missing = sorted(required - set(data))
    if missing:
        raise BundleError(f"{where}: missing key(s) {', '.join(missing)}")
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {', '.join(unknown)} (written by a newer bst-train export?)")
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if ": " in where else f"{where}: "
    for name, value in data.items():
        _check_type(value, hints[name], f"{prefix}{name}")
    return cls(**data)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_type(value: Any, hint: Any, where: str) -> None:
    """Refuse a value whose JSON type differs from the field's annotation (a size given as a string, say): read on,
    it would fail far from its cause or, worse, compare unequal and pass silently."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                _check_type(value, option, where)
                return
            except BundleError as exc:
                errors.append(exc)
        raise BundleError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {type(value).__name__}")
    if origin is list:
        if not isinstance(value, list):
            raise BundleError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_type(item, args[0], f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object, got {type(value).__name__}")
        for key, item in value.items():
            _check_type(item, args[1], f"{where}.{key}")
        return
    if is_dataclass(hint):
        if not isinstance(value, hint):
            raise BundleError(f"{where}: expected an object ({hint.__name__}), got {type(value).__name__}")
        return
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
    }.get(hint)
    if ok is None:
        raise TypeError(f"manifest field {where}: unsupported annotation {hint!r}")
    if not ok:
        raise BundleError(f"{where}: expected {_type_name(hint)}, got {type(value).__name__} {value!r:.40}")


def manifest_from_dict(data: dict, source: str = MANIFEST_NAME) -> Manifest:
    """Parse and check the schema major before anything else, so an unknown layout is refused, not misread."""
    if not isinstance(data, dict) or "schema_version" not in data:
        raise BundleError(f"{source}: no schema_version; this is not a bst-rt bundle manifest")
    version = str(data["schema_version"])
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise BundleError(
            f"{source}: schema_version {version} is not supported by this bst-rt (reads {SCHEMA_VERSION.split('.')[0]}.x);"
            " re-export the bundle with a matching `bst-train export` or install the matching bst-rt"
        )
    d = dict(data)
    try:
        d["text"] = _build(TextSpec, d.get("text"), f"{source}: text")
        d["audio"] = _build(AudioSpec, d.get("audio"), f"{source}: audio")
        d["heads"] = _build(HeadsSpec, d.get("heads"), f"{source}: heads")
        graphs = {}
        for name, g in (d.get("graphs") or {}).items():
            g = dict(g)
            for io in ("inputs", "outputs"):
                g[io] = [_build(TensorSpec, t, f"{source}: graphs.{name}.{io}") for t in g.get(io, [])]
            graphs[name] = _build(GraphSpec, g, f"{source}: graphs.{name}")
        d["graphs"] = graphs
        d["files"] = {k: _build(FileSpec, v, f"{source}: files.{k}") for k, v in (d.get("files") or {}).items()}
        return _build(Manifest, d, source)
    except TypeError as exc:  # a value of the wrong shape inside a section
        raise BundleError(f"{source}: malformed manifest ({exc})") from None


def read_manifest(path: Path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest.json; this folder is not a bundle (build one with `bst-train export`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); re-export the bundle") from None
    return manifest_from_dict(data, str(path))
