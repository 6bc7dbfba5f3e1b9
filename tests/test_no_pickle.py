"""The runtime never unpickles: a bundle or a dataset is data, never code.

A source scan of every runtime module (pickle/joblib/dill/marshal/shelve imports, torch.load, np.load without an
explicit allow_pickle=False, any allow_pickle=True, yaml.load), a check that the scan catches each form, and a
live check that a pickled .npy that would run code when loaded is refused and runs nothing.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.datasets import _load_vector
from bst_rt.runtime.errors import DataError

RUNTIME_DIR = Path(__file__).resolve().parents[1] / "runtime"
UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "torch",
                      "pandas"}
UNPICKLING_CALLS = {"read_pickle", "Unpickler", "unsafe_load", "full_load"}


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _unpickling_sites(path: Path) -> list[str]:
    """file:line: what, for every construct in `path` that can unpickle."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def hit(node: ast.AST, what: str) -> None:
        found.append(f"{path.name}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNPICKLING_MODULES:
                    hit(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in UNPICKLING_MODULES:
                hit(node, f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                hit(node, f"{name}(allow_pickle=<not False>)")
            if name == "load" and owner in {"np", "numpy"} and flag is None:
                hit(node, "np.load without allow_pickle=False")
            if name == "load" and owner == "yaml":
                hit(node, "yaml.load")
            if name in UNPICKLING_CALLS:
                hit(node, name)
            if name in {"load", "loads"} and owner in UNPICKLING_MODULES:
                hit(node, f"{owner}.{name}")
    return found


def test_no_runtime_source_can_unpickle() -> None:
    sources = sorted(RUNTIME_DIR.rglob("*.py"))
    assert len(sources) >= 10
    offenders = [h for path in sources for h in _unpickling_sites(path)]
    assert offenders == [], "the runtime must never unpickle:\n" + "\n".join(offenders)


def test_the_scan_catches_each_form(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom joblib import load\nimport numpy as np\nimport yaml\nimport torch\n"
        "np.load('a.npy')\nnp.load('b.npy', allow_pickle=True)\nnp.load('c.npy', allow_pickle=flag)\n"
        "np.load('ok.npy', allow_pickle=False)\nyaml.load(s)\npickle.loads(b)\ntorch.load('m.pt')\n"
        "pd.read_pickle('x')\nmarshal.loads(b)\n"
    )
    hits = [h.split(": ", 1)[1] for h in _unpickling_sites(bad)]
    assert hits == [
        "import pickle", "from joblib import ...", "import torch", "np.load without allow_pickle=False",
        "load(allow_pickle=<not False>)", "load(allow_pickle=<not False>)", "yaml.load", "pickle.loads",
        "torch.load", "read_pickle", "marshal.loads",
    ]


class _Payload:
    """Unpickling this creates `marker` (what a hostile .npy would do with os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_npy_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.npy"
    np.save(hostile, np.array([_Payload(marker)] * 512, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="hostile.npy"):
        _load_vector(hostile)
    assert not marker.exists()
    loaded = np.load(hostile, allow_pickle=True)  # with pickling allowed the payload does run: the test is real
    assert marker.exists()
    for handle in loaded:
        handle.close()
