"""Teacher targets for BSD35k-CS (docs/method.md, "Eq. 1"): soft distributions and high-confidence hard relabels.

Leakage rule: the teacher of dev fold k is the teacher family's fold-k model, trained on fold k's train split only
(validated and calibrated on fold k's validation split), so no fold-k test item or label shapes the targets the
fold-k student sees. CS rows whose sound id also occurs in the dev set are removed before anything else, so a dev
clip never re-enters training through the crowd-sourced copy of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bst_rt.runtime.atomic import atomic_open


@dataclass(frozen=True)
class TeacherTargets:
    """`soft` [N_cs,23] for every CS row; `hard_rows` index the rows relabelled to `hard_labels`."""

    soft: np.ndarray
    hard_rows: np.ndarray
    hard_labels: np.ndarray
    threshold: float


def label_posterior(teacher_probs: np.ndarray, cs_labels: np.ndarray, trust: float) -> np.ndarray:
    """Teacher prior × noisy-label likelihood: p(c | x, y_cs) ∝ p_T(c | x) · (trust if c = y_cs else (1-trust)/22).

    trust = 0 ignores the uploader's label (pure teacher); the crowd label then only shifts mass the teacher
    already finds plausible instead of being taken as clean.
    """
    probs = np.asarray(teacher_probs, dtype=np.float64)
    if trust <= 0:
        return probs.astype(np.float32)
    n = probs.shape[1]
    like = np.full_like(probs, (1.0 - trust) / (n - 1))
    like[np.arange(len(probs)), cs_labels] = trust
    post = probs * like
    return (post / post.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_targets(probs: np.ndarray, threshold: float, cs_labels: np.ndarray | None = None,
                    label_trust: float = 0.0) -> TeacherTargets:
    """Soft = teacher distribution (optionally combined with the CS label); hard relabel = its argmax where its
    probability ≥ threshold."""
    soft = label_posterior(probs, cs_labels, label_trust) if cs_labels is not None else np.asarray(probs, np.float32)
    top = soft.max(axis=1)
    rows = np.flatnonzero(top >= threshold)
    return TeacherTargets(soft, rows, soft[rows].argmax(axis=1).astype(np.int64), threshold)


def cached_cs_probs(path: Path, cs_fingerprint: str, compute) -> np.ndarray:
    """Teacher probabilities on the CS set, cached beside the teacher's fold checkpoint; the key (CS data + teacher
    checkpoint hash) makes a retrained teacher or other CS features recompute them."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) == cs_fingerprint:
                return z["probs"]
    probs = np.asarray(compute(), dtype=np.float32)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, probs=probs, fingerprint=np.array(cs_fingerprint))
    return probs


def drop_dev_overlap(cs_ids: np.ndarray, dev_ids: np.ndarray) -> np.ndarray:
    """Row indices of CS items whose id is not a dev id (kept for training)."""
    dev = set(map(str, dev_ids))
    return np.array([i for i, s in enumerate(map(str, cs_ids)) if s not in dev], dtype=np.int64)
