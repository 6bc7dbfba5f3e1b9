"""External datasets (ESC-50, UrbanSound8K, FSD50K) read from their standard layouts and mapped to BST codes.

The mapping is an explicit table, `data/external_mapping.csv` (dataset, label, bst_code): a label not in it is
dropped and counted, never guessed. FSD50K clips carry several labels (leaf and ancestors); a clip is kept only when
its mapped labels agree on one BST code, otherwise it is dropped as ambiguous. Embeddings are read from
`ROOT/features/clap_{audio,text,text_masked}_embeddings/<clip id>.npy` (the `bst-train embed` layout; clip id = audio file
stem); external sets have no Freesound-style metadata, so a missing text embedding is a zero row (the model's
no-metadata input).
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from bst_rt.runtime.datasets import safe_child
from bst_rt.runtime.errors import DataError
from bst_rt.runtime.layout import EMBEDDING_DIM, embedding_dir
from bst_rt.runtime.taxonomy import CODE_TO_INDEX

from .data import Arrays, arrays_fingerprint


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps its label table, which column holds the clip's file name and which its label(s)."""

    metadata: tuple[str, ...]
    file_column: str
    label_column: str
    multi_label: bool = False


LAYOUTS: dict[str, Layout] = {
    "esc50": Layout(("meta/esc50.csv",), "filename", "category"),
    "us8k": Layout(("metadata/UrbanSound8K.csv",), "slice_file_name", "class"),
    "fsd50k": Layout(("FSD50K.ground_truth/dev.csv", "FSD50K.ground_truth/eval.csv"), "fname", "labels",
                     multi_label=True),
}


def mapping_table() -> dict[str, dict[str, str]]:
    """{dataset: {label: bst_code}} from the packaged mapping CSV (checked against the 23 codes)."""
    path = Path(str(resources.files("bst_rt.train") / "data" / "external_mapping.csv"))
    table: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), 1):
            if row["bst_code"] not in CODE_TO_INDEX:
                raise DataError(f"{path}: row {row_no}: {row['bst_code']!r} is not a BST second-level code")
            table.setdefault(row["dataset"], {})[row["label"]] = row["bst_code"]
    return table


@dataclass
class MappedClips:
    ids: list[str]
    codes: list[str]
    dropped: Counter  # reason -> count ("unmapped:<label>", "ambiguous")


def map_clips(name: str, root: Path) -> MappedClips:
    """Read the dataset's label table(s) and keep the clips whose label(s) map to exactly one BST code."""
    if name not in LAYOUTS:
        raise DataError(f"unknown external dataset {name!r}: use one of {', '.join(LAYOUTS)}")
    layout, table = LAYOUTS[name], mapping_table().get(name, {})
    metas = [Path(root) / m for m in layout.metadata if (Path(root) / m).is_file()]
    if not metas:
        raise DataError(f"{root}: no {name} label table (expected {' or '.join(layout.metadata)})")
    ids, codes, dropped = [], [], Counter()
    for meta in metas:
        with open(meta, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {layout.file_column, layout.label_column} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{meta}: missing columns {sorted(missing)}")
            for row in reader:
                labels = row[layout.label_column].split(",") if layout.multi_label else [row[layout.label_column]]
                mapped = {table[lab.strip()] for lab in labels if lab.strip() in table}
                if len(mapped) == 1:
                    ids.append(Path(row[layout.file_column].strip()).stem)
                    codes.append(mapped.pop())
                elif mapped:
                    dropped["ambiguous"] += 1
                else:
                    dropped[f"unmapped:{labels[0].strip()}"] += 1
    return MappedClips(ids, codes, dropped)


def load_external(name: str, root: Path, *, log: Callable[[str], None] = print) -> Arrays:
    """Mapped clips of one external dataset as pool `Arrays` (labels = BST indices, no confidences)."""
    clips = map_clips(name, root)
    audio = _embeddings(embedding_dir(root, "audio"), clips.ids, required=True)
    text = _embeddings(embedding_dir(root, "text"), clips.ids, required=False)
    masked = _embeddings(embedding_dir(root, "text_masked"), clips.ids, required=False)
    n_drop = sum(clips.dropped.values())
    log(f"external {name}: {len(clips.ids)} clips mapped, {n_drop} dropped "
        f"({clips.dropped['ambiguous']} ambiguous, {n_drop - clips.dropped['ambiguous']} unmapped)")
    labels = np.array([CODE_TO_INDEX[c] for c in clips.codes], dtype=np.int64)
    fp = arrays_fingerprint(f"{name}:{len(labels)}", labels, audio, text, masked)
    return Arrays(np.array(clips.ids), labels, np.full(len(labels), np.nan), audio, text, masked, fp)


def _embeddings(folder: Path, ids: list[str], *, required: bool) -> np.ndarray:
    out = np.zeros((len(ids), EMBEDDING_DIM), dtype=np.float32)
    absent = []
    for i, clip_id in enumerate(ids):
        path = safe_child(folder, clip_id, ".npy") if folder.is_dir() else None
        if path is not None and path.is_file():
            out[i] = np.load(path, allow_pickle=False).reshape(EMBEDDING_DIM)
        else:
            absent.append(clip_id)
    if required and absent:
        raise DataError(f"{folder}: {len(absent)} of {len(ids)} embeddings missing (first: {', '.join(absent[:5])})")
    return out
