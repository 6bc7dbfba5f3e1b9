"""`bst rank` freezes four systems; development-as-evaluation predicts label-blind and only then scores them."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bst.runtime.datasets import read_dev_dataset
from bst.runtime.features import FEATURE_NAMES
from bst.runtime.metrics import evaluate_predictions, hierarchical_f1
from bst.runtime.policy import load_policies
from bst.train.cli import app
from bst.train.dev_eval import TorchChain, dev_as_eval


class _SpyChain:
    """Wraps a chain and keeps what it was given, so a test can inspect the clips the chain saw."""

    def __init__(self, chain):
        self.chain, self.name, self.seen, self.outputs = chain, chain.name, [], None

    def predict(self, clips):
        self.seen.extend(clips)
        self.outputs = self.chain.predict(clips)
        return self.outputs


@pytest.fixture(scope="module")
def chain(ranked_run):
    return TorchChain(ranked_run.run, ranked_run.data)


@pytest.fixture(scope="module")
def evaluated(ranked_run, chain):
    spy = _SpyChain(chain)
    return spy, dev_as_eval(spy, ranked_run.data)


def test_rank_freezes_the_four_systems(ranked_run):
    policies = load_policies(ranked_run.run / "systems.json")
    pools = json.loads((ranked_run.run / "ensemble.json").read_text())["pools"]
    assert [p.system_id for p in policies] == [1, 2, 3, 4]
    assert [p.pool for p in policies] == ["top12", "top12", "top5", "lowrisk"]
    assert [p.use_ranker for p in policies] == [True, True, False, False]
    for p in policies:
        src = {f: w for f, w in pools[p.pool]["weights"].items() if w > 0}
        assert set(p.weights) == set(src)
        total = sum(src.values())
        assert all(p.weights[f] == pytest.approx(w / total) for f, w in src.items())
    one, two = policies[0], policies[1]
    assert two.max_override_share < one.max_override_share  # lower correction pressure
    assert two.cross_parent_tau >= 1.0  # System 2 never crosses a parent
    meta = ranked_run.meta
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["k"] == one.k
    assert 0 <= meta["nested_cv"]["system1"]["hF"] <= 1
    for p in (one, two):  # the share constrains tuning: the frozen thresholds' held-out override rate is within it
        assert p.tuning["heldout_override_rate"] <= p.max_override_share + 1e-12
        assert p.tuning["nested_override_rate"] == meta["nested_cv"][f"system{p.system_id}"]["override_share"]
        assert meta["thresholds"][str(p.system_id)]["override_share"] == p.tuning["heldout_override_rate"]
    assert "nested ranker estimate" in ranked_run.stdout
    print(f"\nnested: ensemble {meta['nested_cv']['ensemble_oof_hF']:.4f}, system 1 "
          f"{meta['nested_cv']['system1']['hF']:.4f}, system 2 {meta['nested_cv']['system2']['hF']:.4f}; held-out "
          "override rate (CV at frozen thresholds / nested outer folds) vs share: " + "; ".join(
              f"system {p.system_id} {p.tuning['heldout_override_rate']:.3f} / {p.tuning['nested_override_rate']:.3f}"
              f" vs {p.max_override_share:.3f}" for p in (one, two)))


def test_chain_predicts_from_label_free_clips_only(ranked_run, chain, evaluated):
    spy, _ = evaluated
    ds = read_dev_dataset(ranked_run.data)
    assert len(spy.seen) == len(ds)
    assert all(c.label is None and c.confidence is None for c in spy.seen)
    assert [c.id for c in spy.seen] == ds.ids
    # labels cannot reach the predictions: wrong labels on every clip give exactly the same outputs
    blind = spy.outputs
    lied = chain.predict([dataclasses.replace(c, label="fx-a", confidence=5.0) for c in ds.clips])
    for sid in blind:
        np.testing.assert_array_equal(blind[sid].labels, lied[sid].labels)
        np.testing.assert_array_equal(blind[sid].scores, lied[sid].scores)


def test_dev_as_eval_scores_each_system_and_decides_each_clip_alone(ranked_run, chain, evaluated):
    spy, report = evaluated
    policies = {p.system_id: p for p in load_policies(ranked_run.run / "systems.json")}
    outputs = spy.outputs
    truth = read_dev_dataset(ranked_run.data).label_indices
    assert sorted(report["systems"]) == [1, 2, 3, 4]
    for sid, r in report["systems"].items():
        out = outputs[sid]
        assert r["hF"] == pytest.approx(hierarchical_f1(truth, out.labels))
        assert r["cross_parent_error"] == pytest.approx(1 - r["parent_accuracy"])
        assert r["accuracy"] == pytest.approx(evaluate_predictions(truth, out.labels)["accuracy"])
        assert ((out.scores >= 0) & (out.scores <= 1)).all()
        if not policies[sid].use_ranker:
            assert not out.overridden.any()
    # systems 1 and 2 share the top-12 base: they differ only where one of them overrode it
    same_base = ~(outputs[1].overridden | outputs[2].overridden)
    np.testing.assert_array_equal(outputs[1].labels[same_base], outputs[2].labels[same_base])
    # item-local: the clips predicted in two other groups (odd, even) get exactly the same labels and scores
    clips = spy.seen
    for part in (slice(0, None, 2), slice(1, None, 2)):
        alone = chain.predict(clips[part])
        for sid in outputs:
            np.testing.assert_array_equal(alone[sid].labels, outputs[sid].labels[part])
            np.testing.assert_array_equal(alone[sid].scores, outputs[sid].scores[part])


def test_cli_prints_table3_and_records_it(ranked_run):
    result = CliRunner().invoke(app, ["dev-as-eval", str(ranked_run.run), str(ranked_run.data)])
    assert result.exit_code == 0, result.output
    print("\n" + result.output)
    assert "cross-parent" in result.output and "held-out hF" in result.output
    saved = json.loads((ranked_run.run / "dev_eval.json").read_text())
    assert sorted(saved["systems"]) == ["1", "2", "3", "4"]


def test_dev_as_eval_before_rank_is_refused_with_one_line(ranked_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("registry.json", "ensemble.json"):
        (run / name).write_bytes((ranked_run.run / name).read_bytes())
    result = CliRunner().invoke(app, ["dev-as-eval", str(run), str(ranked_run.data)])
    assert result.exit_code == 1
    assert "bst rank" in result.output and "Traceback" not in result.output
