"""The numbers of `bst-rt evaluate`: one document per prediction CSV, and the comparison of several.

`--json` prints these documents and `--report DIR` draws its figures and tables from the very same dicts, so every
number the report shows is one the JSON holds (computed once, fed to both). One CSV's document is
`evaluate_predictions` (the official figures) plus what the pictures need: the 23x23 and 5x5 confusion counts,
cross-parent error per class and the macro/per-class figures under both conventions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import DataError
from .metrics import CONVENTIONS, confusion_matrix, evaluate_predictions, to_indices
from .submission import aligned_predictions
from .taxonomy import CODES, PARENT_INDEX, PARENTS

#: the Table-3 columns of the seed report, in its order
TABLE3_COLUMNS: tuple[str, ...] = ("hF", "accuracy", "parent_accuracy", "cross_parent_error")
#: class pairs listed per compared pair of systems (the rest is summed in `changed`'s totals)
MAX_LISTED_PAIRS = 20


def system_name(path: Path) -> str:
    """A CSV's name in tables: its file name without `.output.csv` / `.csv`."""
    name = Path(path).name
    for suffix in (".output.csv", ".csv"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def prediction_document(truth: Sequence[str], predicted: Sequence[str], *, convention: str = "drop") -> dict:
    """`evaluate_predictions` plus the confusion counts, cross-parent error per class and both conventions."""
    doc = evaluate_predictions(truth, predicted, convention=convention)
    t, p = to_indices(truth, what="labels"), to_indices(predicted, what="predictions")
    counts = confusion_matrix(t, p)
    parents = np.zeros((len(PARENTS), len(PARENTS)), dtype=np.int64)
    np.add.at(parents, (PARENT_INDEX[t], PARENT_INDEX[p]), 1)
    doc["confusion"] = counts.tolist()
    doc["parent_confusion"] = parents.tolist()
    support = counts.sum(axis=1)
    same_parent = PARENT_INDEX[:, None] == PARENT_INDEX[None, :]
    doc["cross_parent_error_by_class"] = {
        CODES[c]: float((counts[c] * ~same_parent[c]).sum() / support[c]) for c in np.flatnonzero(support)}
    doc["by_convention"] = {}
    for name in CONVENTIONS:
        m = doc if name == convention else evaluate_predictions(truth, predicted, convention=name)
        doc["by_convention"][name] = {
            "hP": m["hP"], "hR": m["hR"], "hF": m["hF"],
            "per_class": {code: {k: row[k] for k in ("hP", "hR", "hF")} for code, row in m["per_class"].items()}}
    return doc


def changed_items(names: Sequence[str], predictions: Sequence[Sequence[str]], truth: Sequence[str]) -> list[dict]:
    """For every pair of systems (a before b): the items whose label differs, by (a's label, b's label) pair, and
    how many of them b fixed (a wrong, b right) or broke (a right, b wrong)."""
    out = []
    truth_arr = np.asarray(truth, dtype=object)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = np.asarray(predictions[i], dtype=object), np.asarray(predictions[j], dtype=object)
            differ = a != b
            pairs: dict[tuple[str, str], dict] = {}
            for x, y, t in zip(a[differ], b[differ], truth_arr[differ]):
                row = pairs.setdefault((x, y), {"from": x, "to": y, "n": 0, "fixed": 0, "broken": 0})
                row["n"] += 1
                row["fixed"] += int(y == t)
                row["broken"] += int(x == t)
            listed = sorted(pairs.values(), key=lambda r: (-r["n"], r["from"], r["to"]))
            out.append({"a": names[i], "b": names[j], "n_changed": int(differ.sum()),
                        "fixed": int(((b == truth_arr) & differ).sum()),
                        "broken": int(((a == truth_arr) & differ).sum()),
                        "pairs": listed[:MAX_LISTED_PAIRS], "pairs_total": len(listed)})
    return out


def evaluation_documents(submissions: Sequence[Path], labels: Mapping[str, str], *, labels_path: Path | str = "",
                         convention: str = "drop") -> dict:
    """Every CSV's document in order, with a unique name each, and the pairwise changes between them."""
    if not submissions:
        raise DataError("no submission CSV to evaluate")
    names = _unique([system_name(p) for p in submissions])
    systems, predictions, truth = [], [], None
    for name, path in zip(names, submissions):
        _, truth, predicted = aligned_predictions(path, labels)
        systems.append({"name": name, "file": str(path), **prediction_document(truth, predicted,
                                                                              convention=convention)})
        predictions.append(predicted)
    return {"labels": str(labels_path), "convention": convention, "n": len(truth or []), "systems": systems,
            "changed": changed_items(names, predictions, truth or [])}


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 and names.count(n) == 1 else f"{n} ({seen[n]})")
    return out
