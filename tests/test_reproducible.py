"""Same inputs and seeds give the same chain (issue 10): two runs of train (quick) → rank → export heads and ranker →
predict, each in its own process with another PYTHONHASHSEED (as two `bst-train demo` runs are), compared byte for byte:
every run file (checkpoints, OOF, registry, ensembles, ranker, systems, fold chains), both ONNX graphs and their
outputs, and the submission CSVs of the four systems.

The trained numbers depend on the torch thread count (measured: 1 and 2 threads give other weights; each count is
repeatable across processes), so `bst-train train` fixes it (default 1), records it and refuses a resume with another."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r"""
import sys
from pathlib import Path

import numpy as np
import torch

from bst_rt.export import heads as heads_module
from bst_rt.export.ranker import export_ranker
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.candidate_features import FEATURE_NAMES
from bst_rt.runtime.policy import AUDIO_ONLY, TEXT_ONLY
from bst_rt.runtime.session import make_session
from bst_rt.runtime.submission import write_submission
from bst_rt.runtime.taxonomy import CODES
from bst_rt.train.dev_eval import TorchChain, label_free
from bst_rt.train.members import QUICK_OVERRIDES
from bst_rt.train.pool import run_pool
from bst_rt.train.rank import rank_run
from bst_rt.train.run import load_run
from bst_rt.train.systems import RankOptions, load_ranker, load_systems

dev, cs, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(1)
run = out / "run"
run_pool(dev, cs, run, ["baseline"], seed=0, overrides={**QUICK_OVERRIDES, "epochs": 4, "patience": 2},
         log=lambda m: None)
rank_run(run, dev, RankOptions(), log=lambda m: None)
policies = load_systems(run)
layout = heads_module.make_layout({p.pool: p.weights for p in policies}, always=(TEXT_ONLY, AUDIO_ONLY))
heads_module.export_heads(heads_module.build_heads(load_run(run), layout), out / "heads.onnx")
model, meta = load_ranker(run)
export_ranker(model, len(FEATURE_NAMES), out / "ranker.onnx")
ds = read_dev_dataset(dev)
emb = {k: ds.load_embeddings(k, missing="zero") for k in ("audio", "text", "text_masked")}
heads = make_session(out / "heads.onnx", "cpu", 1)
feeds = {i.name: emb[{"audio_embedding": "audio", "text_embedding": "text"}.get(i.name, "text_masked")]
         for i in heads.get_inputs()}
outputs = dict(zip([o.name for o in heads.get_outputs()], heads.run(None, feeds)))
rows = np.random.default_rng(0).random((64, len(FEATURE_NAMES)), dtype=np.float32)
outputs["ranker"] = make_session(out / "ranker.onnx", "cpu", 1).run(None, {"candidate_features": rows})[1]
np.savez(out / "graph_outputs.npz", **outputs)
clips = label_free(ds).clips
for sid, o in TorchChain(run, dev).predict(clips).items():
    write_submission(out / f"system{sid}.output.csv",
                     [(c.id, CODES[int(l)], float(s)) for c, l, s in zip(clips, o.labels, o.scores)])
"""


def _run_twice(synth_corpus, tmp_path) -> list[Path]:
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for seed, out in zip(("1", "2"), outs):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, str(synth_corpus.dev), str(synth_corpus.cs),
                                       str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        log, _ = p.communicate(timeout=1200)
        assert p.returncode == 0, log[-3000:]
    return outs


def test_two_runs_of_a_small_chain_are_identical(synth_corpus, tmp_path):
    a, b = _run_twice(synth_corpus, tmp_path)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {p.relative_to(b) for p in b.rglob("*") if p.is_file()} == set(files)
    csvs = [f for f in files if f.suffix == ".csv"]
    assert len(csvs) == 4 and any(f.suffix == ".onnx" for f in files)
    assert any(f.name == "checkpoint.pt" for f in files) and any(f.parts[1] == "fold_chains" for f in files
                                                                   if len(f.parts) > 1)
    differing = [str(f) for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    print(f"\n{len(files)} files compared ({len(csvs)} CSVs), differing: {differing}")
    assert differing == []
    with np.load(a / "graph_outputs.npz") as za, np.load(b / "graph_outputs.npz") as zb:
        assert sorted(za.files) == ["family_probs", "pool_probs", "ranker"]
        for key in za.files:
            np.testing.assert_array_equal(za[key], zb[key])
    assert json.loads((a / "run" / "registry.json").read_text())["torch_threads"] == 1
    _resume_with_other_threads_is_refused(synth_corpus, a / "run")


def _resume_with_other_threads_is_refused(synth_corpus, run: Path) -> None:
    import torch
    from typer.testing import CliRunner

    from bst_rt.export.cli import app

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["train", str(synth_corpus.dev), "--cs", str(synth_corpus.cs), "--out", str(run),
                                          "--families", "baseline", "--quick", "--epochs", "4", "--patience", "2",
                                          "--threads", "2"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 1, result.output
    assert "--threads 1" in result.output and "Traceback" not in result.output
