"""Imports flow one way: export -> train -> runtime, and export -> synth -> runtime (the synthetic corpus sits beside
training, not in it: neither imports the other); and inside each floor no modules import each other in a circle.

A source check (AST), like tests/test_torch_free.py's for the runtime: every `import`/`from` statement, at module
level or inside a function, absolute or relative, and importlib.import_module / __import__ calls with a literal
name. It walks the folders, so modules added later are covered without touching this file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bst_rt.export
import bst_rt.runtime
import bst_rt.synth
import bst_rt.train

#: floor -> the bst_rt packages its source must never import
FORBIDDEN = {
    "train": ("bst_rt.export", "bst_rt.synth"),
    "synth": ("bst_rt.train", "bst_rt.export"),
}
FLOOR_DIRS = {"train": Path(bst_rt.train.__path__[0]), "synth": Path(bst_rt.synth.__path__[0])}


def _imported_names(path: Path, package: str, with_names: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one source file of `package` (relative ones resolved).
    `with_names`: also `module.name` for each name of a `from module import name` (the name may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = package.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
            else:
                base = here[:len(here) - (node.level - 1)]
                if not node.module:  # `from .. import export`: each name may be a module
                    found += [(node.lineno, ".".join(base + [alias.name])) for alias in node.names]
                    continue
                module = ".".join(base + [node.module])
            found.append((node.lineno, module))
            if with_names:
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
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


# ---------------------------------------------------------------- no circles inside a floor

ALL_FLOORS = {"runtime": Path(bst_rt.runtime.__path__[0]), "synth": FLOOR_DIRS["synth"],
              "train": FLOOR_DIRS["train"], "export": Path(bst_rt.export.__path__[0])}


def _import_graph(floor: str, root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same floor it imports (every form, function-level and TYPE_CHECKING included)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        modules[".".join(["bst_rt", floor, *parts])] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for _, m in _imported_names(path, package, with_names=True) if m in modules and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.mark.parametrize("floor", sorted(ALL_FLOORS))
def test_no_import_circle_inside_a_floor(floor: str) -> None:
    graph = _import_graph(floor, ALL_FLOORS[floor])
    assert len(graph) >= 5 and sum(map(len, graph.values())) >= 5, f"{floor}: expected its modules and imports"
    circles = _circles(graph)
    print(f"{floor}: {len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(circles)} circles")
    assert circles == [], f"bst_rt.{floor} has import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_catches_each_form(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    (train / "__init__.py").write_text("")
    (train / "a.py").write_text("from .b import x\n")
    (train / "b.py").write_text("def f():\n    from bst_rt.train import c\n")  # function level, absolute
    (train / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (train / "d.py").write_text("from .a import x\nfrom bst_rt.runtime import errors\n")  # into the circle: not in it
    (train / "e.py").write_text("import bst_rt.train.f\n")
    (train / "f.py").write_text("from bst_rt.train.e import y\n")
    assert _circles(_import_graph("train", train)) == [
        ["bst_rt.train.a", "bst_rt.train.b", "bst_rt.train.c"], ["bst_rt.train.e", "bst_rt.train.f"]]
