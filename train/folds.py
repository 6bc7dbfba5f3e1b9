"""The official BSD10k development protocol (docs/method.md, "Development protocol"): the folds exist only as code,
so this is the one place that makes them. Every family, teacher and ensemble uses these indices; nothing else may split the dev set."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from bst_rt.runtime.errors import DataError

N_FOLDS = 5
RANDOM_STATE = 1821
VAL_SIZE = 0.2


@dataclass(frozen=True)
class Fold:
    """Row indices (into the dev set in metadata order) of one fold's train, validation and test parts."""

    k: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def official_folds(label_indices: np.ndarray) -> list[Fold]:
    """StratifiedKFold(5, shuffle, 1821) gives the test fold; StratifiedShuffleSplit(1, 0.2, 1821) on the rest gives
    train/validation — exactly the official baseline's calls, on labels in metadata file order."""
    y = np.asarray(label_indices, dtype=np.int64)
    outer = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=RANDOM_STATE)
    folds = []
    try:  # too few clips per class for these calls is the user's data, not a defect: one line, no traceback
        for k, (rest, test) in enumerate(outer.split(np.zeros(len(y)), y)):
            inner = StratifiedShuffleSplit(n_splits=1, test_size=VAL_SIZE, random_state=RANDOM_STATE)
            tr, va = next(inner.split(np.zeros(len(rest)), y[rest]))
            folds.append(Fold(k=k, train=rest[tr], val=rest[va], test=test))
    except ValueError as e:
        raise DataError(f"development set too small for the official 5-fold split "
                        f"({len(y)} clips, fewest per class {np.bincount(y).min() if len(y) else 0}): {e}") from None
    return folds
