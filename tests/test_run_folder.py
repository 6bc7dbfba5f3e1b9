"""The run folder as one contract (bst_rt.train.run), the data floor below it, and the shared eq. 2 / weight rules.

Cheap: the run-folder test reuses the session `trained_run`; the others are pure numpy or source inspection."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.policy import normalise_weights, weighted_sum

TRAIN = Path(__file__).resolve().parents[1] / "train"


def _imports(path: Path) -> set[str]:
    """Module names a source file imports (relative ones as '.name')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("module", ["data.py", "external.py"])
def test_data_floor_imports_neither_the_loop_nor_the_run_folder(module):
    """external.py imported pool.py while pool.py imported it back; the arrays now sit below both."""
    found = _imports(TRAIN / module)
    bad = {n for n in found if n.lstrip(".").split(".")[-1] in {"pool", "run"} or n.endswith("train.pool")}
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", ["systems.py", "rank.py", "dev_eval.py", "fold_chains.py", "ensemble.py"])
def test_run_folder_readers_do_their_json_through_run_py(module):
    """One reader/writer of the run folder's JSON documents: these modules no longer parse or dump JSON themselves."""
    assert "json" not in _imports(TRAIN / module), f"{module} still does its own JSON I/O"


def test_oof_written_from_memory_equals_oof_rebuilt_from_the_fold_folders(trained_run, tmp_path):
    """The loop writes oof.npz from the held-out probabilities it holds; rebuilt from the fold files (what a resumed or
    Ray run does) the table must be the same, value for value."""
    from bst_rt.train.data import load_arrays
    from bst_rt.train.folds import official_folds
    from bst_rt.train.run import load_run, write_oof

    run = load_run(trained_run.run)
    dev = load_arrays(trained_run.data)
    family = "baseline"
    shutil.copytree(run.family_dir(family), tmp_path / "families" / family)
    rebuilt = write_oof(tmp_path, family, official_folds(dev.labels), dev)
    stored = run.oof(family)
    assert set(rebuilt) == set(stored)
    for key in stored:
        np.testing.assert_array_equal(np.asarray(rebuilt[key]), stored[key], err_msg=key)
    with np.load(tmp_path / "families" / family / "oof.npz") as z:  # and what it returned is what it wrote
        np.testing.assert_array_equal(z["probs"], rebuilt["probs"])


def test_normalise_weights_rescales_positive_weights_and_refuses_none():
    # rounded stored weights 0.33/0.33/0.33 and a zero: the zero is dropped, the rest sum to one, by family name
    out = normalise_weights({"b": 0.33, "a": 0.33, "c": 0.33, "z": 0.0}, "pool 'x'")
    assert list(out) == ["a", "b", "c"]
    assert out == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=1e-12)
    with pytest.raises(BstError, match="pool 'x' has no positive weights"):
        normalise_weights({"a": 0.0, "b": -1.0}, "pool 'x'")


def test_weighted_sum_is_eq2():
    a = np.array([[1.0, 0.0], [0.5, 0.5]])
    b = np.array([[0.0, 1.0], [0.25, 0.75]])
    got = weighted_sum({"a": a, "b": b}, {"a": 0.25, "b": 0.75})
    np.testing.assert_allclose(got, [[0.25, 0.75], [0.3125, 0.6875]], rtol=0, atol=1e-15)
    assert got.dtype == np.float64
