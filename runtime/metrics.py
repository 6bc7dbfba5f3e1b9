"""The DCASE 2026 Task 1 metric: macro hierarchical precision, recall and F-score over the BST, plus the accuracies
the official baseline prints.

Everything is derived from the 23x23 confusion matrix, so the training code can call `hierarchical_f1` thousands of
times on int arrays cheaply. Definitions (docs/task.md §3):

* per-sample credit s(p, t) = 1 if p == t, 0.375 if p and t share their parent, 0 otherwise;
* hP_c = mean credit over samples *predicted* c, hR_c = mean credit over samples whose *truth* is c,
  hF_c = 2 hP_c hR_c / (hP_c + hR_c) (0 when both are 0);
* hP, hR, hF = plain means of hP_c, hR_c, hF_c over the classes present in the ground truth (macro F is the mean of
  per-class F, not the F of the means).

A ground-truth class that is never predicted has no hP_c. Convention "drop" (the official baseline's) leaves it out
of all three means; "zero" counts it as hP_c = 0 (so hF_c = 0). The two agree when every class is predicted.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from .errors import DataError
from .taxonomy import CODE_TO_INDEX, CODES, NUM_CLASSES, PARENT_INDEX, PARENTS

Convention = Literal["drop", "zero"]
CONVENTIONS: tuple[str, ...] = ("drop", "zero")

#: official per-sample credit of a within-parent confusion: lambda 0.75 x overlap 1 of 2 ancestors
PARTIAL_CREDIT = 0.375
#: per-sample credit of a within-parent confusion in the baseline's "hierarchical accuracy"
HIERARCHICAL_ACCURACY_PARTIAL = 0.5

_SAME_PARENT = PARENT_INDEX[:, None] == PARENT_INDEX[None, :]
_IDENTITY = np.eye(NUM_CLASSES, dtype=bool)
#: CREDIT[t, p]: per-sample hierarchical credit of predicting p when the truth is t
CREDIT: np.ndarray = np.where(_IDENTITY, 1.0, np.where(_SAME_PARENT, PARTIAL_CREDIT, 0.0))
_ACC_CREDIT = np.where(_IDENTITY, 1.0, np.where(_SAME_PARENT, HIERARCHICAL_ACCURACY_PARTIAL, 0.0))


def to_indices(labels: Sequence[str] | Sequence[int] | np.ndarray, *, what: str = "labels") -> np.ndarray:
    """Class indices (int64) from codes or indices; an unknown code or out-of-range index is a DataError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{what}: expected a 1-d sequence, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        bad = np.flatnonzero((arr < 0) | (arr >= NUM_CLASSES))
        if bad.size:
            raise DataError(f"{what}: position {bad[0]}: class index {arr[bad[0]]} is not in 0..{NUM_CLASSES - 1}")
        return arr.astype(np.int64, copy=False)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    out = np.empty(arr.size, dtype=np.int64)
    for i, code in enumerate(arr.tolist()):
        try:
            out[i] = CODE_TO_INDEX[code]
        except (KeyError, TypeError):
            raise DataError(f"{what}: position {i}: {code!r} is not one of the 23 BST classes") from None
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """counts[t, p] over int index arrays of equal length."""
    flat = y_true * NUM_CLASSES + y_pred
    return np.bincount(flat, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def _checked_indices(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = to_indices(y_true, what="y_true")
    p = to_indices(y_pred, what="y_pred")
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise DataError("no labels to score")
    return t, p


def _per_class(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class credit sums, supports and the hP/hR/hF vectors (NaN where undefined)."""
    credit = counts * CREDIT
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        h_p = credit.sum(axis=0) / predicted
        h_r = credit.sum(axis=1) / support
        denom = h_p + h_r
        h_f = np.where(denom > 0, 2 * h_p * h_r / np.where(denom > 0, denom, 1.0), 0.0)
    h_f = np.where(np.isnan(h_p) | np.isnan(h_r), np.nan, h_f)
    return {"support": support, "predicted": predicted, "hP": h_p, "hR": h_r, "hF": h_f}


def _macro(per: dict[str, np.ndarray], convention: str) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """Macro hP, hR, hF under a convention, the classes averaged over and the dropped classes."""
    if convention not in CONVENTIONS:
        raise DataError(f"unknown convention {convention!r}: use one of {', '.join(CONVENTIONS)}")
    present = per["support"] > 0
    never_predicted = present & (per["predicted"] == 0)
    if convention == "drop":
        used = present & ~never_predicted
        h_p, h_f = per["hP"], per["hF"]
    else:
        used = present
        h_p = np.where(never_predicted, 0.0, per["hP"])
        h_f = np.where(never_predicted, 0.0, per["hF"])
    if not used.any():  # every true class went unpredicted: nothing is credited under either convention
        return 0.0, 0.0, 0.0, used, never_predicted
    return (float(h_p[used].mean()), float(per["hR"][used].mean()), float(h_f[used].mean()), used, never_predicted)


def hierarchical_f1(y_true_idx: np.ndarray, y_pred_idx: np.ndarray) -> float:
    """Official ("drop" convention) macro hF of int index arrays: the fast path for model selection."""
    t, p = _checked_indices(y_true_idx, y_pred_idx)
    return _macro(_per_class(confusion_matrix(t, p)), "drop")[2]


def evaluate_predictions(y_true, y_pred, *, convention: Convention = "drop") -> dict:
    """All task figures for one prediction set; fractions in [0, 1], per-class entries keyed by code.

    `y_true`/`y_pred` are equal-length sequences of codes or of class indices. Accuracies use every sample; macro
    accuracies average per-class (or per-parent) recall over the classes (parents) present in the ground truth;
    hierarchical accuracy is that macro average with credit 1 / 0.5 / 0; cross-parent error = 1 - parent accuracy.
    """
    t, p = _checked_indices(y_true, y_pred)
    counts = confusion_matrix(t, p)
    per = _per_class(counts)
    h_p, h_r, h_f, _, never_predicted = _macro(per, convention)
    present = per["support"] > 0
    dropped = never_predicted if convention == "drop" else np.zeros_like(never_predicted)

    parent_ok = PARENT_INDEX[t] == PARENT_INDEX[p]
    recall = np.diag(counts)[present] / per["support"][present]
    acc_credit = (counts * _ACC_CREDIT).sum(axis=1)[present] / per["support"][present]
    parent_true = PARENT_INDEX[t]
    parent_recall = [parent_ok[parent_true == k].mean() for k in range(len(PARENTS)) if (parent_true == k).any()]

    per_class: dict[str, dict] = {}
    for c in np.flatnonzero(present):
        undefined_p = per["predicted"][c] == 0
        per_class[CODES[c]] = {
            "hP": None if undefined_p and convention == "drop" else float(0.0 if undefined_p else per["hP"][c]),
            "hR": float(per["hR"][c]),
            "hF": None if undefined_p and convention == "drop" else float(0.0 if undefined_p else per["hF"][c]),
            "support": int(per["support"][c]),
            "predicted": int(per["predicted"][c]),
        }
    parent_accuracy = float(parent_ok.mean())
    return {
        "hP": h_p,
        "hR": h_r,
        "hF": h_f,
        "accuracy": float((t == p).mean()),
        "parent_accuracy": parent_accuracy,
        "macro_accuracy": float(recall.mean()),
        "macro_parent_accuracy": float(np.mean(parent_recall)),
        "hierarchical_accuracy": float(acc_credit.mean()),
        "cross_parent_error": 1.0 - parent_accuracy,
        "convention": convention,
        "n": int(t.size),
        "dropped_classes": [CODES[c] for c in np.flatnonzero(dropped)],
        "per_class": per_class,
    }
