"""The candidate reranker (seed §2.5): a HistGradientBoosting classifier on held-out candidate features, thresholds of
the parent-safe override tuned for hF, and the nested five-fold estimate of what it adds over the ensemble.

Rows are built from the run's calibrated out-of-fold family probabilities with `bst.runtime.features`, the same
function the runtime calls, and decisions are made with `bst.runtime.policy`, the same code the runtime runs. Target:
the candidate is the item's true class. Nested CV: for each outer fold the ranker is fitted on the other four folds,
thresholds are chosen by an inner CV over those four folds, and the outer fold is scored once; the final ranker is
then fitted on all five folds with thresholds chosen by a five-fold CV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from bst.runtime.features import FEATURE_NAMES, CandidateFeatures, candidate_features, stack_features
from bst.runtime.metrics import evaluate_predictions, hierarchical_f1
from bst.runtime.policy import Decisions, RankerChoice, SystemPolicy, decide, item_evidence, limit_overrides, \
    ranker_choice

Log = Callable[[str], None]

#: the grids the override thresholds are chosen from; tau = 1 means "never override" and is always a candidate
TAU_GRID: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1.0)
CROSS_TAU_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
CROSS_MIN_SCORE_GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
HGB_PARAMS: dict = dict(max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20,
                        l2_regularization=1.0, early_stopping=False)


@dataclass(frozen=True)
class TuningSpec:
    """What a ranker system may do: its cap on overridden items and whether it may cross parents at all."""

    max_override_share: float
    allow_cross_parent: bool


@dataclass(frozen=True)
class Thresholds:
    tau: float
    cross_parent_tau: float
    cross_parent_min_score: float
    hF: float
    override_share: float

    def as_dict(self) -> dict:
        return dict(tau=self.tau, cross_parent_tau=self.cross_parent_tau,
                    cross_parent_min_score=self.cross_parent_min_score, hF=self.hF, override_share=self.override_share)


@dataclass
class CandidateRows:
    """Every dev item's candidates for one pool: the ranker's rows, their target and the items' folds."""

    items: list[CandidateFeatures]
    features: np.ndarray
    offsets: np.ndarray
    target: np.ndarray
    ensemble: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    def rows_of(self, item_mask: np.ndarray) -> np.ndarray:
        """Row indices of the selected items' candidates."""
        idx = np.flatnonzero(item_mask)
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else \
            np.zeros(0, dtype=np.int64)

    def subset(self, item_mask: np.ndarray) -> tuple[list[CandidateFeatures], np.ndarray, np.ndarray]:
        idx = np.flatnonzero(item_mask)
        items = [self.items[i] for i in idx]
        return items, self.ensemble[idx], self.labels[idx]

    @property
    def recall_at_candidates(self) -> float:
        """Share of items whose true class is among their candidates: the most any reranker can fix."""
        return float(np.mean([lab in it.candidates for it, lab in zip(self.items, self.labels)]))


def build_rows(policy: SystemPolicy, family_oof: dict[str, np.ndarray], text: np.ndarray, text_present: np.ndarray,
               audio_present: np.ndarray, class_text: np.ndarray, labels: np.ndarray,
               folds: np.ndarray) -> CandidateRows:
    """Candidate rows of every item from out-of-fold family probabilities (the deployment path: `item_evidence`,
    then `candidate_features`; labels only become the target column afterwards)."""
    items, ensembles = [], []
    for i in range(len(labels)):
        probs = {f: p[i] for f, p in family_oof.items()}
        ens, fam = item_evidence(policy, probs, bool(audio_present[i]), bool(text_present[i]))
        items.append(candidate_features(ens, fam, text[i] if text_present[i] else None, class_text,
                                        audio_present=bool(audio_present[i]), text_present=bool(text_present[i]),
                                        k=policy.k))
        ensembles.append(ens)
    features, offsets = stack_features(items)
    target = np.concatenate([(it.candidates == lab).astype(np.int64) for it, lab in zip(items, labels)])
    return CandidateRows(items, features, offsets, target, np.stack(ensembles), np.asarray(labels), np.asarray(folds))


def fit_ranker(features: np.ndarray, target: np.ndarray, seed: int = 0) -> HistGradientBoostingClassifier:
    """float32 rows in (what skl2onnx and the runtime use), a binary classifier out. One OpenMP thread: on a small,
    shared CPU the per-tree thread start-up costs several times the work (measured 0.81 s vs 0.12 s per fit)."""
    model = HistGradientBoostingClassifier(random_state=seed, **HGB_PARAMS)
    with threadpool_limits(1):
        model.fit(np.asarray(features, dtype=np.float32), target)
    return model


def ranker_scores(model: HistGradientBoostingClassifier, features: np.ndarray) -> np.ndarray:
    """P(candidate is the true class) per row."""
    if len(features) == 0:
        return np.zeros(0)
    with threadpool_limits(1):
        return model.predict_proba(np.asarray(features, dtype=np.float32))[:, 1]


def choices_for(rows: CandidateRows, item_mask: np.ndarray, scores: np.ndarray) -> RankerChoice:
    """The ranker's pick per selected item, from scores of exactly those items' rows (in row order)."""
    items, ens, _ = rows.subset(item_mask)
    _, offsets = stack_features(items)
    return ranker_choice(ens, [it.candidates for it in items], scores, offsets)


def apply_thresholds(choice: RankerChoice, th: Thresholds | dict, cap: float) -> Decisions:
    th = th.as_dict() if isinstance(th, Thresholds) else th
    out = decide(choice, tau=th["tau"], cross_parent_tau=th["cross_parent_tau"],
                 cross_parent_min_score=th["cross_parent_min_score"])
    return limit_overrides(out, cap)


def tune_thresholds(choice: RankerChoice, labels: np.ndarray, spec: TuningSpec) -> Thresholds:
    """Grid search for hF with the cap applied exactly as at deployment; ties go to the fewest overrides."""
    best: tuple | None = None
    cross = [(t, m) for t in CROSS_TAU_GRID for m in CROSS_MIN_SCORE_GRID] if spec.allow_cross_parent else []
    for tau in TAU_GRID:
        for ctau, cmin in [(1.0, 1.0)] + [(t, m) for t, m in cross if t >= tau and t < 1.0]:
            th = dict(tau=tau, cross_parent_tau=ctau, cross_parent_min_score=cmin)
            out = apply_thresholds(choice, th, spec.max_override_share)
            key = (round(hierarchical_f1(labels, out.labels), 10), -out.override_share, tau, ctau, cmin)
            if best is None or key > best[0]:
                best = (key, th, out.override_share)
    assert best is not None
    (hf, *_), th, share = best
    return Thresholds(th["tau"], th["cross_parent_tau"], th["cross_parent_min_score"], float(hf), float(share))


def cv_choices(rows: CandidateRows, item_mask: np.ndarray, seed: int) -> tuple[RankerChoice, np.ndarray]:
    """Out-of-fold ranker choices over the selected items: each of their folds scored by a ranker fitted on the
    others (the inner CV). Returns the choices and the selected items' labels, both in item order."""
    idx = np.flatnonzero(item_mask)
    scores = np.zeros(len(rows.features))
    for k in np.unique(rows.folds[idx]):
        held = item_mask & (rows.folds == k)
        train = item_mask & (rows.folds != k)
        model = fit_ranker(rows.features[rows.rows_of(train)], rows.target[rows.rows_of(train)], seed)
        held_rows = rows.rows_of(held)
        scores[held_rows] = ranker_scores(model, rows.features[held_rows])
    return choices_for(rows, item_mask, scores[rows.rows_of(item_mask)]), rows.labels[idx]


def nested_estimate(rows: CandidateRows, specs: dict[int, TuningSpec], seed: int, log: Log = print) -> dict:
    """Seed Table 4's "best nested ranker": outer fold scored by a ranker and thresholds that never saw it."""
    n = len(rows.labels)
    final = {sid: np.zeros(n, dtype=np.int64) for sid in specs}
    overridden = {sid: np.zeros(n, dtype=bool) for sid in specs}
    per_fold = []
    for k in np.unique(rows.folds):
        outer = rows.folds == k
        inner = ~outer
        choice_in, labels_in = cv_choices(rows, inner, seed)
        model = fit_ranker(rows.features[rows.rows_of(inner)], rows.target[rows.rows_of(inner)], seed)
        choice_out = choices_for(rows, outer, ranker_scores(model, rows.features[rows.rows_of(outer)]))
        fold_report = {"fold": int(k)}
        for sid, spec in specs.items():
            th = tune_thresholds(choice_in, labels_in, spec)
            out = apply_thresholds(choice_out, th, spec.max_override_share)
            final[sid][outer] = out.labels
            overridden[sid][outer] = out.overridden
            fold_report[f"system{sid}"] = th.as_dict()
        per_fold.append(fold_report)
        log(f"  nested fold {k}: " + ", ".join(f"system {s} tau={fold_report[f'system{s}']['tau']}" for s in specs))
    base = rows.ensemble.argmax(axis=1)
    report = {"ensemble_oof_hF": hierarchical_f1(rows.labels, base), "ensemble_oof": table3(rows.labels, base),
              "per_fold": per_fold}
    for sid in specs:
        report[f"system{sid}"] = {
            **table3(rows.labels, final[sid]),
            "override_share": float(overridden[sid].mean()),
            "fixed": int(((final[sid] == rows.labels) & (base != rows.labels)).sum()),
            "broken": int(((final[sid] != rows.labels) & (base == rows.labels)).sum()),
        }
    return report


def table3(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Seed Table 3's columns as fractions: hF, flat accuracy, top-level accuracy, cross-parent error."""
    m = evaluate_predictions(labels, predicted)
    return {key: float(m[key]) for key in ("hF", "accuracy", "parent_accuracy", "cross_parent_error")}


def fit_final(rows: CandidateRows, specs: dict[int, TuningSpec], seed: int) -> tuple[HistGradientBoostingClassifier,
                                                                                      dict[int, Thresholds]]:
    """The deployed ranker (all five folds) and thresholds frozen from a five-fold CV of the same procedure."""
    everything = np.ones(len(rows.labels), dtype=bool)
    choice, labels = cv_choices(rows, everything, seed)
    thresholds = {sid: tune_thresholds(choice, labels, spec) for sid, spec in specs.items()}
    return fit_ranker(rows.features, rows.target, seed), thresholds


def feature_names() -> list[str]:
    return list(FEATURE_NAMES)


def describe_rows(rows: CandidateRows) -> dict:
    return {"items": int(len(rows.labels)), "rows": int(len(rows.features)),
            "positive_rate": float(rows.target.mean()) if len(rows.target) else 0.0,
            "candidate_recall": rows.recall_at_candidates,
            "mean_candidates": float(len(rows.features) / max(len(rows.labels), 1))}


def fold_of_items(n_items: int, test_folds: Sequence[np.ndarray]) -> np.ndarray:
    """Item -> official test fold, from the folds' test indices."""
    folds = np.full(n_items, -1, dtype=np.int64)
    for k, test in enumerate(test_folds):
        folds[np.asarray(test)] = k
    if (folds < 0).any():
        raise ValueError(f"{int((folds < 0).sum())} items are in no test fold")
    return folds
