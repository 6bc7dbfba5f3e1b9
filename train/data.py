"""What a pool trains on, as arrays: one dataset (`Arrays`), its fingerprint, and the pool's data (`PoolData`).

Kept apart from the loop (pool.py) and the run folder (run.py) so the readers of data — the dev/CS loader here,
external.py, synth_arrays.py — import arrays without importing training, and nothing imports back up.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bst_rt.runtime.datasets import read_dev_dataset

from . import teacher


@dataclass
class Arrays:
    """One dataset as the loop needs it: ids, labels (-1 = none), confidences and the three embeddings."""

    ids: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray
    audio: np.ndarray
    text: np.ndarray
    masked: np.ndarray
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "Arrays":
        return Arrays(self.ids[rows], self.labels[rows], self.confidences[rows], self.audio[rows], self.text[rows],
                      self.masked[rows], self.fingerprint)

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.audio, self.text, self.masked


def arrays_fingerprint(meta_fingerprint: str, *arrays: np.ndarray) -> str:
    """Metadata hash + embedding bytes: a run resumed on other features must not mix with its old folds."""
    digest = hashlib.sha256(meta_fingerprint.encode())
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def load_arrays(root: Path, *, need_masked: bool = True) -> Arrays:
    """Read a BSD10k / BSD35k-CS folder and its `features/` embeddings (masked text zero-filled if not needed)."""
    ds = read_dev_dataset(Path(root))
    audio = ds.load_embeddings("audio")
    text = ds.load_embeddings("text")
    masked = ds.load_embeddings("text_masked", missing="error" if need_masked else "zero")
    fp = arrays_fingerprint(ds.fingerprint(), audio, text, masked)
    return Arrays(np.array(ds.ids), ds.label_indices, ds.confidences, audio, text, masked, fp)


def concat_arrays(a: Arrays, b: Arrays) -> Arrays:
    cat = np.concatenate
    return Arrays(cat([a.ids, b.ids]), cat([a.labels, b.labels]), cat([a.confidences, b.confidences]),
                  cat([a.audio, b.audio]), cat([a.text, b.text]), cat([a.masked, b.masked]), a.fingerprint)


@dataclass
class PoolData:
    """Dev set, CS set (dev ids already removed) and mapped external sets, loaded once per pool."""

    dev: Arrays
    cs: Arrays | None = None
    external: dict[str, Arrays] = field(default_factory=dict)
    cs_dropped_overlap: int = 0

    @classmethod
    def build(cls, dev: Arrays, cs: Arrays | None = None, external: dict[str, Arrays] | None = None) -> "PoolData":
        dropped = 0
        if cs is not None:
            keep = teacher.drop_dev_overlap(cs.ids, dev.ids)
            dropped = len(cs) - len(keep)
            cs = cs.take(keep)
        return cls(dev, cs, dict(external or {}), dropped)

    def fingerprints(self) -> dict:
        return {"dev": self.dev.fingerprint, "cs": self.cs.fingerprint if self.cs is not None else None,
                **{f"external:{k}": v.fingerprint for k, v in sorted(self.external.items())}}
