"""`bst-rt classify`: classify audio files (or folders of them) without an evaluation package or UUIDs.

Each file's id is its name without the suffix; metadata comes from `--title/--tags/--description` (the same for every
file) or a sidecar CSV whose rows name a file by id or file name. Decisions go through `Predictor.predict_clips`, so a
file's label is the one the Python API and `bst-rt predict` give it, whatever else is classified with it.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .csvfile import read_csv, where
from .clip import Clip
from .datasets import AUDIO_SUFFIXES
from .defaults import DEFAULT_BATCH_SIZE
from .errors import DataError
from .predict import Prediction, Predictor

SIDECAR_ID_COLUMNS: tuple[str, ...] = ("id", "file", "filename", "anonymous_id", "sound_id")
TEXT_COLUMNS: tuple[str, ...] = ("title", "tags", "description")
TOP_SHOWN = 3


@dataclass(frozen=True)
class Metadata:
    title: str = ""
    tags: str = ""
    description: str = ""


def collect_audio(paths: Sequence[Path]) -> list[Path]:
    """The files named, plus the audio files (AUDIO_SUFFIXES, any case) under each folder named, recursively, in order;
    two files with one id (name without suffix) are an error naming both."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                            and not p.name.startswith("."))
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not files:
        raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {', '.join(map(str, paths))}")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise DataError(f"two audio files for id {f.stem!r}: {seen[f.stem]} and {f}; rename one")
        seen.setdefault(f.stem, f)
    return list(dict.fromkeys(files))


def read_sidecar(path: Path) -> dict[str, Metadata]:
    """id -> metadata from a CSV with an id column (id, file, filename, anonymous_id or sound_id; a file name's
    suffix is dropped) and any of title, tags, description. A row that is not UTF-8 is read with U+FFFD."""
    header, rows = read_csv(Path(path), repair_encoding=True)
    id_col = next((c for c in SIDECAR_ID_COLUMNS if c in header), None)
    if id_col is None:
        raise DataError(f"{path}: row 0 (header): no id column (one of {', '.join(SIDECAR_ID_COLUMNS)}); "
                        f"found {', '.join(header)}")
    out: dict[str, Metadata] = {}
    for r in rows:
        raw = r.values[id_col].strip()
        key = Path(raw).stem if Path(raw).suffix.lower() in AUDIO_SUFFIXES else raw
        if key in out:
            raise DataError(f"{where(Path(path), r)}: id {key!r} given twice")
        out[key] = Metadata(*(r.values.get(c, "") for c in TEXT_COLUMNS))
    return out


def clips_for(files: Sequence[Path], default: Metadata, sidecar: dict[str, Metadata] | None) -> list[Clip]:
    """One Clip per file: the sidecar row with its id when there is one, else the metadata given on the command line."""
    clips = []
    for f in files:
        meta = (sidecar or {}).get(f.stem, default)
        clips.append(Clip(id=f.stem, title=meta.title, tags=meta.tags, description=meta.description, audio_path=f))
    return clips


def classify(predictor: Predictor, clips: Sequence[Clip], batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
    return list(predictor.predict_clips(clips, batch_size=batch_size))


def result_rows(files: Sequence[Path], predictions: Sequence[Prediction]) -> list[dict]:
    """Plain rows for the table, --json and --csv: label with class and parent names, score, top-3, fallback."""
    rows = []
    for f, p in zip(files, predictions):
        top = [{"label": t.code, "class_name": t.name, "score": round(t.probability, 6)} for t in p.top_k[:TOP_SHOWN]]
        rows.append({
            "file": str(f), "id": p.id, "label": p.label, "class_name": p.label_name,
            "parent": p.parent, "parent_name": p.parent_name,
            "score": round(float(p.score), 6), "top_3": top, "fallback": p.fallback,
        })
    return rows


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps(list(rows), ensure_ascii=False, indent=2)


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "id", "label", "class_name", "parent", "parent_name", "score", "top_3", "fallback"])
    for r in rows:
        top = " ".join(f"{t['label']}:{t['score']:.4f}" for t in r["top_3"])
        writer.writerow([r["file"], r["id"], r["label"], r["class_name"], r["parent"], r["parent_name"],
                         f"{r['score']:.6f}", top, r["fallback"] or ""])
    return buf.getvalue()


def print_table(rows: Sequence[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} file(s)")
    for col in ("file", "label", "class", "parent", "score", "top-3"):
        table.add_column(col, justify="right" if col == "score" else "left", overflow="fold")
    for r in rows:
        top = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top_3"])
        name = r["file"] + (f" [dim](fallback: {r['fallback']})[/]" if r["fallback"] else "")
        table.add_row(name, r["label"], r["class_name"], r["parent_name"], f"{r['score']:.3f}", top)
    Console().print(table)
