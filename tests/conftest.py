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
    """`bst.train.synth.CorpusPaths` of a 12-per-class corpus with stand-in embeddings (seed 0, CS noise 0.3,
    40 eval clips): `.root`, `.dev`, `.cs`, `.eval`, `.eval_labels`, `.cs_true_labels`; it also acts as the root
    path (`os.fspath`, `synth_corpus / "BSD10k"`)."""
    from bst.train.synth import write_corpus

    return write_corpus(tmp_path_factory.mktemp("synth") / "corpus", per_class=12, seed=0, with_features=True)


# --- CLAP (issue 3): full-size fusion model at seeded random weights, and its exported graphs, built once ----------
@pytest.fixture(scope="session")
def clap_reference():
    """laion-clap `CLAP_Module(enable_fusion=True)`, offline, random weights at seed 0 (BN statistics too)."""
    import warnings

    from bst.train.clap import load_clap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the loud random-weights warning, expected here
        return load_clap(None, random_weights=True, seed=0)


@pytest.fixture(scope="session")
def clap_graphs(clap_reference, tmp_path_factory):
    """Dir with clap_audio.onnx, clap_text.onnx, their .int8.onnx, tokenizer.json and clap_parity.json."""
    from bst.export.clap import export_clap

    out = tmp_path_factory.mktemp("clap_graphs")
    export_clap(clap_reference, out)
    return out


# --- ranker and systems (issue 5): `bst rank` on a copy of the trained pool, once --------------------------------
@pytest.fixture(scope="session")
def ranked_run(trained_run, synth_corpus, tmp_path_factory):
    """A run folder after `bst rank RUN DATA`: RUN/ranker/{ranker.joblib,ranker.json} and RUN/systems.json.

    Returns an object with `.run` (the run folder), `.data` (its dev set), `.meta` (ranker.json) and `.stdout`.
    The trained pool is not modified: registry/ensemble files are copied and `families/` is linked."""
    import json
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from bst.train.cli import app

    src = Path(getattr(trained_run, "run", getattr(trained_run, "path", trained_run)))
    data = Path(getattr(synth_corpus, "dev"))
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


# --- bundle (issue 6): `bst export` of the ranked run with the session's CLAP graphs, built once ------------------
@pytest.fixture(scope="session")
def bundle(ranked_run, clap_graphs, synth_corpus, tmp_path_factory):
    """A verified bundle folder (fp32 + int8 CLAP graphs). When $BST_CI_ARTIFACTS is set it is also left there,
    with the synthetic evaluation package and its labels, for CI's bare-runtime `bst-rt predict` check."""
    import shutil
    from pathlib import Path

    from bst.export.bundle import ExportOptions, export_bundle

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
