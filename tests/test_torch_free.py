"""`bst_rt.runtime` works where torch and the other training packages cannot be imported.

Both checks walk the package, so modules added later are covered without touching this file.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import bst_rt.runtime

FORBIDDEN = ("torch", "torchaudio", "torchvision", "laion_clap", "sklearn", "skl2onnx", "onnx")
FORBIDDEN_OURS = ("bst_rt.train", "bst_rt.export", "bst_rt.synth")  # imports flow export -> train -> runtime, never back
#: optional extras: runtime modules may import them inside a function (runtime/distributed.py), never at import time
FORBIDDEN_AT_IMPORT = FORBIDDEN + ("ray", "matplotlib")
RUNTIME_DIR = Path(bst_rt.runtime.__path__[0])

_CHILD = textwrap.dedent(
    """
    import importlib, importlib.abc, json, pkgutil, runpy, sys, tempfile
    from pathlib import Path

    FORBIDDEN, OURS = set(sys.argv[1].split(",")), tuple(sys.argv[2].split(","))
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN or name.startswith(OURS):
                attempts.append(name)
                raise ImportError(f"{name} is blocked: bst_rt.runtime must not need it")
            return None

    sys.meta_path.insert(0, Blocker())
    import bst_rt.runtime
    modules = [m.name for m in pkgutil.walk_packages(bst_rt.runtime.__path__, "bst_rt.runtime.")]
    for name in modules:
        if name != "bst_rt.runtime.__main__":  # that one runs the app; it is exercised below
            importlib.import_module(name)

    from bst_rt.runtime.metrics import evaluate_predictions
    hf = evaluate_predictions(["fx-a", "fx-a", "m-sp"], ["fx-a", "fx-v", "m-sp"])["hF"]

    from typer.testing import CliRunner
    from bst_rt.runtime.cli import app
    runner = CliRunner()
    help_result = runner.invoke(app, ["--help"])
    tmp = Path(tempfile.mkdtemp())
    (tmp / "sub.csv").write_text("id,predicted_bst_second_level_class,prediction_score\\na,fx-a,1\\nb,fx-v,0.5\\n")
    (tmp / "labels.csv").write_text("id,class\\na,fx-a\\nb,fx-a\\n")
    evaluate_result = runner.invoke(app, ["evaluate", str(tmp / "sub.csv"), "--labels", str(tmp / "labels.csv"), "--json"])
    report_result = runner.invoke(app, ["evaluate", str(tmp / "sub.csv"), "--labels", str(tmp / "labels.csv"),
                                        "--report", str(tmp / "rep")])

    sys.argv = ["bst-rt", "--help"]
    try:
        runpy.run_module("bst_rt.runtime", run_name="__main__")
        main_code = 0
    except SystemExit as exc:
        main_code = exc.code or 0

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN or m.startswith(OURS))
    print(json.dumps({
        "modules": modules, "hf": hf, "help_code": help_result.exit_code, "help": help_result.output,
        "evaluate_code": evaluate_result.exit_code, "evaluate": evaluate_result.output,
        "report_code": report_result.exit_code, "report": report_result.output, "report_dir": (tmp / "rep").exists(),
        "main_code": main_code, "attempts": attempts, "loaded": loaded,
    }))
    """
)


def test_runtime_imports_and_runs_with_training_packages_blocked() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(FORBIDDEN_AT_IMPORT), ",".join(FORBIDDEN_OURS)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"torch-free: {len(report['modules'])} runtime modules imported; blocked attempts: {report['attempts']}")
    expected = {f"bst_rt.runtime.{p.stem}" for p in RUNTIME_DIR.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(report["modules"])
    assert report["loaded"] == []
    assert 0.0 < report["hf"] < 1.0
    assert report["help_code"] == 0 and "validate" in report["help"] and "evaluate" in report["help"]
    assert report["evaluate_code"] == 0 and json.loads(report["evaluate"])["n"] == 2
    assert report["main_code"] == 0
    # without the [report] extra (matplotlib blocked above), --report is one line naming the extra, nothing written
    assert report["report_code"] == 1 and not report["report_dir"], report["report"]
    assert len(report["report"].strip().splitlines()) == 1 and "bst-rt[report]" in report["report"]


def _forbidden_imports(path: Path) -> list[str]:
    """Every import of a forbidden package in one source file: import/from statements, relative imports that climb
    out of bst_rt.runtime, and importlib.import_module / __import__ calls with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    depth = len(path.relative_to(RUNTIME_DIR).parts)  # 1 for runtime/x.py: `from ..` leaves bst_rt.runtime
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level > depth:
                names = [f"bst_rt.{node.module or ''}"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN_OURS):
                found.append(f"{path.relative_to(RUNTIME_DIR.parent)}:{node.lineno}: {name}")
    return found


def test_no_runtime_source_imports_training_packages() -> None:
    sources = sorted(RUNTIME_DIR.rglob("*.py"))
    assert len(sources) >= 5
    offenders = [hit for path in sources for hit in _forbidden_imports(path)]
    assert offenders == [], "bst_rt.runtime must stay torch-free:\n" + "\n".join(offenders)


def test_the_source_check_catches_each_form(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "runtime"
    fake.mkdir()
    (fake / "bad.py").write_text(
        "import numpy, torch.nn as nn\nfrom sklearn.linear_model import LogisticRegression\n"
        "from ..train import families\nimport onnxruntime\nimport importlib\nimportlib.import_module('onnx')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "RUNTIME_DIR", fake)
    hits = _forbidden_imports(fake / "bad.py")
    assert [h.rsplit(": ", 1)[1] for h in hits] == ["torch.nn", "sklearn.linear_model", "bst_rt.train", "onnx"]
