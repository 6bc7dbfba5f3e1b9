"""Packaging and process hygiene (issue 12): declared dependencies, one onnxruntime wheel, CUDA library preload,
no process-wide csv setting at import, folder fsync after atomic renames, --version / -h, the LICENSE."""
from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> dict[str, str]:
    """name -> full requirement string (the name is what precedes the first version operator or bracket)."""
    import re

    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower(): r for r in requirements}


def test_base_names_neither_onnxruntime_wheel_and_extras_name_exactly_one() -> None:
    project = _pyproject()["project"]
    base = _names(project["dependencies"])
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    assert "onnxruntime" not in base and "onnxruntime-gpu" not in base
    assert set(extras["cpu"]) & {"onnxruntime", "onnxruntime-gpu"} == {"onnxruntime"}
    assert set(extras["gpu"]) & {"onnxruntime", "onnxruntime-gpu"} == {"onnxruntime-gpu"}
    for extra in ("cpu", "gpu"):  # onnxruntime < 1.19 was built against numpy 1 only
        floor = next(r for n, r in extras[extra].items() if n.startswith("onnxruntime"))
        assert ">=1.19" in floor.replace(" ", ""), floor


def test_numpy_pin_is_only_in_train_and_imports_are_declared() -> None:
    project = _pyproject()["project"]
    base = _names(project["dependencies"])
    assert "<2" not in base["numpy"], "the runtime must install with numpy 2"
    assert "<2" in _names(project["optional-dependencies"]["train"])["numpy"]
    assert {"rich", "pyyaml", "typer", "tokenizers", "soundfile", "soxr"} <= set(base)


def test_license_file_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150
    assert _pyproject()["project"]["license"] == {"text": "Apache-2.0"}


def test_no_onnxruntime_is_one_clear_error(monkeypatch) -> None:
    from bst_rt.runtime import session
    from bst_rt.runtime.errors import BstError

    session.import_onnxruntime.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    try:
        with pytest.raises(BstError, match=r"pip install 'bst-rt\[cpu\]'.*'bst-rt\[gpu\]'"):
            session.make_session(ROOT / "pyproject.toml", "cpu")
    finally:
        session.import_onnxruntime.cache_clear()


def test_both_wheels_installed_warns_at_cli_start(monkeypatch) -> None:
    from bst_rt.runtime import session
    from bst_rt.runtime.cli import app

    monkeypatch.setattr(session, "installed_ort_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    session.warn_if_both_ort_wheels.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="both onnxruntime and onnxruntime-gpu"):
            CliRunner().invoke(app, ["info", "/nonexistent-bundle"])
    finally:
        session.warn_if_both_ort_wheels.cache_clear()


class _FakeOrt:
    """Just enough of onnxruntime to see in which order make_session calls it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def get_available_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_all_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def preload_dlls(self):
        print("preload notes that must not reach stdout")
        self.calls.append("preload_dlls")

    def SessionOptions(self):  # noqa: N802 - onnxruntime's name
        opts = SimpleNamespace(config={})
        opts.add_session_config_entry = lambda key, value: opts.config.__setitem__(key, value)
        return opts

    def InferenceSession(self, path, sess_options, providers):  # noqa: N802
        # the worker threads must not spin: they took the cores the audio prefetch thread needs (session.py)
        assert sess_options.config.get("session.intra_op.allow_spinning") == "0"
        self.calls.append(f"session:{providers[0]}")
        return SimpleNamespace(get_providers=lambda: list(providers))


@pytest.mark.parametrize(("provider", "expected"), [
    ("cuda", ["preload_dlls", "session:CUDAExecutionProvider"]),
    ("auto", ["preload_dlls", "session:CUDAExecutionProvider"]),
    ("cpu", ["session:CPUExecutionProvider"]),
])
def test_cuda_libraries_are_preloaded_before_a_cuda_session(monkeypatch, capsys, provider, expected) -> None:
    from bst_rt.runtime import session

    calls: list[str] = []
    monkeypatch.setattr(session, "import_onnxruntime", lambda: _FakeOrt(calls))
    session._preload_cuda_libraries.cache_clear()
    try:
        assert session.session_provider(session.make_session(ROOT / "pyproject.toml", provider)) == (
            "cpu" if provider == "cpu" else "cuda")
    finally:
        session._preload_cuda_libraries.cache_clear()
    assert calls == expected
    out = capsys.readouterr()
    assert "preload notes" not in out.out and ("preload notes" in out.err) == (provider != "cpu")


def test_importing_the_runtime_leaves_csv_field_limit_alone(tmp_path: Path) -> None:
    code = ("import csv; before = csv.field_size_limit(); import bst_rt.runtime, bst_rt.runtime.csvfile, "
            "bst_rt.runtime.datasets, bst_rt.runtime.submission; print(before, csv.field_size_limit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == out[1] == str(128 * 1024)


def test_long_fields_are_read_and_the_host_limit_is_restored(tmp_path: Path) -> None:
    from bst_rt.runtime.csvfile import read_csv

    path = tmp_path / "meta.csv"
    long_text = "word " * 60_000  # 300 kB, over csv's default 128 KiB field limit
    path.write_text(f'id,description\nabc,"{long_text}"\n', encoding="utf-8")
    before = csv.field_size_limit()
    _, rows = read_csv(path)
    assert rows[0].values["description"] == long_text
    assert csv.field_size_limit() == before


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    from bst_rt.runtime import atomic

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.atomic_write_text(tmp_path / "out.csv", "a,b\n")
    assert events == ["fsync-file", "rename", "fsync-dir"]
    assert (tmp_path / "out.csv").read_text() == "a,b\n"


@pytest.mark.parametrize("module", ["bst_rt.runtime.cli", "bst_rt.export.cli"])
def test_both_clis_have_version_and_short_help(module: str) -> None:
    import importlib
    from importlib import metadata

    app = importlib.import_module(module).app
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0, version.output
    assert metadata.version("bst-rt") in version.output
    short = CliRunner().invoke(app, ["-h"])
    assert short.exit_code == 0 and "Usage" in short.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert CliRunner().invoke(app, ["--help"]).output == short.output


@pytest.mark.parametrize("args", [["--engine", "tensorflow"], ["--provider", "gpu"]])
def test_bst_embed_refuses_unknown_engine_or_provider_with_exit_2(tmp_path: Path, args: list[str]) -> None:
    from bst_rt.export.cli import app

    result = CliRunner().invoke(app, ["embed", str(tmp_path), "--random-weights", *args])
    assert result.exit_code == 2
    assert "Invalid value" in result.output and args[0] in result.output


def test_bst_provider_default_matches_bst_rt() -> None:
    import inspect

    from bst_rt.runtime import cli as rt_cli
    from bst_rt.export import cli as bst_train_cli

    rt_default = inspect.signature(rt_cli.predict).parameters["provider"].default
    train_default = inspect.signature(bst_train_cli.embed_cmd).parameters["provider"].default
    assert train_default.value == rt_default.value == "auto"


def test_bst_rank_takes_top_k_not_k(tmp_path: Path) -> None:
    from bst_rt.export.cli import app

    help_text = CliRunner().invoke(app, ["rank", "-h"], terminal_width=200).output
    assert "--top-k" in help_text
    old = CliRunner().invoke(app, ["rank", str(tmp_path), str(tmp_path), "--k", "3"])
    assert old.exit_code == 2 and "No such option" in old.output


def test_readme_class_table_is_the_taxonomy() -> None:
    import re

    from bst_rt.runtime.taxonomy import CLASSES, PARENT_NAMES, class_table_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- classes:begin -->\n(.*?)<!-- classes:end -->", readme, re.S)
    assert block, "README lacks the generated class table"
    assert block.group(1) == class_table_markdown(), "regenerate it: python -m bst_rt.runtime.taxonomy"
    rows = [line.split("|")[1:-1] for line in block.group(1).splitlines()[2:]]
    assert [(r[1].strip(" `"), r[2].strip()) for r in rows] == [(c.code, c.name) for c in CLASSES]
    assert all(PARENT_NAMES[c.parent] in r[3] for c, r in zip(CLASSES, rows)) and len(rows) == 23


def test_docs_name_the_real_inputs_and_the_citation() -> None:
    inputs = (ROOT / "docs" / "inputs.md").read_text(encoding="utf-8")
    for needle in ("630k-audioset-fusion-best.pt", "vocab.json", "merges.txt", "BSD10k", "BSD35k-CS",
                   "10.5281/zenodo.17233904", "10.5281/zenodo.19187100", "Zhang", "@techreport"):
        assert needle in inputs, needle
    shared = ROOT.parent / "shared" / "reference" / "roberta-base"
    if not shared.is_dir():
        shared = Path("/work/shared/reference/roberta-base")
    if shared.is_dir():  # the checksums the docs state are those of the real files
        from bst_rt.runtime.hashing import file_sha256

        for name in ("vocab.json", "merges.txt"):
            assert file_sha256(shared / name) in inputs, name
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert all(h in trouble for h in ("GPU is not used", "numpy pins", "Offline use"))
