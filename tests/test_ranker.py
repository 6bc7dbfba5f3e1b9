"""The candidate ranker: nested CV never scores a fold with a ranker or thresholds that saw it, tuned thresholds keep
the held-out override rate within the share (a tuning constraint), the ranker learns an informative feature, and
`bst-train rank` freezes four systems the runtime can load."""
from __future__ import annotations

import numpy as np
import pytest

from bst_rt.runtime.candidate_features import FEATURE_NAMES
from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.policy import SystemPolicy
from bst_rt.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX
from bst_rt.train import ranker as ranker_module

#: system 1's share leaves room for the ~30% of items this scenario confuses; system 2's does not (it must then keep
#: the held-out override rate within 10% all the same)
SPECS = {1: ranker_module.TuningSpec(0.4, allow_cross_parent=True), 2: ranker_module.TuningSpec(0.1, allow_cross_parent=False)}


def _scenario(n: int = 700, seed: int = 0, inputs: dict | None = None) -> ranker_module.CandidateRows:
    """Items whose ensemble often confuses the true class with a sibling while the metadata embedding points at the
    truth: a case the paper's reranker is meant for, so a working ranker must beat the ensemble on held-out folds."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    class_text = rng.normal(size=(NUM_CLASSES, 512))
    class_text /= np.linalg.norm(class_text, axis=1, keepdims=True)
    text = 0.35 * class_text[labels] + rng.normal(size=(n, 512)) / np.sqrt(512)
    oof = {}
    siblings = [np.flatnonzero((PARENT_INDEX == PARENT_INDEX[c]) & (np.arange(NUM_CLASSES) != c)) for c in labels]
    decoy = np.array([rng.choice(s) if len(s) else c for s, c in zip(siblings, labels)])
    confused = rng.random(n) < 0.35
    for fam in ("f1", "f2", "text-only", "audio-only"):
        logits = rng.normal(scale=0.8, size=(n, NUM_CLASSES))
        logits[np.arange(n), labels] += 2.5
        logits[np.arange(n), decoy] += np.where(confused, 3.2, 0.5)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        oof[fam] = p / p.sum(axis=1, keepdims=True)
    policy = SystemPolicy(1, "primary", "top12", {"f1": 0.5, "f2": 0.5}, True, k=3)
    folds = np.arange(n) % 5
    if inputs is not None:
        inputs.update(policy=policy, oof=oof, text=text.astype(np.float32), class_text=class_text.astype(np.float32))
    return ranker_module.build_rows(policy, oof, text.astype(np.float32), np.ones(n, bool), np.ones(n, bool),
                         class_text.astype(np.float32), labels, folds)


@pytest.fixture(scope="module")
def rows() -> ranker_module.CandidateRows:
    return _scenario()


def test_rows_target_marks_the_true_class_once_per_item_at_most(rows):
    assert rows.features.shape == (len(rows.target), len(FEATURE_NAMES))
    per_item = np.add.reduceat(rows.target, rows.offsets[:-1])
    assert per_item.max() == 1
    assert per_item.mean() == pytest.approx(rows.recall_at_candidates)


def test_training_rows_are_what_the_runtime_computes_for_each_item():
    """Training and deployment cannot drift: each item's rows equal the runtime path (item_evidence, then
    candidate_features) run on that item alone."""
    from bst_rt.runtime.candidate_features import candidate_features
    from bst_rt.runtime.policy import item_evidence

    inputs: dict = {}
    rows = _scenario(n=60, seed=3, inputs=inputs)
    for i in range(60):
        ens, fam = item_evidence(inputs["policy"], {f: p[i] for f, p in inputs["oof"].items()}, True, True)
        alone = candidate_features(ens, fam, inputs["text"][i], inputs["class_text"], audio_present=True,
                                   text_present=True, k=inputs["policy"].k)
        np.testing.assert_array_equal(rows.items[i].candidates, alone.candidates)
        np.testing.assert_array_equal(rows.features[rows.offsets[i]:rows.offsets[i + 1]], alone.features)


def test_nested_cv_never_lets_a_fold_see_itself(rows, monkeypatch):
    fitted: list[set] = []
    real_fit = ranker_module.fit_ranker

    def spying_fit(features, target, seed=0):
        fitted.append({r.tobytes() for r in np.asarray(features)})
        return real_fit(features, target, seed)

    monkeypatch.setattr(ranker_module, "fit_ranker", spying_fit)
    report = ranker_module.nested_estimate(rows, SPECS, seed=0, log=lambda _: None)
    fold_rows = {k: {r.tobytes() for r in rows.features[rows.rows_of(rows.folds == k)]} for k in range(5)}
    # per outer fold: 4 inner fits (each without the outer fold) + 1 outer fit (without it); 25 in all
    assert len(fitted) == 25
    for k in range(5):
        for used in fitted[5 * k: 5 * k + 5]:
            assert not (used & fold_rows[k]), f"a ranker used to score outer fold {k} was fitted on it"
        inner = fitted[5 * k: 5 * k + 4]
        others = [j for j in range(5) if j != k]
        for used, held in zip(inner, others):  # inner fit i leaves out inner fold i as well
            assert not (used & fold_rows[held])
    for sid, spec in SPECS.items():  # each fold's thresholds kept the inner held-out override rate within the share
        assert all(f[f"system{sid}"]["override_share"] <= spec.max_override_share + 1e-12 for f in report["per_fold"])
        assert 0.0 <= report[f"system{sid}"]["override_share"] <= 1.0  # outer folds: measured, reported
    print(f"\nscenario: ensemble OOF hF {report['ensemble_oof_hF']:.4f}, nested system 1 "
          f"{report['system1']['hF']:.4f}, system 2 {report['system2']['hF']:.4f}; held-out override rate "
          f"{report['system1']['override_share']:.3f} / {report['system2']['override_share']:.3f}")
    # the metadata embedding holds real evidence here, so a working ranker must improve held-out hF
    assert report["system1"]["hF"] > report["ensemble_oof_hF"] + 0.02


def test_tuned_thresholds_keep_the_heldout_override_rate_within_the_share_and_the_parent_rule(rows):
    choice, labels = ranker_module.cv_choices(rows, np.ones(len(rows.labels), bool), seed=0)
    free = ranker_module.tune_thresholds(choice, labels, ranker_module.TuningSpec(1.0, True))
    assert free.override_share > 0.05  # unconstrained, this scenario overrides more than the 5% share below
    for spec in (ranker_module.TuningSpec(0.05, True), ranker_module.TuningSpec(0.3, False)):
        th = ranker_module.tune_thresholds(choice, labels, spec)
        out = ranker_module.apply_thresholds(choice, th)  # item-local eq. 3 on held-out (out-of-fold) ranker scores
        assert out.override_share == pytest.approx(th.override_share)
        assert out.override_share <= spec.max_override_share + 1e-12
        assert th.hF == pytest.approx(hierarchical_f1(labels, out.labels))
        if not spec.allow_cross_parent:
            assert (PARENT_INDEX[out.labels] == PARENT_INDEX[out.base]).all()
        never = ranker_module.apply_thresholds(choice, dict(tau=1.0, cross_parent_tau=1.0, cross_parent_min_score=1.0))
        assert th.hF >= hierarchical_f1(labels, never.labels)  # "never override" is always in the grid


def test_final_ranker_converts_to_onnx_and_matches_sklearn(rows):
    ort = pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model, thresholds = ranker_module.fit_final(rows, SPECS, seed=0)
    assert set(thresholds) == {1, 2}
    onx = to_onnx(model, initial_types=[("x", FloatTensorType([None, len(FEATURE_NAMES)]))],
                  options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rows.features[:2000]
    got = sess.run(None, {"x": x})[1]
    err = float(np.abs(got - model.predict_proba(x)).max())
    print(f"\nranker ONNX vs sklearn: max |dp| = {err:.2e} (tolerance 1e-5) on {len(x)} real candidate rows")
    assert err <= 1e-5
