"""`bst-train synth`: a deterministic synthetic corpus in the exact BSD10k / BSD35k-CS / evaluation-package layouts.

It stands in for the real data in every test and in the demo. Under OUT:

    BSD10k/audio/<sound_id>.wav                  44.1 kHz mono PCM_16, 0.5-8 s, `per_class` clips of each class
    BSD10k/metadata/BSD10k_metadata.csv          sound_id,class,class_idx,class_top,confidence,uploader,license,
                                                 title,tags,description (confidence 1-5)
    BSD10k/metadata/BST_description.csv          class,name,description,examples (from bst_rt.runtime.taxonomy)
    BSD35k-CS/...                                same layout, metadata/BSD35k-CS_metadata.csv, empty confidence,
                                                 another class balance, labels wrong at rate `cs_noise` (mostly a
                                                 sibling), plus `*-other` rows; sound_ids disjoint from BSD10k's
    eval/audio/<uuid>.wav, eval/eval_metadata.csv  anonymous_id,title,tags,description; no labels; with the traps of
                                                 real packages (see EVAL_TRAPS)
    eval_labels.csv                              id,class of the evaluation clips (beside eval/, not inside it)
    cs_true_labels.csv                           id,class: the clean labels behind BSD35k-CS's in-taxonomy rows

`--with-features` adds STAND-IN embeddings (see bst_rt.synth.stand_in_embeddings) under each dev set's features/ folder. Every file is
a pure function of (seed, sizes): each item draws from its own seeded stream, so the same arguments give
byte-identical files. Each dataset folder is written under a hidden staging name and renamed into place when
complete, so a reader never sees half a dataset.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from bst_rt.runtime.atomic import atomic_open
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.layout import EMBEDDING_DIRS, class_text_path, features_dir
from bst_rt.runtime.taxonomy import CODES, PARENTS

from . import text as synth_text
from .audio import SAMPLE_RATE_HZ, draw_duration_s, render_clip, to_pcm16
from .stand_in_embeddings import AudioSpace, class_text_embeddings, text_embeddings

DEV_COLUMNS = ("sound_id", "class", "class_idx", "class_top", "confidence", "uploader", "license", "title", "tags",
               "description")
EVAL_COLUMNS = ("anonymous_id", "title", "tags", "description")
EVAL_TRAPS = ("zero_byte", "stereo_48k", "short_0.2s", "long_25s", "empty_tags", "empty_description",
              "html_description", "non_ascii")
#: share of items whose audio (and stand-in audio embedding) is blended strongly with a confuser class
AMBIGUOUS_RATE = 0.3
SIBLING_CONFUSER_RATE = 0.75
#: share of wrong BSD35k-CS labels that go to a sibling class (the rest cross parents)
SIBLING_NOISE_RATE = 0.8
_DEV, _CS, _EVAL = 0, 1, 2
_PLAN, _AUDIO, _TEXT, _FEAT = 0, 1, 2, 3
#: item index of the per-part streams that are not about one item (ids, sizes, label noise, uploaders)
_WHOLE = 10**9


@dataclass(frozen=True)
class CorpusPaths:
    """Where each part of a written corpus is; also usable as the root path itself (`os.fspath`, `/`)."""

    root: Path
    dev: Path
    cs: Path
    eval: Path
    eval_labels: Path
    cs_true_labels: Path

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __truediv__(self, other: str | os.PathLike) -> Path:
        return self.root / other


@dataclass
class _Item:
    id: str
    code: str  # true class (drives audio and text)
    label: str  # class written in the metadata (differs from `code` for noisy BSD35k-CS rows)
    part: int
    index: int
    confuser: str
    mix: float
    duration_s: float
    trap: str | None = None


def _rng(seed: int, part: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, part, index, stream])


def _parent(code: str) -> str:
    return code.split("-", 1)[0]


def _siblings(code: str) -> list[str]:
    return [c for c in CODES if _parent(c) == _parent(code) and c != code]


def _cross_parent(code: str) -> list[str]:
    return [c for c in CODES if _parent(c) != _parent(code)]


def _item(seed: int, part: int, index: int, item_id: str, code: str) -> _Item:
    """Plan one clip: its confuser class and blend weight (shared by audio and stand-in embedding), its length."""
    rng = _rng(seed, part, index, _PLAN)
    pool = _siblings(code) if rng.uniform() < SIBLING_CONFUSER_RATE else _cross_parent(code)
    confuser = str(rng.choice(pool))
    mix = rng.uniform(0.3, 0.65) if rng.uniform() < AMBIGUOUS_RATE else rng.uniform(0.0, 0.3)
    return _Item(item_id, code, code, part, index, confuser, float(mix), draw_duration_s(rng, code))


def _sound_ids(seed: int, count: int) -> list[str]:
    """Distinct Freesound-like integer ids (dev first, then CS: disjoint by construction)."""
    rng = _rng(seed, _DEV, _WHOLE, _PLAN)
    return [str(i) for i in rng.choice(np.arange(1_000, 1_000 + 40 * count + 50_000), size=count, replace=False)]


def _cs_counts(seed: int, base: int) -> dict[str, int]:
    """Per-class BSD35k-CS sizes: a seeded log-normal spread around `base`, unlike the balanced dev set."""
    rng = _rng(seed, _CS, _WHOLE, _PLAN)
    weights = np.exp(rng.normal(0.0, 0.7, len(CODES)))
    weights /= weights.mean()
    counts = {c: max(2, int(round(base * w))) for c, w in zip(CODES, weights)}
    counts.update({f"{p}-other": max(1, base // 4) for p in PARENTS})
    return counts


def _add_label_noise(seed: int, items: list[_Item], rate: float) -> None:
    """Relabel exactly round(rate * n) of the in-taxonomy rows: a sibling class mostly, another parent otherwise."""
    rng = _rng(seed, _CS, _WHOLE + 1, _PLAN)
    labelled = [i for i, it in enumerate(items) if it.code in CODES]
    for i in rng.choice(labelled, size=int(round(rate * len(labelled))), replace=False):
        code = items[i].code
        pool = _siblings(code) if rng.uniform() < SIBLING_NOISE_RATE else _cross_parent(code)
        items[i].label = str(rng.choice(pool))


def _plan_eval(seed: int, n_eval: int) -> list[_Item]:
    rng = _rng(seed, _EVAL, _WHOLE, _PLAN)
    codes = [CODES[k % len(CODES)] for k in rng.permutation(n_eval)]
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n_eval)]
    items = [_item(seed, _EVAL, i, ids[i], c) for i, c in enumerate(codes)]
    for trap, i in zip(EVAL_TRAPS, rng.permutation(n_eval)):
        items[i].trap = trap
        if trap in ("short_0.2s", "long_25s"):
            items[i].duration_s = 0.2 if trap == "short_0.2s" else 25.0
    return items


def _metadata(seed: int, it: _Item) -> synth_text.Metadata:
    meta = synth_text.make_metadata(_rng(seed, it.part, it.index, _TEXT), it.code)
    rng = _rng(seed, it.part, it.index, _TEXT + 10)
    if it.trap == "empty_tags":
        return synth_text.Metadata(meta.title, "", meta.description)
    if it.trap == "empty_description":
        return synth_text.Metadata(meta.title, meta.tags, "")
    if it.trap == "html_description":
        return synth_text.Metadata(meta.title, meta.tags, synth_text.with_html(rng, meta.description or "Recorded sound."))
    if it.trap == "non_ascii":
        title, description = synth_text.with_non_ascii(rng, meta.title, meta.description)
        return synth_text.Metadata(title, meta.tags, description)
    return meta


def _wav_bytes(seed: int, it: _Item) -> bytes:
    if it.trap == "zero_byte":
        return b""
    rng = _rng(seed, it.part, it.index, _AUDIO)
    sr = 48_000 if it.trap == "stereo_48k" else SAMPLE_RATE_HZ
    x = render_clip(rng, it.code, it.duration_s, confuser=it.confuser, mix=it.mix, sr=sr)
    if it.trap == "stereo_48k":
        x = np.stack([x, 0.8 * np.roll(x, 7)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(x), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def _rendered(seed: int, items: list[_Item], label: str, show: bool) -> Iterator[tuple[_Item, bytes]]:
    """(item, WAV bytes) in item order, rendered by a few threads (numpy's FFTs and ufuncs release the GIL; every
    item has its own random stream, so threading cannot change a byte). At most 2 clips per thread are in flight,
    and an interrupt cancels the rest instead of waiting for them."""
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(workers)
    try:
        pending: deque[tuple[_Item, Future[bytes]]] = deque()
        queue = iter(items)

        def pairs() -> Iterator[tuple[_Item, bytes]]:
            for it in queue:
                pending.append((it, pool.submit(_wav_bytes, seed, it)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()

        if not show:
            yield from pairs()
            return
        from rich.progress import track

        yield from track(pairs(), description=label, total=len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Staged:
    """Write a dataset folder under a hidden name, rename it into place on success."""

    def __init__(self, final: Path) -> None:
        if final.exists() and any(final.iterdir()):
            raise BstError(f"{final} already exists and is not empty; remove it or choose another output folder")
        self.final = final
        self.tmp = final.parent / f".{final.name}.partial"

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)  # our own leftover from an interrupted run
        (self.tmp / "audio").mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.final.exists():
            self.final.rmdir()
        self.tmp.rename(self.final)


def _write_dev(root: Path, name: str, seed: int, items: list[_Item], with_features: bool, show: bool) -> None:
    """One dev-layout dataset (BSD10k or BSD35k-CS)."""
    uploaders = synth_text.uploader_pool(_rng(seed, items[0].part, _WHOLE, _TEXT))
    with _Staged(root / name) as tmp:
        rows = []
        space = AudioSpace(seed) if with_features else None
        for it, wav in _rendered(seed, sorted(items, key=lambda i: int(i.id)), f"{name} audio", show):
            (tmp / "audio" / f"{it.id}.wav").write_bytes(wav)
            meta = _metadata(seed, it)
            rng = _rng(seed, it.part, it.index, _TEXT + 20)
            confidence = "" if it.part == _CS else int(np.clip(round(5 - 5 * it.mix + rng.normal(0, 0.7)), 1, 5))
            rows.append((it.id, it.label, synth_text.class_idx(it.label), _parent(it.label), confidence,
                         uploaders[int(rng.integers(len(uploaders)))], synth_text.LICENSES[int(rng.integers(len(synth_text.LICENSES)))],
                         meta.title, meta.tags, meta.description))
            if space is not None:
                _write_features(features_dir(tmp), it, space.embed(_rng(seed, it.part, it.index, _FEAT), it.code,
                                                                  it.confuser, it.mix), meta)
        _write_csv(tmp / "metadata" / f"{name}_metadata.csv", DEV_COLUMNS, rows)
        _write_csv(tmp / "metadata" / "BST_description.csv", ("class", "name", "description", "examples"),
                   (r.values() for r in synth_text.description_rows()))
        if space is not None:
            _save_npy(class_text_path(tmp), class_text_embeddings())


def _write_features(folder: Path, it: _Item, audio: np.ndarray, meta: synth_text.Metadata) -> None:
    text, masked = text_embeddings(meta.title, meta.tags, meta.description)
    for kind, vec in (("audio", audio), ("text", text), ("text_masked", masked)):
        _save_npy(folder / EMBEDDING_DIRS[kind] / f"{it.id}.npy", vec)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # inside a staging folder: atomic at the dataset level
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


def _write_eval(root: Path, seed: int, items: list[_Item], show: bool) -> None:
    with _Staged(root / "eval") as tmp:
        rows = []
        for it, wav in _rendered(seed, items, "eval audio", show):
            (tmp / "audio" / f"{it.id}.wav").write_bytes(wav)
            meta = _metadata(seed, it)
            rows.append((it.id, meta.title, meta.tags, meta.description))
        _write_csv(tmp / "eval_metadata.csv", EVAL_COLUMNS, rows)


def write_corpus(
    out: Path,
    *,
    per_class: int = 12,
    seed: int = 0,
    cs_noise: float = 0.3,
    n_eval: int = 40,
    cs_per_class: int | None = None,
    with_features: bool = False,
    show_progress: bool = False,
) -> CorpusPaths:
    """Write the synthetic corpus under `out` (see the module docstring) and return where each part is.

    `cs_per_class` is the mean BSD35k-CS clips per class (default `per_class`); the actual sizes vary by class.
    """
    if seed < 0:
        raise BstError(f"seed must be a non-negative integer, got {seed}")
    if per_class < 1:
        raise BstError(f"per_class must be at least 1, got {per_class}")
    if not 0.0 <= cs_noise <= 1.0:
        raise BstError(f"cs_noise is a rate in [0, 1], got {cs_noise}")
    if n_eval < len(EVAL_TRAPS):
        raise BstError(f"the evaluation package needs at least {len(EVAL_TRAPS)} clips (one per trap), got {n_eval}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BstError(f"{out} exists and is not a directory")
    for part in ("BSD10k", "BSD35k-CS", "eval"):  # refuse before writing anything, not half-way through
        if (out / part).exists() and any((out / part).iterdir()):
            raise BstError(f"{out / part} already exists and is not empty; remove it or choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    cs_counts = _cs_counts(seed, per_class if cs_per_class is None else cs_per_class)
    dev_codes = [c for c in CODES for _ in range(per_class)]
    cs_codes = [c for c, k in cs_counts.items() for _ in range(k)]
    ids = _sound_ids(seed, len(dev_codes) + len(cs_codes))
    dev = [_item(seed, _DEV, i, ids[i], c) for i, c in enumerate(dev_codes)]
    cs = [_item(seed, _CS, i, ids[len(dev) + i], c) for i, c in enumerate(cs_codes)]
    _add_label_noise(seed, cs, cs_noise)
    ev = _plan_eval(seed, n_eval)

    _write_dev(out, "BSD10k", seed, dev, with_features, show_progress)
    _write_dev(out, "BSD35k-CS", seed, cs, with_features, show_progress)
    _write_eval(out, seed, ev, show_progress)
    _write_csv(out / "eval_labels.csv", ("id", "class"), ((it.id, it.code) for it in ev))
    clean = sorted((it for it in cs if it.code in CODES), key=lambda i: int(i.id))  # readable by read_labels
    _write_csv(out / "cs_true_labels.csv", ("id", "class"), ((it.id, it.code) for it in clean))
    return CorpusPaths(out, out / "BSD10k", out / "BSD35k-CS", out / "eval", out / "eval_labels.csv",
                       out / "cs_true_labels.csv")
