"""THE candidate-feature function of the reranker: one item in, candidate indices and a float32 matrix out.

Training (`bst_rt.train.ranker`) and deployment (`bst_rt.runtime.predict`) both call `candidate_features`, so the features
the ranker was fitted on and the ones it sees on the evaluation set cannot drift. Everything here is a function of
one item's inference-time evidence only: its ensemble and family distributions, its own text embedding and the fixed
class-description embeddings. There is deliberately no id, fold or label parameter, and no statistic of any other
item (docs/method.md, "Eq. 3 and the ranker": sample/fold ids, dev-set confusion statistics and was-the-model-right
flags are forbidden).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .taxonomy import NUM_CLASSES, PARENT_INDEX, parent_mass

#: fixed column order of the feature matrix; bundles record it and the ranker graph expects exactly these columns
FEATURE_NAMES: tuple[str, ...] = (
    "ens_prob",  # ensemble probability of the candidate
    "ens_rank",  # rank of the candidate in the ensemble distribution (0 = base prediction)
    "ens_gap_to_top1",  # base (top-1) probability minus the candidate's
    "fam_prob_mean",  # per-family probabilities of the candidate: mean, max, min, max - min
    "fam_prob_max",
    "fam_prob_min",
    "fam_prob_spread",
    "fam_top1_share",  # share of the selected families whose own top-1 is the candidate
    "ens_entropy",  # entropy (nats) of the ensemble distribution: an item-level uncertainty
    "ens_margin",  # top-1 minus top-2 ensemble probability
    "cand_parent_mass",  # ensemble mass of the candidate's top-level parent
    "shares_base_parent",  # 1 if the candidate has the base prediction's parent
    "semantic_cos",  # cosine(item text embedding, class-description embedding of the candidate)
    "semantic_rank",  # rank of that cosine among this item's candidates (0 = most similar)
    "semantic_cos_minus_base",  # the candidate's cosine minus the base prediction's
    "audio_missing",  # missing-modality flags (the runtime then runs a fallback family)
    "text_missing",
)
NUM_FEATURES: int = len(FEATURE_NAMES)


@dataclass(frozen=True)
class CandidateFeatures:
    """One item's candidates (class indices, base prediction first) and their feature rows [C, NUM_FEATURES]."""

    candidates: np.ndarray
    features: np.ndarray

    @property
    def base(self) -> int:
        return int(self.candidates[0])


def candidate_indices(ensemble_probs: np.ndarray, family_probs: np.ndarray, k: int) -> np.ndarray:
    """Top-k of the ensemble (in rank order), then each family's top-1 not already present (in family order)."""
    order = _rank_order(ensemble_probs)
    chosen = [int(c) for c in order[:k]]
    for row in family_probs:
        top = int(_rank_order(row)[0])
        if top not in chosen:
            chosen.append(top)
    return np.asarray(chosen, dtype=np.int64)


def candidate_features(
    ensemble_probs: np.ndarray,
    family_probs: np.ndarray,
    text_embedding: np.ndarray | None,
    class_text_embeddings: np.ndarray,
    *,
    audio_present: bool,
    text_present: bool,
    k: int,
) -> CandidateFeatures:
    """Candidates and their features for ONE item.

    `ensemble_probs` [23] is the pool's calibrated distribution, `family_probs` [F, 23] the selected families'
    (F >= 1; on a fallback item only the fallback family). Without text (`text_present` False or no embedding) the
    semantic columns are 0 and `text_missing` is 1, so the ranker never sees an embedding of empty metadata.
    """
    ens = np.asarray(ensemble_probs, dtype=np.float64)
    fam = np.atleast_2d(np.asarray(family_probs, dtype=np.float64))
    if ens.shape != (NUM_CLASSES,) or fam.shape[1:] != (NUM_CLASSES,) or fam.shape[0] < 1:
        raise ValueError(f"expected ensemble [23] and family [F>=1, 23] probabilities, got {ens.shape}, {fam.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    cands = candidate_indices(ens, fam, k)
    order = _rank_order(ens)
    rank_of = np.empty(NUM_CLASSES, dtype=np.int64)
    rank_of[order] = np.arange(NUM_CLASSES)
    base = int(order[0])
    top1, top2 = ens[order[0]], ens[order[1]]

    fam_c = fam[:, cands]  # [F, C]
    fam_top1 = np.array([_rank_order(row)[0] for row in fam])
    parents = parent_mass(ens)
    entropy = float(-(ens * np.log(np.clip(ens, 1e-12, None))).sum())

    has_text = bool(text_present) and text_embedding is not None
    if has_text:
        cos_all = _cosine_to_classes(np.asarray(text_embedding, dtype=np.float64), class_text_embeddings)
        cos = cos_all[cands]
        sem_rank = np.empty(len(cands), dtype=np.float64)
        sem_rank[np.argsort(-cos, kind="stable")] = np.arange(len(cands))
        cos_minus_base = cos - cos_all[base]
    else:
        cos = sem_rank = cos_minus_base = np.zeros(len(cands))

    columns = {
        "ens_prob": ens[cands],
        "ens_rank": rank_of[cands].astype(np.float64),
        "ens_gap_to_top1": top1 - ens[cands],
        "fam_prob_mean": fam_c.mean(axis=0),
        "fam_prob_max": fam_c.max(axis=0),
        "fam_prob_min": fam_c.min(axis=0),
        "fam_prob_spread": fam_c.max(axis=0) - fam_c.min(axis=0),
        "fam_top1_share": (fam_top1[:, None] == cands[None, :]).mean(axis=0),
        "ens_entropy": np.full(len(cands), entropy),
        "ens_margin": np.full(len(cands), top1 - top2),
        "cand_parent_mass": parents[PARENT_INDEX[cands]],
        "shares_base_parent": (PARENT_INDEX[cands] == PARENT_INDEX[base]).astype(np.float64),
        "semantic_cos": cos,
        "semantic_rank": sem_rank,
        "semantic_cos_minus_base": cos_minus_base,
        "audio_missing": np.full(len(cands), 0.0 if audio_present else 1.0),
        "text_missing": np.full(len(cands), 0.0 if has_text else 1.0),
    }
    features = np.stack([columns[name] for name in FEATURE_NAMES], axis=1).astype(np.float32)
    return CandidateFeatures(candidates=cands, features=features)


def batch_candidate_features(
    ensemble_probs: np.ndarray,
    family_probs: Sequence[np.ndarray],
    text_embeddings: Sequence[np.ndarray | None],
    class_text_embeddings: np.ndarray,
    *,
    audio_present: Sequence[bool],
    text_present: Sequence[bool],
    k: int,
) -> list[CandidateFeatures]:
    """`candidate_features` item by item; a plain loop so no value can depend on the rest of the batch."""
    return [
        candidate_features(
            ensemble_probs[i],
            family_probs[i],
            text_embeddings[i],
            class_text_embeddings,
            audio_present=bool(audio_present[i]),
            text_present=bool(text_present[i]),
            k=k,
        )
        for i in range(len(ensemble_probs))
    ]


def stack_features(items: Sequence[CandidateFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """All items' rows in one [sum C, D] float32 matrix (one ranker call) and the row offsets [N + 1] to split it."""
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(it.candidates) for it in items])
    if not items:
        return np.zeros((0, NUM_FEATURES), dtype=np.float32), offsets
    return np.concatenate([it.features for it in items], axis=0), offsets


def _rank_order(probs: np.ndarray) -> np.ndarray:
    """Class indices by decreasing probability; ties go to the lower index (as np.argmax does)."""
    return np.argsort(-np.asarray(probs), kind="stable")


def _cosine_to_classes(embedding: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Cosine of one embedding to each class embedding; normalised here so un-normalised inputs are safe."""
    cls = np.asarray(class_embeddings, dtype=np.float64)
    if cls.shape[0] != NUM_CLASSES or cls.shape[1] != embedding.shape[-1]:
        raise ValueError(f"class text embeddings must be [23, {embedding.shape[-1]}], got {cls.shape}")
    cls = cls / np.clip(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12, None)
    emb = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
    return cls @ emb
