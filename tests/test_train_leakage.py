"""No evaluation item or label reaches training: the official folds, the rows each term of eq. (1) reads, and a
behavioural check that scrambling a test fold's labels and embeddings leaves the teacher and the v2mix student
bit-identical."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bst_rt.train.data import Arrays, PoolData, load_arrays
from bst_rt.train.families import list_families, load_family
from bst_rt.train.fold_train import fold_terms, train_fold
from bst_rt.train.folds import official_folds
from bst_rt.train.members import QUICK_OVERRIDES
from bst_rt.train.models import build_model, family_probs


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def dev_cs(synth_corpus):
    return load_arrays(Path(synth_corpus.dev)), load_arrays(Path(synth_corpus.cs))


def test_official_folds_partition_and_stratify(dev_cs):
    dev, _ = dev_cs
    folds = official_folds(dev.labels)
    assert [f.k for f in folds] == list(range(5))
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(len(dev)))
    for f in folds:
        parts = [set(f.train), set(f.val), set(f.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(f.train) + len(f.val) + len(f.test) == len(dev)
        assert abs(len(f.val) - 0.2 * (len(f.train) + len(f.val))) <= 1
        per_class = np.bincount(dev.labels[f.test], minlength=23)
        assert per_class.max() - per_class.min() <= 1  # the dev set is balanced: stratified test folds are too
    again = official_folds(dev.labels.copy())
    assert all((a.test == b.test).all() and (a.train == b.train).all() for a, b in zip(folds, again))


def _with_overlap(dev: Arrays, cs: Arrays, rows: np.ndarray) -> Arrays:
    """The CS set plus crowd-sourced copies of some dev clips (same sound ids)."""
    copy = dev.take(rows)
    cat = np.concatenate
    return Arrays(cat([cs.ids, copy.ids]), cat([cs.labels, copy.labels]), cat([cs.confidences, copy.confidences]),
                  cat([cs.audio, copy.audio]), cat([cs.text, copy.text]), cat([cs.masked, copy.masked]), cs.fingerprint)


def test_no_term_of_any_family_reads_validation_or_test_rows(dev_cs):
    dev, cs = dev_cs
    folds = official_folds(dev.labels)
    data = PoolData.build(dev, _with_overlap(dev, cs, folds[0].test[:7]))
    assert data.cs_dropped_overlap == 7 and not set(data.cs.ids) & set(dev.ids)
    teacher_probs = np.full((len(data.cs), 23), 1 / 23, np.float32)
    for name in list_families():
        cfg = load_family(name)
        if cfg.external:
            continue
        for f in folds:
            held_out = set(dev.ids[f.val]) | set(dev.ids[f.test])
            for term in fold_terms(cfg, f, data, teacher_probs if cfg.cs.mode == "teacher" else None):
                assert not set(term.x.ids) & held_out, (name, f.k, term.name)


def _scrambled(dev: Arrays, rows: np.ndarray, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    out = dev.take(np.arange(len(dev)))
    out.labels = out.labels.copy()
    out.labels[rows] = rng.permutation(out.labels[rows]) + 1
    out.labels[rows] %= 23
    for name in ("audio", "text", "masked"):
        arr = getattr(out, name).copy()
        arr[rows] = rng.normal(size=(len(rows), arr.shape[1])).astype(np.float32)
        setattr(out, name, arr)
    return out


def _teacher_then_student(dev: Arrays, cs: Arrays, fold) -> tuple[dict, np.ndarray, dict]:
    quick = {**QUICK_OVERRIDES, "epochs": 3}
    data = PoolData.build(dev, cs)
    base = load_family("baseline").with_overrides(quick)
    teacher = train_fold(base, fold_terms(base, fold, data), dev.take(fold.val), dev.take(fold.test), seed=5)
    model = build_model(base)
    model.load_state_dict(teacher.state_dict)
    probs = family_probs([(model, 1.3)], *data.cs.inputs())
    v2 = load_family("v2mix").with_overrides(quick)
    student = train_fold(v2, fold_terms(v2, fold, data, probs), dev.take(fold.val), dev.take(fold.test), seed=6)
    return teacher.state_dict, probs, student.state_dict


def test_scrambling_the_test_fold_changes_nothing_that_is_trained(dev_cs):
    dev, cs = dev_cs
    fold = official_folds(dev.labels)[1]
    ref = _teacher_then_student(dev, cs, fold)
    got = _teacher_then_student(_scrambled(dev, fold.test, 0), cs, fold)
    for a, b in ((ref[0], got[0]), (ref[2], got[2])):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(ref[1], got[1])
    # the check has teeth: scrambling the *training* rows does change the teacher
    moved = _teacher_then_student(_scrambled(dev, fold.train[:40], 0), cs, fold)
    assert not all(torch.equal(ref[0][k], moved[0][k]) for k in ref[0])


def test_official_folds_too_few_clips_is_one_line_data_error():
    """Fewer than 7 clips per class cannot be split by the official calls (5 test folds, a validation part holding
    every class): a DataError (one line in the CLI), not sklearn's traceback; 7 per class splits."""
    from bst_rt.runtime.errors import DataError
    from bst_rt.runtime.taxonomy import CODES

    for n in (4, 5, 6):
        with pytest.raises(DataError, match="too small for the official 5-fold split"):
            official_folds(np.repeat(np.arange(len(CODES)), n))
    assert len(official_folds(np.repeat(np.arange(len(CODES)), 7))) == 5


def test_demo_refuses_fewer_clips_than_the_folds_need():
    """`bst-train demo --per-class 6` used to run ~12 minutes (CLAP export, embeddings) and then fail in the split."""
    from typer.testing import CliRunner

    from bst_rt.export.cli import app

    result = CliRunner().invoke(app, ["demo", "--per-class", "6", "--work", "/nonexistent-demo"])
    assert result.exit_code == 2 and "per-class" in result.output
