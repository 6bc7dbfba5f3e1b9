"""Loading a bundle: the manifest is parsed and every file's size and sha256 checked before any session opens.

A tampered, truncated or missing file is refused with its name and what to do; a graph that loads but was altered
would otherwise produce plausible, wrong predictions. Where a bundle lives by default is decided here too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .hashing import file_sha256
from .errors import BundleError
from .layout import EMBEDDING_DIM

from .manifest import MANIFEST_NAME, FileSpec, GraphSpec, Manifest, read_manifest
from .manifest_contract import check_manifest_contract
from .taxonomy import CODES

#: environment variable that names the bundle when `--bundle` is not given
BUNDLE_ENV = "BST_BUNDLE"
#: where `bst-train demo` records the bundle it built (one line: an absolute path)
DEFAULT_RECORD_NAME = "default-bundle"
#: the bundle `bst-train demo` writes, relative to the working directory
DEMO_BUNDLE_DIR = Path("artifacts") / "demo"


def config_dir() -> Path:
    """The platform's per-user config folder for bst-rt (typer.get_app_dir): $XDG_CONFIG_HOME/bst-rt on Linux,
    ~/Library/Application Support/bst-rt on macOS, %APPDATA%\\bst-rt on Windows."""
    import typer

    return Path(typer.get_app_dir("bst-rt"))


def record_default_bundle(path: Path) -> Path:
    """Remember `path` as the bundle `bst-rt predict` uses when neither --bundle nor BST_BUNDLE is given."""
    from .atomic import atomic_write_text

    record = config_dir() / DEFAULT_RECORD_NAME
    atomic_write_text(record, str(Path(path).resolve()) + "\n")
    return record


def resolve_bundle_dir(explicit: Path | None = None) -> Path:
    """--bundle, else $BST_BUNDLE, else the bundle the demo recorded, else ./artifacts/demo."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV])
    record = config_dir() / DEFAULT_RECORD_NAME
    if record.is_file():
        recorded = Path(record.read_text(encoding="utf-8").strip())
        if (recorded / MANIFEST_NAME).is_file():
            return recorded
    if (DEMO_BUNDLE_DIR / MANIFEST_NAME).is_file():
        return DEMO_BUNDLE_DIR
    raise BundleError(
        f"no bundle given and none found: pass --bundle DIR, set {BUNDLE_ENV}, or run `bst-train demo` "
        f"(it writes {DEMO_BUNDLE_DIR} and records it in {record})"
    )


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        return self.root / name

    def require(self, systems: Iterable[int], *, int8: bool = False) -> None:
        """Refuse, in one line, a system this bundle does not define or int8 graphs it does not have: the one check
        behind `Predictor.load` and `bst-rt predict` (local or Ray), made before any session or worker starts."""
        for system in systems:
            if str(system) not in self.manifest.systems:
                raise BundleError(f"{self.root}: no system {system} "
                                  f"(bundle has {', '.join(sorted(self.manifest.systems))})")
        if int8 and not self.has_int8():
            raise BundleError(f"{self.root}: no int8 graphs in this bundle (re-export with `bst-train export --int8`)")

    def graph(self, name: str, *, int8: bool = False) -> GraphSpec:
        """The graph called `name` (its int8 variant when asked and present)."""
        if int8 and f"{name}_int8" in self.manifest.graphs:
            return self.manifest.graphs[f"{name}_int8"]
        if name not in self.manifest.graphs:
            raise BundleError(f"{self.root / MANIFEST_NAME}: no graph {name!r} in this bundle")
        return self.manifest.graphs[name]

    def has_int8(self) -> bool:
        return any(g.precision == "int8" for g in self.manifest.graphs.values())

    def class_text_embeddings(self) -> np.ndarray:
        """[23,512] float32; loaded without pickle so a hostile .npy cannot run code."""
        path = self.path(self.manifest.heads.class_text_embeddings_file)
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise BundleError(f"{path}: not a plain .npy array ({exc}); re-export the bundle") from None
        if arr.shape != (len(self.manifest.classes), EMBEDDING_DIM):
            raise BundleError(f"{path}: shape {arr.shape}, expected ({len(self.manifest.classes)}, {EMBEDDING_DIM})")
        return arr.astype(np.float32, copy=False)


def _safe_member(root: Path, name: str) -> Path:
    """Manifest file names stay inside the bundle folder."""
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or not name:
        raise BundleError(f"{root / MANIFEST_NAME}: file name {name!r} points outside the bundle; refusing it")
    return root / p


def verify_file(root: Path, spec: FileSpec) -> None:
    path = _safe_member(root, spec.file)
    if not path.is_file():
        raise BundleError(f"{path}: missing from the bundle; restore it or re-export the bundle with `bst-train export`")
    size = path.stat().st_size
    if size != spec.size:
        raise BundleError(
            f"{path}: size {size} bytes, manifest says {spec.size}; the file was altered or truncated —"
            " restore it or re-export the bundle"
        )
    if file_sha256(path) != spec.sha256:
        raise BundleError(
            f"{path}: sha256 does not match the manifest; the file was altered — restore it or re-export the bundle"
        )


def verify_files(root: Path, specs: list[FileSpec]) -> None:
    """`verify_file` of each, hashed in parallel threads (hashlib releases the GIL on large reads; the 500 MB text
    graph then no longer waits for the others), the first failure in manifest order raised."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(specs), os.cpu_count() or 1))) as pool:
        futures = [pool.submit(verify_file, root, spec) for spec in specs]
    for future in futures:
        future.result()


def load_bundle(root: Path, *, verify: bool = True) -> Bundle:
    """Parse the manifest (schema and value types checked), verify every listed file, then check that the contract it
    records (text template, front end, chunk rule, features, tokenizer) is the one this runtime implements."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder (build one with `bst-train export` or `bst-train demo`)")
    manifest = read_manifest(root / MANIFEST_NAME)

    if tuple(manifest.classes) != CODES:
        raise BundleError(f"{root / MANIFEST_NAME}: class list differs from this bst-rt's taxonomy; re-export")
    if verify:
        verify_files(root, list(manifest.all_files()))
    check_manifest_contract(manifest, root)
    return Bundle(root, manifest)
