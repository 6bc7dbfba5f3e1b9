"""The candidate reranker (docs/method.md, "Eq. 3 and the ranker"): a HistGradientBoosting classifier on held-out
candidate features, thresholds of the parent-safe override tuned for hF, and the nested five-fold estimate of what it
adds over the ensemble.

Rows are built from the run's calibrated out-of-fold family probabilities with `bst_rt.runtime.policy.item_candidates`
(the first half of the runtime's `decide_items`), and decisions are eq. 3 of `bst_rt.runtime.policy`, the code the
runtime runs. Target: the candidate is the item's true class. Nested CV: for each outer fold the ranker is fitted on
the other four folds, thresholds are chosen by an inner CV over those four folds, and the outer fold is decided once
with `decide_candidates`; the final ranker is then fitted on all five folds with thresholds chosen by a five-fold CV.

The override share is a constraint of this tuning, not of inference: thresholds are chosen for hF among those whose
held-out override rate (item-local eq. 3 on out-of-fold ranker scores) is at most the system's share; tau = 1 (no
override) always qualifies. The nested estimate reports the outer folds' override rate, measured, not enforced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from bst_rt.runtime.candidate_features import FEATURE_NAMES, CandidateFeatures, stack_features
from bst_rt.runtime.metrics import evaluate_predictions, hierarchical_f1
from bst_rt.runtime.policy import Decisions, ItemCandidates, RankerChoice, SystemPolicy, decide, decide_candidates, \
    item_candidates, ranker_choice

Log = Callable[[str], None]

#: the grids the override thresholds are chosen from; tau = 1 means "never override" and is always a candidate (the
#: high taus give the override-share constraint room: only the most confident overrides remain there)
TAU_GRID: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CROSS_TAU_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
CROSS_MIN_SCORE_GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
HGB_PARAMS: dict = dict(max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20,
                        l2_regularization=1.0, early_stopping=False)


@dataclass(frozen=True)
class TuningSpec:
    """What a ranker system may do: the most its held-out override rate may be at tuning, and whether it may cross
    parents at all."""

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
    """Candidate rows of every item from out-of-fold family probabilities (the deployment path:
    `policy.item_candidates`, eq. 2 from the policy's weights; labels only become the target column afterwards)."""
    cands = item_candidates(policy, None, family_oof, text, class_text, audio_present, text_present)
    target = np.concatenate([(it.candidates == lab).astype(np.int64) for it, lab in zip(cands.items, labels)])
    return CandidateRows(cands.items, cands.rows, cands.offsets, target, cands.probabilities, np.asarray(labels),
                         np.asarray(folds))


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


def candidates_of(rows: CandidateRows, item_mask: np.ndarray) -> ItemCandidates:
    """The selected items' candidates in the form `policy.decide_candidates` takes."""
    items, ens, _ = rows.subset(item_mask)
    features, offsets = stack_features(items)
    return ItemCandidates(ens, items, features, offsets)


def choices_for(rows: CandidateRows, item_mask: np.ndarray, scores: np.ndarray) -> RankerChoice:
    """The ranker's pick per selected item, from scores of exactly those items' rows (in row order)."""
    items, ens, _ = rows.subset(item_mask)
    _, offsets = stack_features(items)
    return ranker_choice(ens, [it.candidates for it in items], scores, offsets)


def apply_thresholds(choice: RankerChoice, th: Thresholds | dict) -> Decisions:
    """Eq. 3 at the given thresholds (item-local: the grid search's inner step)."""
    th = th.as_dict() if isinstance(th, Thresholds) else th
    return decide(choice, tau=th["tau"], cross_parent_tau=th["cross_parent_tau"],
                  cross_parent_min_score=th["cross_parent_min_score"])


def tune_thresholds(choice: RankerChoice, labels: np.ndarray, spec: TuningSpec) -> Thresholds:
    """Grid search for hF over the thresholds whose override rate on these held-out choices is at most the spec's
    share (tau = 1 never overrides, so some always qualify); ties go to the fewest overrides."""
    best: tuple | None = None
    cross = [(t, m) for t in CROSS_TAU_GRID for m in CROSS_MIN_SCORE_GRID] if spec.allow_cross_parent else []
    for tau in TAU_GRID:
        for ctau, cmin in [(1.0, 1.0)] + [(t, m) for t, m in cross if t >= tau and t < 1.0]:
            th = dict(tau=tau, cross_parent_tau=ctau, cross_parent_min_score=cmin)
            out = apply_thresholds(choice, th)
            if out.override_share > spec.max_override_share + 1e-12:
                continue
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
    """The seed system's "best nested ranker" figure (docs/method.md): outer fold scored by a ranker and thresholds that never saw it."""
    n = len(rows.labels)
    final = {sid: np.zeros(n, dtype=np.int64) for sid in specs}
    overridden = {sid: np.zeros(n, dtype=bool) for sid in specs}
    per_fold = []
    for k in np.unique(rows.folds):
        outer = rows.folds == k
        inner = ~outer
        choice_in, labels_in = cv_choices(rows, inner, seed)
        model = fit_ranker(rows.features[rows.rows_of(inner)], rows.target[rows.rows_of(inner)], seed)
        held_out = candidates_of(rows, outer)
        fold_report = {"fold": int(k)}
        for sid, spec in specs.items():
            th = tune_thresholds(choice_in, labels_in, spec)
            policy = _tuned_policy(sid, th)
            out = decide_candidates(policy, held_out, lambda r: ranker_scores(model, r))
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
            "override_share": float(overridden[sid].mean()),  # measured on the outer folds (held out)
            "max_override_share": specs[sid].max_override_share,
            "fixed": int(((final[sid] == rows.labels) & (base != rows.labels)).sum()),
            "broken": int(((final[sid] != rows.labels) & (base == rows.labels)).sum()),
        }
    return report


def _tuned_policy(sid: int, th: Thresholds) -> SystemPolicy:
    """A stand-in policy carrying only what `decide_candidates` reads (ranker on, k from the rows, thresholds)."""
    return SystemPolicy(sid, f"system{sid}", "", {"_": 1.0}, True, tau=th.tau, cross_parent_tau=th.cross_parent_tau,
                        cross_parent_min_score=th.cross_parent_min_score)


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
