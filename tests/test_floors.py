"""Imports flow one way: export -> train -> runtime, and export -> synth -> runtime (the synthetic corpus sits beside
training, not in it: neither imports the other).

A source check (AST), like tests/test_torch_free.py's for the runtime: every `import`/`from` statement, at module
level or inside a function, absolute or relative, and importlib.import_module / __import__ calls with a literal
name. It walks the folders, so modules added later are covered without touching this file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bst_rt.synth
import bst_rt.train

#: floor -> the bst_rt packages its source must never import
FORBIDDEN = {
    "train": ("bst_rt.export", "bst_rt.synth"),
    "synth": ("bst_rt.train", "bst_rt.export"),
}
FLOOR_DIRS = {"train": Path(bst_rt.train.__path__[0]), "synth": Path(bst_rt.synth.__path__[0])}


def _imported_names(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one source file of `package` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = package.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            base = here[:len(here) - (node.level - 1)]
            if node.module:
                found.append((node.lineno, ".".join(base + [node.module])))
            else:  # `from .. import export`: each name may be a module
                found += [(node.lineno, ".".join(base + [alias.name])) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def _offenders(floor: str, root: Path) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*.py")):
        package = ".".join(["bst_rt", floor, *path.relative_to(root).parent.parts])
        for line, name in _imported_names(path, package):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[floor]):
                hits.append(f"{floor}/{path.relative_to(root)}:{line}: {name}")
    return hits


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_no_import_runs_back_up(floor: str) -> None:
    root = FLOOR_DIRS[floor]
    assert len(list(root.glob("*.py"))) >= 5, f"{root}: expected the {floor} sources here"
    hits = _offenders(floor, root)
    assert hits == [], f"bst_rt.{floor} must not import {', '.join(FORBIDDEN[floor])}:\n" + "\n".join(hits)


def test_the_floor_check_catches_each_form(tmp_path: Path) -> None:
    train = tmp_path / "train"
    (train / "sub").mkdir(parents=True)
    (train / "bad.py").write_text(
        "import numpy\nfrom . import pool\nfrom .embed import x\nimport bst_rt.export.clap as ec\n"
        "def f():\n    from bst_rt.export.bundle import export_bundle\n    from ..export import clap\n"
        "    from .. import export, runtime\n    import importlib\n    importlib.import_module('bst_rt.export.cli')\n"
        "from bst_rt.exporter import y\nfrom bst_rt.synth.corpus import write_corpus\n"  # `exporter`: allowed
    )
    (train / "sub" / "deep.py").write_text("from ...export import demo\nfrom .. import pool\n")
    hits = _offenders("train", train)
    assert [h.rsplit(":", 2)[1:] for h in hits] == [  # `from ..export import clap` imports from bst_rt.export
        ["4", " bst_rt.export.clap"], ["6", " bst_rt.export.bundle"], ["7", " bst_rt.export"], ["8", " bst_rt.export"],
        ["10", " bst_rt.export.cli"], ["12", " bst_rt.synth.corpus"], ["1", " bst_rt.export"]]
    assert hits[-1].startswith("train/sub/deep.py:1:")
    synth = tmp_path / "synth"
    synth.mkdir()
    (synth / "corpus.py").write_text("from bst_rt.runtime.taxonomy import CODES\nfrom ..train.pool import Arrays\n"
                                     "from . import dsp\n")
    assert [h.split(": ", 1)[1] for h in _offenders("synth", synth)] == ["bst_rt.train.pool"]
