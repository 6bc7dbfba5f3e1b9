"""The trained pool (session fixture `trained_run`): run-folder contract, calibration, ensembles, v2mix vs naive
concatenation, abnormal-family exclusion, resume, and the `bst-train train` / `bst-train report` commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.taxonomy import NUM_CLASSES
from bst_rt.export.cli import app
from bst_rt.train.folds import official_folds
from bst_rt.train.data import PoolData, load_arrays
from bst_rt.train.ensemble import pool_candidates
from bst_rt.train.members import QUICK_OVERRIDES
from bst_rt.train.models import family_probs
from bst_rt.train.pool import train_pool
from bst_rt.train.run import load_fold_models, load_run

pytestmark = pytest.mark.usefixtures("torch_one_thread")


FOLD_FILES = ("checkpoint.pt", "args.json", "config.snapshot.json", "heldout.npz", "calibration.json", "fold.json")


def test_every_family_trained_with_the_run_folder_contract(trained_run):
    run = load_run(trained_run.run)
    dev = load_arrays(trained_run.data)
    folds = official_folds(dev.labels)
    statuses = {f: e["status"] for f, e in run.registry["families"].items()}
    print("families:", statuses)
    assert set(statuses.values()) == {"done"}, statuses
    assert {"baseline", "audio-only", "text-only", "v2mix", "naive-concat", "external-esc50"} <= set(statuses)
    for family in run.families:
        for f in folds:
            d = run.fold_dir(family, f.k)
            assert all((d / name).is_file() for name in FOLD_FILES), d
            with np.load(d / "heldout.npz") as z:
                assert list(z["ids"]) == list(dev.ids[f.test])
                assert z["logits"].shape == z["calibrated_probs"].shape == (len(f.test), NUM_CLASSES)
                np.testing.assert_allclose(z["calibrated_probs"].sum(1), 1.0, atol=1e-5)
        oof = run.oof(family)
        assert list(oof["ids"]) == list(dev.ids) and (oof["labels"] == dev.labels).all()
        assert sorted(np.unique(oof["fold"])) == list(range(5))


def test_calibration_lowers_heldout_nll(trained_run):
    folds = [s for e in load_run(trained_run.run).registry["families"].values() for s in e["folds"].values()]
    raw = np.mean([s["nll_test_raw"] for s in folds])
    cal = np.mean([s["nll_test_calibrated"] for s in folds])
    print(f"held-out NLL over {len(folds)} fold models: raw {raw:.4f} -> calibrated {cal:.4f}")
    assert cal < raw


def test_ensembles_reach_at_least_the_best_single_family(trained_run):
    run = load_run(trained_run.run)
    selectable = pool_candidates(run)
    oofs = {f: run.oof(f) for f in selectable}
    labels = next(iter(oofs.values()))["labels"]
    single = {f: hierarchical_f1(labels, z["probs"].argmax(1)) for f, z in oofs.items()}
    assert set(run.ensembles) >= {"top5", "top12", "lowrisk"}
    for name, pool in run.ensembles.items():
        w = pool["weights"]
        assert all(v >= 0 for v in w.values()) and abs(sum(w.values()) - 1) < 1e-9
        assert set(w) <= set(selectable)
        mixed = sum(v * oofs[f]["probs"].astype(np.float64) for f, v in w.items())
        hf = hierarchical_f1(labels, mixed.argmax(1))  # recomputed from the files, not read back
        group = {f: run.registry["families"][f]["group"] for f in single}
        best = max(v for f, v in single.items() if pool["group_caps"].get(group[f], pool["group_cap"]) > 0)
        print(f"{name}: ensemble OOF hF {hf:.4f} (nested {pool['hF_nested_mean']:.4f}) vs best single "
              f"{max(single.values()):.4f}")
        assert 0.0 < pool["hF_nested_mean"] <= 1.0
        assert hf == pytest.approx(pool["hF"])
        assert hf >= best
        groups = {}
        for f, v in w.items():
            g = run.registry["families"][f]["group"]
            groups[g] = groups.get(g, 0) + v
        if not pool["caps_relaxed"]:
            assert all(share <= pool["group_caps"].get(g, pool["group_cap"]) + 1e-9 for g, share in groups.items())


def test_v2mix_beats_naive_concatenation_of_noisy_labels(trained_run):
    fam = load_run(trained_run.run).registry["families"]
    v2, naive = fam["v2mix"]["hF_mean"], fam["naive-concat"]["hF_mean"]
    print(f"v2mix hF {v2:.4f} vs naive-concat {naive:.4f} (baseline {fam['baseline']['hF_mean']:.4f})")
    assert v2 > naive
    args = json.loads((trained_run.run / "families" / "v2mix" / "fold0" / "args.json").read_text())
    assert args["teacher"] == "baseline" and args["terms"]["cs-soft"] > 0


def test_family_probs_is_the_fold_mean_of_calibrated_softmax(trained_run):
    run = load_run(trained_run.run)
    dev = load_arrays(trained_run.data)
    models = load_fold_models(run, "baseline")
    assert len(models) == 5 and all(not m.training for m, _ in models)
    f = official_folds(dev.labels)[2]
    x = dev.take(f.test)
    one = family_probs(models[2:3], *x.inputs())
    with np.load(run.fold_dir("baseline", 2) / "heldout.npz") as z:
        err = np.abs(one - z["calibrated_probs"]).max()
    print(f"reloaded fold model vs stored held-out probs: max abs diff {err:.2e} (tolerance 1e-5)")
    assert err < 1e-5
    mean = family_probs(models, *x.inputs())
    each = [family_probs([m], *x.inputs()) for m in models]
    np.testing.assert_allclose(mean, np.mean(each, axis=0), atol=1e-6)


def test_report_prints_families_ensembles_and_table4(trained_run):
    result = CliRunner().invoke(app, ["report", str(trained_run.run)])
    assert result.exit_code == 0, result.output
    print(result.output.splitlines()[0])
    for family in load_run(trained_run.run).families:
        assert f"| {family} |" in result.output
    assert "| top12 |" in result.output and "83.4690" in result.output and "best single family:" in result.output


def test_progress_names_every_family_and_fold(trained_run):
    lines = [line for line in trained_run.log if " fold " in line]
    assert len(lines) == 5 * len(load_run(trained_run.run).families)
    assert any(line.startswith("external esc50:") and "dropped" in line for line in trained_run.log)


def _small(data_dir: Path) -> PoolData:
    return PoolData.build(load_arrays(data_dir, need_masked=False))


def test_interrupted_pool_resumes_without_retraining_done_folds(synth_corpus, tmp_path):
    from bst_rt.train.families import load_family

    quick = {**QUICK_OVERRIDES, "epochs": 2}
    configs = [load_family("baseline").with_overrides(quick), _diverging(quick)]
    data = _small(Path(synth_corpus.dev))
    seen: list[str] = []

    def stop_after_three(line: str) -> None:
        seen.append(line)
        if sum(" fold " in s for s in seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_pool(data, tmp_path / "run", configs, log=stop_after_three)
    done = {p: p.read_bytes() for p in sorted((tmp_path / "run").glob("families/*/fold*/checkpoint.pt"))}
    assert len(done) == 3
    result = train_pool(data, tmp_path / "run", configs, log=lambda _: None)
    assert result.trained == [("baseline", 3), ("baseline", 4)] + [("diverging", k) for k in range(5)]
    assert all(p.read_bytes() == b for p, b in done.items())
    # an abnormal family is excluded from every pool, with the reason in the registry
    print("diverging:", result.registry["families"]["diverging"]["excluded"])
    assert result.registry["families"]["diverging"]["excluded"]
    assert result.ensembles and all("diverging" not in p.weights for p in result.ensembles.values())
    # resuming on other data is refused
    other = PoolData.build(data.dev.take(np.arange(len(data.dev) - 23)))
    other.dev.fingerprint = "another dataset"
    from bst_rt.runtime.errors import BstError

    with pytest.raises(BstError, match="other data"):
        train_pool(other, tmp_path / "run", configs, log=lambda _: None)


def _diverging(quick: dict):
    """A family whose learning rate makes training blow up (non-finite loss or one-class collapse)."""
    from bst_rt.train.families import FamilyConfig

    return FamilyConfig(name="diverging", group="test").with_overrides({**quick, "lr": 1e6, "label_smoothing": 0.0})


def test_train_command_fails_cleanly(synth_corpus, tmp_path):
    """(Progress lines of a `bst-train train` that succeeds: test_train_with_two_seeds_names_members_and_exports_them.)"""
    runner = CliRunner()
    bad = runner.invoke(app, ["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 1 and bad.output.startswith("error:") and "Traceback" not in bad.output
    unknown = runner.invoke(app, ["train", str(synth_corpus.dev), "--out", str(tmp_path / "r3"), "--families", "nope"])
    assert unknown.exit_code == 1 and "no family config" in unknown.output


# ---------------------------------------------------------------- seed items: validation screen, CS-as-clean, no pool


def _fold(val_hf: float, val_share: float, test_hf: float, test_share: float, finite: bool = True) -> dict:
    return {"val_hF": val_hf, "val_top_class_share": val_share, "val_finite": finite, "hF": test_hf,
            "top_class_share": test_share, "finite": finite}


def test_abnormal_exclusion_reads_validation_not_test_figures():
    from bst_rt.train.ensemble import screen_families

    def family(folds):
        return {"status": "done", "group": "core", "folds": {str(k): f for k, f in enumerate(folds)},
                "hF_mean": float(np.mean([f["hF"] for f in folds])),
                "val_hF_mean": float(np.mean([f["val_hF"] for f in folds]))}

    normal = [_fold(0.70, 0.10, 0.70, 0.10)] * 5
    reg = {"families": {
        "a": family(normal), "b": family(normal), "c": family(normal),
        # fine on validation, collapsed and far below the pool on the test folds: kept
        "fine-val-bad-test": family([_fold(0.69, 0.12, 0.05, 0.95)] * 5),
        # collapsed on one fold's validation split and far below on validation, fine on test: excluded
        "bad-val-fine-test": family([_fold(0.30, 0.80, 0.75, 0.10)] + [_fold(0.40, 0.20, 0.75, 0.10)] * 4),
        # non-finite validation logits on fold 2 only
        "nan-val": family([_fold(0.7, 0.1, 0.7, 0.1)] * 2 + [_fold(float("nan"), float("nan"), 0.7, 0.1, finite=False)]
                          + [_fold(0.7, 0.1, 0.7, 0.1)] * 2),
    }}
    screen_families(reg)
    verdicts = {f: e["excluded"] for f, e in reg["families"].items()}
    print(verdicts)
    assert verdicts["fine-val-bad-test"] is None and verdicts["a"] is None
    assert "collapse" in verdicts["bad-val-fine-test"] and "fold 0 validation" in verdicts["bad-val-fine-test"]
    assert "validation hF far below" in verdicts["bad-val-fine-test"]
    assert "non-finite" in verdicts["nan-val"] and "fold 2" in verdicts["nan-val"]
    assert "collapse" not in verdicts["nan-val"]  # a non-finite fold has no predictions to call a collapse


def test_fold_records_the_validation_figures_the_screen_reads(trained_run):
    from bst_rt.train.fold_job import validation_scores

    run = load_run(trained_run.run)
    dev = load_arrays(trained_run.data)
    folds = official_folds(dev.labels)
    for family in ("baseline", "v2mix"):
        for f in folds:
            scores = json.loads((run.fold_dir(family, f.k) / "fold.json").read_text())
            with np.load(run.fold_dir(family, f.k) / "heldout.npz") as z:
                assert (z["val_labels"] == dev.labels[f.val]).all()
                val_logits = z["val_logits"]
            pred = val_logits.argmax(1)
            assert scores["val_hF"] == pytest.approx(hierarchical_f1(dev.labels[f.val], pred))
            assert scores["val_top_class_share"] == pytest.approx(np.bincount(pred).max() / len(pred))
            assert validation_scores(val_logits, dev.labels[f.val], True) == {
                k: scores[k] for k in ("val_hF", "val_finite", "val_top_class_share")}
        entry = run.registry["families"][family]
        assert entry["val_hF_mean"] == pytest.approx(np.mean([s["val_hF"] for s in entry["folds"].values()]))


def test_naive_concat_is_trained_and_reported_but_never_pooled(trained_run):
    run = load_run(trained_run.run)
    assert run.registry["families"]["naive-concat"]["status"] == "done"
    assert "naive-concat" not in pool_candidates(run)
    for name, pool in run.ensembles.items():
        assert "naive-concat" not in pool["weights"], name
    doc = json.loads((trained_run.run / "ensemble.json").read_text())
    assert "clean" in doc["not_pooled"]["naive-concat"]
    report = CliRunner().invoke(app, ["report", str(trained_run.run)]).output
    row = next(line for line in report.splitlines() if line.startswith("| naive-concat |"))
    assert "never pooled" in row


def _fake_run(path: Path, probs: dict[str, np.ndarray], labels: np.ndarray, configs: dict):
    """A run folder with hand-made OOF probabilities (no training): enough for ensemble selection."""
    from bst_rt.train.run import Run

    fold = np.arange(len(labels)) % 5
    reg = {"families": {}}
    for f, p in probs.items():
        (path / "families" / f).mkdir(parents=True)
        np.savez(path / "families" / f / "oof.npz", ids=np.arange(len(labels)).astype(str), labels=labels,
                 probs=p.astype(np.float32), fold=fold)
        reg["families"][f] = {"status": "done", "group": configs[f].group, "config": configs[f].to_dict(),
                              "excluded": None}
    return Run(path, reg, {})


def test_naive_concat_stays_out_even_when_it_is_the_best_family(tmp_path):
    from bst_rt.runtime.errors import BstError
    from bst_rt.train.ensemble import check_pools, write_ensembles
    from bst_rt.train.families import load_family

    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, 60)
    onehot = np.eye(NUM_CLASSES)[labels]
    noise = {f: rng.dirichlet(np.ones(NUM_CLASSES), 60) for f in ("baseline", "v2mix", "naive-concat")}
    probs = {"baseline": 0.3 * onehot + noise["baseline"], "v2mix": 0.4 * onehot + noise["v2mix"],
             "naive-concat": 5.0 * onehot + noise["naive-concat"]}  # the best single family by far
    run = _fake_run(tmp_path, probs, labels, {f: load_family(f) for f in probs})
    pools = write_ensembles(run)
    print({k: v["weights"] for k, v in pools.items()})
    assert {"top5", "top12"} <= set(pools)
    assert all("naive-concat" not in p["weights"] for p in pools.values())
    with pytest.raises(BstError, match="naive-concat"):
        check_pools(run, {"top12": {"weights": {"v2mix": 0.5, "naive-concat": 0.5}}})


def test_all_families_abnormal_train_and_rank_say_why(synth_corpus, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(synth_corpus.dev), "--out", str(run), "--families", "audio-only",
                                 "--quick", "--epochs", "1", "--threads", "1", "--set", "lr=1e6",
                                 "--set", "label_smoothing=0.0"])
    print(result.output.splitlines()[-1])
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: training finished without an ensemble")
    assert "every trained family was excluded as abnormal" in last
    assert "audio-only: non-finite loss" in last and "text-only: non-finite loss" in last
    rank = runner.invoke(app, ["rank", str(run), str(synth_corpus.dev)])
    print(rank.output.strip())
    assert rank.exit_code == 1 and "to completion" not in rank.output
    assert "every trained family was excluded as abnormal" in rank.output and "audio-only: non-finite" in rank.output


# ---------------------------------------------------------------- seeds as a parameter, the seed's pool file


def test_seed_pool_file_reproduces_the_seed_composition():
    from collections import Counter

    from bst_rt.train.members import load_pool_file

    members, base, doc = load_pool_file("seed-p33")
    names = [m.cfg.name for m in members]
    sections = Counter(m.section for m in members)
    print(f"seed-p33: {len(members)} families, {5 * len(members)} fold checkpoints, {dict(sections)}")
    assert len(set(names)) == len(names) == 31 and base == 0
    assert sections == {"core v2mix": 10, "prior, confidence and hierarchy": 9, "external, FSD and text-diversity": 12}
    assert {"audio-only", "text-only", "baseline"} <= set(names)  # fallbacks and the v2mix teacher, by plain name
    core = [m for m in members if m.section == "core v2mix"]
    assert {m.family for m in core} == {"v2mix", "v2mix-hier"} and {m.seed for m in core} == {0, 1, 2, 3, 4}
    assert all(m.cfg.cs.mode == "teacher" and m.cfg.cs.teacher == "baseline" for m in core)
    assert names.index("baseline") < min(names.index(m.cfg.name) for m in core)  # teachers train first
    assert not any(m.cfg.treats_cs_as_clean for m in members)
    assert "v2mix@3" in names and "v2mix-hier@4" in names


def test_train_with_two_seeds_names_members_and_exports_them(synth_corpus, tmp_path):
    """`bst-train train --seeds 0,1` on a tiny family set: members `family@1`, own seeds, report sections, and '@' names
    through the heads graph (the exporter's family axis)."""
    import onnxruntime as ort

    from bst_rt.export.heads import build_heads, export_heads, make_layout, torch_heads

    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(synth_corpus.dev), "--out", str(run_dir), "--families", "audio-only",
                                 "--seeds", "0,1", "--quick", "--epochs", "5", "--threads", "1"])
    assert result.exit_code == 0, result.output  # 5 quick epochs: audio-only is not abnormal on validation
    for member in ("audio-only", "text-only", "audio-only@1", "text-only@1"):
        assert f"] {member} fold 5/5" in result.output
    assert (run_dir / "ensemble.json").is_file()
    run = load_run(run_dir)
    assert set(run.families) == {"audio-only", "text-only", "audio-only@1", "text-only@1"}
    assert run.registry["seeds"] == [0, 1]
    entry = run.registry["families"]["audio-only@1"]
    assert (entry["family"], entry["seed"]) == ("audio-only", 1)
    a0 = json.loads((run.fold_dir("audio-only", 0) / "args.json").read_text())
    a1 = json.loads((run.fold_dir("audio-only@1", 0) / "args.json").read_text())
    assert (a0["pool_seed"], a1["pool_seed"]) == (0, 1) and a0["seed"] != a1["seed"]
    assert (run.fold_dir("audio-only", 0) / "checkpoint.pt").read_bytes() != \
        (run.fold_dir("audio-only@1", 0) / "checkpoint.pt").read_bytes()

    report = runner.invoke(app, ["report", str(run_dir)]).output
    print(report.splitlines()[0])
    assert "(seeds 0, 1)" in report and "20 fold checkpoints" in report
    assert "| **external, FSD and text-diversity** (4 families, 20 fold checkpoints) |" in report
    assert "| audio-only@1 | BSD10k |" in report

    layout = make_layout({"p": {"audio-only@1": 0.5, "text-only@1": 0.5}}, always=("audio-only", "text-only"))
    heads = build_heads(run, layout)
    path = export_heads(heads, tmp_path / "heads.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dev = load_arrays(synth_corpus.dev, need_masked=False)
    names = [i.name for i in sess.get_inputs()]
    feeds = {n: {"audio_embedding": dev.audio, "text_embedding": dev.text,
                 "masked_text_embedding": dev.masked}[n][:16] for n in names}
    fam_onnx = sess.run(["family_probs"], feeds)[0]
    fam_torch = torch_heads(heads, dev.audio[:16], dev.text[:16], dev.masked[:16])[0]
    direct = family_probs(load_fold_models(run, "audio-only@1"), dev.audio[:16], dev.text[:16], dev.masked[:16])
    err = max(np.abs(fam_onnx - fam_torch).max(), np.abs(fam_onnx[:, 0] - direct).max())
    print(f"heads.onnx families {layout.families}: max abs diff vs torch {err:.2e} (tolerance 1e-5)")
    assert layout.families[:2] == ("audio-only@1", "text-only@1") and err < 1e-5


def test_pool_file_and_family_list_are_exclusive(synth_corpus, tmp_path):
    result = CliRunner().invoke(app, ["train", str(synth_corpus.dev), "--out", str(tmp_path / "r"), "--pool",
                                      "seed-p33", "--families", "baseline"])
    assert result.exit_code == 1 and "--pool names the families" in result.output
    bad = CliRunner().invoke(app, ["train", str(synth_corpus.dev), "--out", str(tmp_path / "r"), "--seeds", "0,0"])
    assert bad.exit_code == 1 and "distinct seeds" in bad.output
