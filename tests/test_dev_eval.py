"""`bst-train rank` freezes four systems; development-as-evaluation predicts label-blind and only then scores them."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.candidate_features import FEATURE_NAMES
from bst_rt.runtime.metrics import evaluate_predictions, hierarchical_f1
from bst_rt.runtime.policy import load_policies
from bst_rt.export.cli import app
from bst_rt.train.dev_eval import TorchChain, dev_as_eval


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
    assert "fold-respecting" in result.output and "all-folds deployment check" in result.output
    saved = json.loads((ranked_run.run / "dev_eval.json").read_text())
    assert sorted(saved["systems"]) == ["1", "2", "3", "4"]
    check = saved["deployment_check"]
    assert saved["protocol"] == "fold-respecting" and check["protocol"] == "all-folds deployment check"
    assert sorted(check["systems"]) == ["1", "2", "3", "4"]
    nested = ranked_run.meta["nested_cv"]
    for sid in ("1", "2", "3", "4"):
        print(f"system {sid}: fold-respecting hF {saved['systems'][sid]['hF']:.4f}, all-folds "
              f"{check['systems'][sid]['hF']:.4f}, held-out {nested[f'system{sid}']['hF']:.4f}")


def test_dev_as_eval_before_rank_is_refused_with_one_line(ranked_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("registry.json", "ensemble.json"):
        (run / name).write_bytes((ranked_run.run / name).read_bytes())
    result = CliRunner().invoke(app, ["dev-as-eval", str(run), str(ranked_run.data)])
    assert result.exit_code == 1
    assert "bst-train rank" in result.output and "Traceback" not in result.output


# --- fold-respecting protocol (issue 10): each clip goes through the chain frozen from its own fold ---------------
@pytest.fixture(scope="module")
def fold_evaluated(ranked_run):
    from bst_rt.train.fold_chains import FoldRespectingChain

    chain = FoldRespectingChain(ranked_run.run, ranked_run.data)
    spies = {k: _SpyChain(c) for k, c in chain.chains.items()}
    chain.chains = spies
    return chain, spies, dev_as_eval(chain, ranked_run.data)


def test_each_clip_goes_through_the_chain_of_its_own_fold_only(ranked_run, fold_evaluated):
    from bst_rt.train.folds import official_folds

    _, spies, report = fold_evaluated
    ds = read_dev_dataset(ranked_run.data)
    assert report["protocol"] == "fold-respecting" and report["items"] == len(ds)
    folds = official_folds(ds.label_indices)
    assert sorted(spies) == [0, 1, 2, 3, 4]
    for k, spy in spies.items():
        seen = sorted(c.id for c in spy.seen)
        assert seen == sorted(ds.ids[i] for i in folds[k].test)
        assert all(c.label is None and c.confidence is None for c in spy.seen)
        # the fold-k checkpoints it ran held these very clips out of training
        with np.load(ranked_run.run / "families" / "baseline" / f"fold{k}" / "heldout.npz") as z:
            assert sorted(map(str, z["ids"])) == seen


def test_fold_chain_k_is_fitted_without_fold_k(ranked_run, tmp_path):
    """Scramble fold 0's out-of-fold probabilities in a copy of the run: fold 0's frozen pools, ranker and thresholds
    stay byte-identical, fold 1's (which trained on fold 0) change."""
    from bst_rt.train.fold_chains import FOLD_CHAINS_DIR, INDEX_JSON, fit_fold_chains
    from bst_rt.train.systems import RankOptions

    src = ranked_run.run
    index = json.loads((src / FOLD_CHAINS_DIR / INDEX_JSON).read_text())
    fold0 = set(index["folds"]["0"])
    run = tmp_path / "run"
    (run / "families").mkdir(parents=True)
    for name in ("registry.json", "ensemble.json", "systems.json"):
        (run / name).write_bytes((src / name).read_bytes())
    rng = np.random.default_rng(0)
    for fam_dir in (src / "families").iterdir():
        dest = run / "families" / fam_dir.name
        dest.mkdir()
        for item in fam_dir.iterdir():
            if item.name != "oof.npz":
                (dest / item.name).symlink_to(item.resolve())
        with np.load(fam_dir / "oof.npz") as z:
            arrays = {k: z[k] for k in z.files}
        rows = np.array([str(i) in fold0 for i in arrays["ids"]])
        for key in ("probs", "calibrated_probs"):
            if key in arrays:
                arrays[key][rows] = rng.dirichlet(np.ones(arrays[key].shape[1]), rows.sum()).astype(arrays[key].dtype)
        np.savez(dest / "oof.npz", **arrays)
    opts = RankOptions(k=index["k"], max_override_share=index["max_override_share"], seed=index["seed"])
    fit_fold_chains(run, ranked_run.data, opts, log=lambda _: None)
    for name in ("ranker.json", "systems.json", "ranker.joblib"):
        a = (src / FOLD_CHAINS_DIR / "fold0" / name).read_bytes()
        assert a == (run / FOLD_CHAINS_DIR / "fold0" / name).read_bytes(), name
    assert (src / FOLD_CHAINS_DIR / "fold1" / "ranker.joblib").read_bytes() != \
        (run / FOLD_CHAINS_DIR / "fold1" / "ranker.joblib").read_bytes()


def test_fold_respecting_no_ranker_system_matches_the_out_of_fold_probabilities(ranked_run, fold_evaluated):
    """System 3 on a clip with audio and text = argmax of its fold's top-5 weights over the calibrated out-of-fold
    probabilities `bst-train train` saved (fold k's model on its held-out clips), recomputed here from the checkpoints."""
    from bst_rt.train.fold_chains import FOLD_CHAINS_DIR
    from bst_rt.train.run import load_run

    chain, spies, _ = fold_evaluated
    run = load_run(ranked_run.run)
    ds = read_dev_dataset(ranked_run.data)
    pos = {cid: i for i, cid in enumerate(ds.ids)}
    full = ds.embedding_mask("audio") & ds.embedding_mask("text") & np.array([bool(c.text.strip()) for c in ds.clips])
    worst, checked = 0.0, 0
    for k, spy in spies.items():
        policy = next(p for p in load_policies(ranked_run.run / FOLD_CHAINS_DIR / f"fold{k}" / "systems.json")
                      if p.system_id == 3)
        ids = [c.id for c in spy.seen]
        ens = 0.0
        for fam, w in policy.weights.items():
            z = run.oof(fam)
            rows = {str(i): r for r, i in enumerate(z["ids"])}
            ens = ens + w * z["probs"][[rows[i] for i in ids]].astype(np.float64)  # calibrated (pool._write_oof)
        keep = full[[pos[i] for i in ids]]
        out = spy.outputs[3]
        np.testing.assert_array_equal(out.labels[keep], ens.argmax(1)[keep])
        worst = max(worst, float(np.abs(out.scores[keep] - ens.max(1)[keep]).max()))
        checked += int(keep.sum())
    print(f"\nfold-respecting system 3 vs saved OOF: {checked} clips, max |score diff| {worst:.2e} (tol 1e-5)")
    assert checked > 0.8 * len(ds) and worst <= 1e-5
