"""`bst-rt predict` end to end: torch-free subprocess, validated CSV, run record, fallbacks, resume, --force."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from bst_rt.runtime.predict_run import RunOptions, journal_path, record_path, run_predict
from bst_rt.runtime.cli import app
from bst_rt.runtime.datasets import read_eval_package
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.submission import read_submission, validate_submission

BLOCKED = ("torch", "torchaudio", "torchvision", "laion_clap", "sklearn", "skl2onnx", "onnx", "bst_rt.train", "bst_rt.export")

_CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = tuple(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name.startswith(tuple(b for b in BLOCKED if "." in b)):
                raise ImportError(f"{name} is blocked: bst-rt predict must not need it")
            return None

    sys.meta_path.insert(0, Blocker())
    from bst_rt.runtime.cli import app
    sys.argv = ["bst-rt"] + sys.argv[2:]
    app()
    """
)


@pytest.fixture(scope="module")
def torch_free_run(bundle, synth_corpus, tmp_path_factory):
    """One full run in a subprocess where the training stack cannot be imported; a training folder holding a copy
    of one evaluation clip is passed to --check-overlap."""
    import shutil

    base = tmp_path_factory.mktemp("predict")
    out = base / "Doe_Uni_task1_1.output.csv"
    package = read_eval_package(synth_corpus.eval)
    shared = next(c for c in package.clips if c.audio_path is not None and c.audio_path.stat().st_size > 0)
    (base / "train_set" / "audio").mkdir(parents=True)
    shutil.copy2(shared.audio_path, base / "train_set" / "audio" / "12345.wav")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(BLOCKED), "predict", str(synth_corpus.eval), "-o", str(out),
         "--bundle", str(bundle), "--system", "1", "--provider", "auto", "--threads", "2", "--meta-yaml",
         "--author", "Jane Doe <jane@uni.org>", "--institution", "Uni",
         "--check-overlap", str(base / "train_set")],
        capture_output=True, text=True, timeout=600,
    )
    return proc, out, shared.id


def test_predict_runs_with_torch_sklearn_laion_and_onnx_unimportable(torch_free_run, synth_corpus):
    proc, out, _ = torch_free_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    package = read_eval_package(synth_corpus.eval)
    validate_submission(out, package.ids)
    rows = read_submission(out)
    assert [r[0] for r in rows] == package.ids, "one row per clip, in package order"
    assert "wrote" in proc.stdout and "provider cpu" in proc.stdout and "fallbacks" in proc.stdout
    assert "RANDOM weights" in proc.stdout
    meta = yaml.safe_load(out.with_name("Doe_Uni_task1_1.meta.yaml").read_text(encoding="utf-8"))
    assert meta["submission"]["label"] == "Doe_Uni_task1_1"
    assert meta["submission"]["authors"][0]["affiliation"] == {"institution": "Uni"}
    assert meta["system"]["complexity"]["total_parameters"] > 0


def test_run_record_traces_the_submission(torch_free_run, bundle, synth_corpus):
    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.hashing import file_sha256

    _, out, _ = torch_free_run
    record = json.loads(record_path(out).read_text())
    package = read_eval_package(synth_corpus.eval)
    assert record["bundle_id"] == load_bundle(bundle).manifest.bundle_id
    assert record["system"] == 1 and record["provider"] == "cpu" and record["precision"] == "fp32"
    assert record["metadata_sha256"] == file_sha256(package.metadata_path)
    assert record["rows"] == len(package.clips) and sum(record["class_counts"].values()) == len(package.clips)
    assert "onnxruntime" in record["package_versions"] and "torch" not in record["package_versions"]
    zero = [c.id for c in package.clips if c.audio_path is not None and c.audio_path.stat().st_size == 0]
    assert zero, "the synthetic package has a zero-byte WAV"
    by_id = {f["id"]: f["reason"] for f in record["fallback_items"]}
    assert all(by_id[i] == "zero-byte audio" for i in zero)
    assert record["fallbacks"]["zero-byte audio"] == len(zero)
    assert not journal_path(out).exists(), "the journal is removed once the CSV is written"


def test_existing_output_is_never_overwritten_without_force(torch_free_run, bundle, synth_corpus):
    _, out, _ = torch_free_run
    before = out.read_bytes()
    result = CliRunner().invoke(app, ["predict", str(synth_corpus.eval), "-o", str(out), "--bundle", str(bundle)])
    assert result.exit_code == 1 and "pass --force" in result.output
    assert out.read_bytes() == before


def test_resume_continues_a_killed_run_and_gives_the_same_csv(bundle, synth_corpus, tmp_path):
    """Kill after the second batch (the progress callback raises), then --resume: same rows as an unbroken run.
    A 12-clip metadata file of the package keeps this quick."""
    package = read_eval_package(synth_corpus.eval)
    with open(package.metadata_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    subset = tmp_path / "subset.csv"
    with open(subset, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows[:13])
    calls = []

    def killer(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.csv"
    opts = RunOptions(eval_dir=synth_corpus.eval, out=out, bundle=bundle, system=1, provider="cpu", batch_size=4, metadata=subset)
    with pytest.raises(KeyboardInterrupt):
        run_predict(opts, killer)
    assert not out.exists() and journal_path(out).is_file()
    with pytest.raises(BstError, match="--resume"):
        run_predict(opts)
    opts.resume = True
    result = run_predict(opts)
    assert result.record["resumed_items"] == 8 and result.record["rows"] == 12
    unbroken = RunOptions(eval_dir=synth_corpus.eval, out=tmp_path / "unbroken.csv", bundle=bundle, system=1, provider="cpu",
                          batch_size=5, metadata=subset)
    run_predict(unbroken)
    assert read_submission(out) == read_submission(unbroken.out)


def test_bad_arguments_fail_with_one_line(bundle, synth_corpus, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(synth_corpus.eval), "-o", str(tmp_path / "x.csv"), "--bundle",
                            str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such bundle folder" in r.output
    r = runner.invoke(app, ["predict", str(tmp_path), "-o", str(tmp_path / "x.csv"), "--bundle", str(bundle)])
    assert r.exit_code == 1 and "metadata CSV" in r.output


def test_check_overlap_reports_shared_audio(torch_free_run):
    _, out, shared_id = torch_free_run
    record = json.loads(record_path(out).read_text())
    assert record["overlap"]["clips"] == [{"id": shared_id, "matches": "audio/12345.wav"}]


def test_progress_goes_to_stderr_and_counts_every_clip(torch_free_run, synth_corpus):
    proc, _, _ = torch_free_run
    n = len(read_eval_package(synth_corpus.eval).ids)
    assert "predicting" in proc.stderr and f"{n}/{n}" in proc.stderr, proc.stderr[-2000:]
    assert "predicting" not in proc.stdout and "/?" not in proc.stderr


def test_a_refused_bundle_leaves_one_error_line_and_no_stale_progress(tmp_path):
    from typer.testing import CliRunner

    from bst_rt.runtime.cli import app

    (tmp_path / "eval" / "audio").mkdir(parents=True)
    (tmp_path / "eval" / "metadata.csv").write_text("anonymous_id,title,tags,description\na1,x,y,z\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "eval"), "--bundle", str(tmp_path / "no-bundle"),
                                      "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert [ln for ln in result.output.splitlines() if ln.strip()] == [ln for ln in result.stderr.splitlines()
                                                                       if ln.strip()]
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1 and "no-bundle" in result.stderr
    assert "0/?" not in result.output and "predicting" not in result.output
