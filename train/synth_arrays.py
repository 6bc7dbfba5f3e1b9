"""In-memory stand-in pool data at any size (bench/train_scale.py at BSD10k's 10,309 clips; fast tests).

Arrays only, no files: per class a fixed random direction per modality plus unit noise, L2-normalised like CLAP
embeddings; labels round-robin over the 23 classes, confidences 1-5, so every fold has every class. STAND-IN data:
training times are real, scores mean nothing.
"""
from __future__ import annotations

import numpy as np

from bst_rt.runtime.layout import EMBEDDING_DIM
from bst_rt.runtime.taxonomy import NUM_CLASSES

from .data import Arrays, PoolData, arrays_fingerprint

BSD10K_CLIPS = 10_309


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def stand_in_arrays(n: int, *, seed: int = 0, prefix: str = "s", signal: float = 1.5) -> Arrays:
    """`n` clips of stand-in embeddings; the class signal (`signal` × class direction) makes training non-trivial."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    centres = [_unit(rng.standard_normal((NUM_CLASSES, EMBEDDING_DIM))) for _ in range(3)]
    audio, text, masked = (_unit(signal * c[labels] + rng.standard_normal((n, EMBEDDING_DIM)) / np.sqrt(EMBEDDING_DIM) * 8)
                           for c in centres)
    ids = np.array([f"{prefix}{i}" for i in range(n)])
    conf = rng.integers(1, 6, n).astype(np.float64)
    fp = arrays_fingerprint(f"stand-in:{n}:{seed}:{prefix}", audio, text, masked)
    return Arrays(ids, labels.astype(np.int64), conf, audio, text, masked, fp)


def stand_in_pool(n_dev: int = BSD10K_CLIPS, *, n_cs: int = 0, seed: int = 0) -> PoolData:
    """Dev set (+ a CS set of `n_cs` clips with other ids) for `pool.train_pool`."""
    cs = stand_in_arrays(n_cs, seed=seed + 1, prefix="cs") if n_cs else None
    return PoolData.build(stand_in_arrays(n_dev, seed=seed), cs)
