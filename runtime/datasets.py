"""Readers for the BSD10k / BSD35k-CS development layouts, the evaluation package and label files.

Layouts: docs/task.md §1. Ids come from CSV text and are never trusted as paths: `safe_child` is the
only way an id becomes a file name. Errors name the file, the data row (1 = first row after the header), the
physical line and the reason.

The development, evaluation and label-file readers share one row-numbering, id-safety and embedding-loading rule
set, so they live together: split apart, each would carry its own copy of the rules that make an id a path.
The item type they return is `clip.Clip`; the file hash is `hashing.file_sha256`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .clip import Clip
from .csvfile import CsvRow, header_of, read_csv, where
from .errors import DataError
from .hashing import file_sha256
from .layout import EMBEDDING_DIM, EMBEDDING_KINDS, embedding_dir
from .taxonomy import CODE_TO_INDEX, OTHER_CODES

DEV_LAYOUTS: dict[str, str] = {
    "BSD10k": "metadata/BSD10k_metadata.csv",
    "BSD35k-CS": "metadata/BSD35k-CS_metadata.csv",
}
DEV_COLUMNS: tuple[str, ...] = ("sound_id", "class", "title", "tags", "description")
EVAL_COLUMNS: tuple[str, ...] = ("anonymous_id", "title", "tags", "description")
#: audio files an evaluation package (or `bst-rt classify`) may hold, found by id: what libsndfile decodes
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LABEL_ID_COLUMNS: tuple[str, ...] = ("id", "anonymous_id", "sound_id")

Missing = Literal["error", "skip", "zero"]


def safe_child(root: Path, name: str, suffix: str) -> Path:
    """`root/<name><suffix>`, refusing any id that could name a file outside `root`, or that has control
    characters (a '\\r' inside an id would also break the submission CSV, whose rows end in '\\n')."""
    bad = (
        not name
        or name != name.strip()
        or "/" in name
        or "\\" in name
        or ".." in name
        or os.path.isabs(name)
        or name in {".", "~"}
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
    )
    if bad:
        raise DataError(
            f"id {name!r} cannot be used as a file name (empty, path separators, '..', absolute or control characters)"
        )
    return Path(root) / f"{name}{suffix}"


@dataclass
class DevDataset:
    """A development set (BSD10k or BSD35k-CS layout): clips in metadata file order, `*-other` rows dropped."""

    root: Path
    name: str
    metadata_path: Path
    clips: list[Clip]
    dropped_other: int = 0
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.clips]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.clips]  # type: ignore[misc]

    @property
    def label_indices(self) -> np.ndarray:
        """Official label indices 0..22 (int64); kept `*-other` rows (drop_other=False) have none: DataError."""
        try:
            return np.array([CODE_TO_INDEX[c.label] for c in self.clips], dtype=np.int64)  # type: ignore[index]
        except KeyError as exc:
            raise DataError(f"{self.metadata_path}: class {exc.args[0]!r} has no label index (a *-other row)") from None

    @property
    def confidences(self) -> np.ndarray:
        """Annotator confidence 1-5 per clip as float64, NaN where the CSV cell is empty (all of BSD35k-CS)."""
        return np.array([np.nan if c.confidence is None else c.confidence for c in self.clips], dtype=np.float64)

    def embedding_dir(self, kind: str) -> Path:
        if kind not in EMBEDDING_KINDS:
            raise DataError(f"unknown embedding kind {kind!r}: use one of {', '.join(EMBEDDING_KINDS)}")
        return embedding_dir(self.root, kind)

    def embedding_mask(self, kind: str) -> np.ndarray:
        """Which clips have an embedding file of this kind (bool [N])."""
        folder = self.embedding_dir(kind)
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        return np.array([f"{c.id}.npy" in present for c in self.clips], dtype=bool)

    def has_embeddings(self, kind: str) -> bool:
        """True when every clip has a precomputed embedding of this kind."""
        return bool(self.embedding_mask(kind).all()) and len(self.clips) > 0

    def load_embeddings(self, kind: str, *, missing: Missing = "error") -> np.ndarray:
        """float32 [N, 512] in clip order from `features/clap_<kind>_embeddings/<id>.npy`.

        Missing files: 'error' raises naming how many and the first few; 'skip' returns only the rows present (align
        with `embedding_mask`); 'zero' fills zero rows (the runtime's missing-modality input).
        """
        if missing not in ("error", "skip", "zero"):
            raise DataError(f"unknown missing={missing!r}: use error, skip or zero")
        folder = self.embedding_dir(kind)
        mask = self.embedding_mask(kind)
        if not mask.all() and missing == "error":
            absent = [c.id for c, ok in zip(self.clips, mask) if not ok]
            raise DataError(
                f"{folder}: {len(absent)} of {len(self.clips)} embeddings missing (first: {', '.join(absent[:5])}); "
                f"run `bst-train embed` on {self.root}"
            )
        out = np.zeros((len(self.clips), EMBEDDING_DIM), dtype=np.float32)
        for i, clip in enumerate(self.clips):
            if mask[i]:
                out[i] = _load_vector(safe_child(folder, clip.id, ".npy"))
        return out[mask] if missing == "skip" else out

    def fingerprint(self) -> str:
        """sha256 of the metadata file bytes: provenance of what a model was trained on."""
        return file_sha256(self.metadata_path)

    def index_of(self, clip_id: str) -> int:
        if not self._index:
            self._index.update({c.id: i for i, c in enumerate(self.clips)})
        return self._index[clip_id]


def _load_vector(path: Path) -> np.ndarray:
    try:
        vec = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    if vec.shape not in ((EMBEDDING_DIM,), (1, EMBEDDING_DIM)) or vec.dtype.kind != "f":
        raise DataError(f"{path}: expected a float vector of {EMBEDDING_DIM}, got {vec.dtype} {vec.shape}")
    return vec.reshape(EMBEDDING_DIM)


def detect_dev_layout(root: Path) -> tuple[str, Path]:
    """(name, metadata path) of the one development layout found under `root`."""
    root = Path(root)
    found = [(name, root / rel) for name, rel in DEV_LAYOUTS.items() if (root / rel).is_file()]
    if len(found) != 1:
        expected = " or ".join(str(root / rel) for rel in DEV_LAYOUTS.values())
        what = "no development metadata" if not found else "both BSD10k and BSD35k-CS metadata"
        raise DataError(f"{root}: {what}; expected exactly one of {expected}")
    return found[0]


def read_dev_dataset(root: Path, *, drop_other: bool = True) -> DevDataset:
    """Read a BSD10k or BSD35k-CS folder; the label is the `class` column (never `class_idx`)."""
    root = Path(root)
    name, meta = detect_dev_layout(root)
    _, rows = read_csv(meta, DEV_COLUMNS)
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    dropped = 0
    for r in rows:
        v = r.values
        code = v["class"].strip()
        if code in OTHER_CODES and drop_other:
            dropped += 1
            continue
        if code not in CODE_TO_INDEX and code not in OTHER_CODES:
            raise DataError(f"{where(meta, r)}: unknown class {code!r} (not one of the 23 BST codes or *-other)")
        sound_id = v["sound_id"].strip()
        audio = _checked_id(meta, r, sound_id, root / "audio", ".wav", seen)
        clips.append(
            Clip(
                id=sound_id,
                title=v["title"],
                tags=v["tags"],
                description=v["description"],
                audio_path=audio,
                label=code,
                confidence=_confidence(meta, r, v.get("confidence", "")),
            )
        )
    return DevDataset(root=root, name=name, metadata_path=meta, clips=clips, dropped_other=dropped)


def _checked_id(meta: Path, r: CsvRow, clip_id: str, audio_dir: Path, suffix: str, seen: dict[str, int]) -> Path:
    try:
        path = safe_child(audio_dir, clip_id, suffix)
    except DataError as exc:
        raise DataError(f"{where(meta, r)}: {exc}") from None
    if clip_id in seen:
        raise DataError(f"{where(meta, r)}: duplicate id {clip_id!r} (first at row {seen[clip_id]})")
    seen[clip_id] = r.row
    return path


def _confidence(meta: Path, r: CsvRow, cell: str) -> float | None:
    cell = (cell or "").strip()
    if not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where(meta, r)}: confidence {cell!r} is not a number") from None
    if not np.isfinite(value):
        raise DataError(f"{where(meta, r)}: confidence {cell!r} is not finite")
    return value


@dataclass
class EvalPackage:
    """An evaluation package: clips with no labels; `audio_path` is None where the WAV does not exist."""

    root: Path
    metadata_path: Path
    clips: list[Clip]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.clips]

    @property
    def repaired_ids(self) -> list[str]:
        """Ids whose metadata row was not valid UTF-8 and was read with replacement characters."""
        return [c.id for c in self.clips if c.metadata_repaired]


def audio_files_by_id(folder: Path) -> dict[str, Path]:
    """id -> the one audio file `folder/<id><suffix>` (any of AUDIO_SUFFIXES, any case); DataError naming both files
    when two files share one id (e.g. x.wav and x.flac): which one was meant cannot be guessed."""
    found: dict[str, Path] = {}
    if not Path(folder).is_dir():
        return found
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES or path.name.startswith("."):
            continue
        clip_id = path.name[: -len(path.suffix)]
        if clip_id in found:
            raise DataError(f"{folder}: two audio files for id {clip_id!r}: {found[clip_id].name} and {path.name}; "
                            "keep one")
        found[clip_id] = path
    return found


def find_eval_metadata(root: Path) -> Path:
    """The one CSV in `root` or `root/metadata` with an `anonymous_id` column and no `class` column (a labels file
    is not metadata); the official file name is unpublished."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected an evaluation package)")
    candidates = sorted(p for folder in (root, root / "metadata") if folder.is_dir() for p in folder.glob("*.csv"))
    matching = []
    unreadable: list[str] = []
    for path in candidates:
        try:
            header = header_of(path)
        except DataError as exc:
            unreadable.append(str(exc))
            continue
        if "anonymous_id" in header and "class" not in header:
            matching.append(path)
    if len(matching) == 1:
        return matching[0]
    if not matching:
        why = f"; unreadable: {'; '.join(unreadable)}" if unreadable else ""
        raise DataError(
            f"{root}: no metadata CSV (one with an anonymous_id column) in the package root or metadata/ "
            f"(looked at {len(candidates)} CSV file(s)){why}; pass --metadata FILE"
        )
    raise DataError(f"{root}: several candidate metadata CSVs ({', '.join(map(str, matching))}); pass --metadata FILE")


def read_eval_package(root: Path, metadata: Path | None = None, *, strict_metadata: bool = False) -> EvalPackage:
    """Read an evaluation package: `anonymous_id,title,tags,description` + `audio/<anonymous_id>.<suffix>`.

    Audio is found by id with any suffix libsndfile reads (AUDIO_SUFFIXES). A metadata row that is not valid UTF-8
    is read with replacement characters and marked (`Clip.metadata_repaired`); `strict_metadata` refuses instead.
    """
    root = Path(root)
    meta = Path(metadata) if metadata is not None else find_eval_metadata(root)
    _, rows = read_csv(meta, EVAL_COLUMNS, repair_encoding=not strict_metadata)
    audio_files = audio_files_by_id(root / "audio")
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for r in rows:
        v = r.values
        clip_id = v["anonymous_id"].strip()
        _checked_id(meta, r, clip_id, root / "audio", ".wav", seen)  # refuses ids that are not safe file names
        audio = audio_files.get(clip_id)
        clips.append(
            Clip(
                id=clip_id,
                title=v["title"],
                tags=v["tags"],
                description=v["description"],
                audio_path=audio if audio is not None and audio.is_file() else None,
                metadata_repaired=r.repaired,
            )
        )
    return EvalPackage(root=root, metadata_path=meta, clips=clips)


def read_labels(path: Path) -> dict[str, str]:
    """id -> code from a labels CSV (id column `id`, `anonymous_id` or `sound_id`, plus `class`)."""
    path = Path(path)
    header = header_of(path)
    id_col = next((c for c in LABEL_ID_COLUMNS if c in header), None)
    if id_col is None:
        raise DataError(f"{path}: row 0 (header): no id column (one of {', '.join(LABEL_ID_COLUMNS)}); found {header}")
    _, rows = read_csv(path, (id_col, "class"))
    labels: dict[str, str] = {}
    first: dict[str, int] = {}
    for r in rows:
        clip_id, code = r.values[id_col].strip(), r.values["class"].strip()
        if not clip_id:
            raise DataError(f"{where(path, r)}: empty id")
        if code not in CODE_TO_INDEX:
            raise DataError(f"{where(path, r)}: unknown class {code!r} (not one of the 23 BST codes)")
        if clip_id in labels:
            raise DataError(f"{where(path, r)}: duplicate id {clip_id!r} (first at row {first[clip_id]})")
        labels[clip_id] = code
        first[clip_id] = r.row
    return labels
