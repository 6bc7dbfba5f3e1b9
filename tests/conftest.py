"""Shared, session-scoped fixtures. Each part of the project adds its own here; keep them lazy and cached."""
from __future__ import annotations

import os

# laion-clap/transformers must never reach a hub, in tests or anywhere else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402,F401


# --- synthetic corpus (issue 2): BSD10k + BSD35k-CS (with stand-in features) + eval package, written once -----------
@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """`bst_rt.synth.corpus.CorpusPaths` of a 12-per-class corpus with stand-in embeddings (seed 0, CS noise 0.3,
    40 eval clips): `.root`, `.dev`, `.cs`, `.eval`, `.eval_labels`, `.cs_true_labels`; it also acts as the root
    path (`os.fspath`, `synth_corpus / "BSD10k"`)."""
    from bst_rt.synth.corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("synth") / "corpus", per_class=12, seed=0, with_features=True)


# --- CLAP (issue 3): full-size fusion model at seeded random weights, and its exported graphs, built once ----------
@pytest.fixture(scope="session")
def clap_reference():
    """laion-clap `CLAP_Module(enable_fusion=True)`, offline, random weights at seed 0 (BN statistics too)."""
    import warnings

    from bst_rt.train.clap import load_clap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the loud random-weights warning, expected here
        return load_clap(None, random_weights=True, seed=0)


@pytest.fixture(scope="session")
def clap_graphs(clap_reference, tmp_path_factory):
    """Dir with clap_audio.onnx, clap_text.onnx, their .int8.onnx, tokenizer.json and clap_parity.json."""
    from bst_rt.export.clap import export_clap

    out = tmp_path_factory.mktemp("clap_graphs")
    export_clap(clap_reference, out)
    return out


# --- ranker and systems (issue 5): `bst-train rank` on a copy of the trained pool, once --------------------------------
@pytest.fixture(scope="session")
def ranked_run(trained_run, synth_corpus, tmp_path_factory):
    """A run folder after `bst-train rank RUN DATA`: RUN/ranker/{ranker.joblib,ranker.json} and RUN/systems.json.

    Returns an object with `.run` (the run folder), `.data` (its dev set), `.meta` (ranker.json) and `.stdout`.
    The trained pool is not modified: registry/ensemble files are copied and `families/` is linked."""
    import json
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from bst_rt.export.cli import app

    src = Path(getattr(trained_run, "run", getattr(trained_run, "path", trained_run)))
    data = Path(getattr(trained_run, "data", synth_corpus.dev))
    run = tmp_path_factory.mktemp("ranked_run") / "run"
    run.mkdir()
    for item in src.iterdir():
        if item.name == "ranker":
            continue
        if item.is_dir():
            (run / item.name).symlink_to(item.resolve(), target_is_directory=True)
        elif item.name not in ("systems.json", "dev_eval.json"):
            shutil.copy2(item, run / item.name)
    result = CliRunner().invoke(app, ["rank", str(run), str(data)])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "ranker" / "ranker.json").read_text())
    return SimpleNamespace(run=run, data=data, meta=meta, stdout=result.output)


# --- bundle (issue 6): `bst-train export` of the ranked run with the session's CLAP graphs, built once ------------------
@pytest.fixture(scope="session")
def bundle(ranked_run, clap_graphs, synth_corpus, tmp_path_factory):
    """A verified bundle folder (fp32 + int8 CLAP graphs). When $BST_CI_ARTIFACTS is set it is also left there,
    with the synthetic evaluation package and its labels, for CI's bare-runtime `bst-rt predict` check."""
    import shutil
    from pathlib import Path

    from bst_rt.export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    export_bundle(ranked_run.run, out, ExportOptions(clap_dir=Path(clap_graphs), int8=True), log=lambda _: None)
    ci = os.environ.get("BST_CI_ARTIFACTS")
    if ci:
        dest = Path(ci)
        for name in ("bundle", "eval"):
            shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(out, dest / "bundle", copy_function=_link_or_copy)
        shutil.copytree(synth_corpus.eval, dest / "eval")
        shutil.copy2(synth_corpus.eval_labels, dest / "eval_labels.csv")
    return out


def _link_or_copy(src, dst):
    """Bundles hold a ~500 MB text graph: hard-link where the filesystem allows."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


# --- training pool (issue 4): every family, five folds, reduced sizes, trained once --------------------------------
def _write_external_layouts(root, cs_dir):
    """Tiny ESC-50 / UrbanSound8K / FSD50K folders in their standard layouts, with features borrowed from BSD35k-CS
    clips of the mapped class (so the external terms carry class signal) and a few labels that must be dropped."""
    import csv
    import shutil

    from bst_rt.runtime.datasets import read_dev_dataset

    cs = read_dev_dataset(cs_dir)
    by_code = {}
    for clip in cs.clips:
        by_code.setdefault(clip.label, []).append(clip.id)
    specs = {
        "esc50": ("meta/esc50.csv", ["filename", "fold", "target", "category"],
                  [("dog", "fx-a"), ("rain", "fx-n"), ("siren", "fx-v"), ("church_bells", None)], "{id}.wav"),
        "us8k": ("metadata/UrbanSound8K.csv", ["slice_file_name", "fsID", "fold", "classID", "class"],
                 [("dog_bark", "fx-a"), ("drilling", "fx-m"), ("children_playing", None)], "{id}.wav"),
        "fsd50k": ("FSD50K.ground_truth/dev.csv", ["fname", "labels", "mids", "split"],
                   [("Bark,Dog,Animal", "fx-a"), ("Guitar,Plucked_string_instrument,Music", "is-s"),
                    ("Water_tap_and_faucet,Water", None), ("Music", None)], "{id}"),
    }
    roots = {}
    for name, (meta, columns, labels, fname) in specs.items():
        base = root / name
        (base / meta).parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for label, code in labels:
            source = by_code.get(code or "fx-o", [])[:4]
            for sid in source:
                clip_id = f"{name}{sid}"
                for kind in ("audio", "text"):
                    dest = base / "features" / f"clap_{kind}_embeddings"
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(cs_dir / "features" / f"clap_{kind}_embeddings" / f"{sid}.npy", dest / f"{clip_id}.npy")
                row = {"filename": fname.format(id=clip_id), "slice_file_name": fname.format(id=clip_id),
                       "fname": clip_id, "category": label, "class": label, "labels": label,
                       "fold": 1, "target": 0, "fsID": 0, "classID": 0, "mids": "", "split": "train"}
                rows.append({c: row[c] for c in columns})
        with open(base / meta, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        roots[name] = base
    return roots


@pytest.fixture(scope="session")
def trained_run(synth_corpus, tmp_path_factory):
    """`bst-train train` of every family on the synthetic corpus (with its noisy CS set and tiny external sets) at
    `bst_rt.train.members.QUICK_OVERRIDES`. Returns `.run` (= `.path`, the run folder), `.data` (dev set), `.cs`,
    `.registry` (the `PoolResult`'s registry), `.log` (progress lines) and `.external` ({name: root})."""
    from pathlib import Path
    from types import SimpleNamespace

    import torch

    from bst_rt.train.members import QUICK_OVERRIDES
    from bst_rt.train.pool import run_pool

    base = tmp_path_factory.mktemp("trained_run")
    external = _write_external_layouts(base / "external", Path(synth_corpus.cs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread per process is several times faster here
    log: list[str] = []
    try:
        result = run_pool(Path(synth_corpus.dev), Path(synth_corpus.cs), base / "run", None, seed=0,
                       overrides=QUICK_OVERRIDES, external=external, log=log.append)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(run=base / "run", path=base / "run", data=Path(synth_corpus.dev),
                           cs=Path(synth_corpus.cs), registry=result.registry, log=log, external=external)


@pytest.fixture
def torch_one_thread():
    """Two shared CPU cores: one torch thread per process is several times faster than two here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
