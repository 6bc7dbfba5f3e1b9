"""`bst-rt evaluate --report` and `bst-train report --html`: valid files of the expected size, and every number on the
page equal to the JSON the same command (or the run folder) gives. No pixel is compared."""
from __future__ import annotations

import base64
import json
import random
import struct
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bst_rt.runtime.cli import app as rt_app
from bst_rt.runtime.metrics import evaluate_predictions
from bst_rt.runtime.taxonomy import CODES

pytest.importorskip("matplotlib")  # the [report] extra: README and CI install it
runner = CliRunner()
EVAL_FIGURES = ("confusion", "parent_confusion", "per_class", "cross_parent", "changed")
POOL_FIGURES = ("families", "pools", "calibration", "curves", "ranker")


class _Page(HTMLParser):
    """Cells with data-key, images, scripts and the text of every numeric-looking cell."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.scripts = 0
        self.bare_numbers: list[str] = []
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" or any(k.startswith("on") for k in a):
            self.scripts += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "td":
            self._cell = {"key": a.get("data-key"), "value": a.get("data-value"), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            c = self._cell
            if c["key"] is not None:
                self.cells.append((c["key"], c["value"], c["text"]))
            elif _looks_numeric(c["text"]):
                self.bare_numbers.append(c["text"])
            self._cell = None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _resolve(doc, key: str):
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_page(folder: Path, doc: dict, figures: tuple[str, ...]) -> _Page:
    """The report folder's files are valid and every cell's number is the document's."""
    page = _Page()
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page.feed(text)
    assert page.scripts == 0 and "http://" not in text and "https://" not in text  # self-contained
    assert len(page.images) == len(figures)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        w, h = _png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w >= 400 and h >= 250, (w, h)
    for stem in figures:
        w, h = _png_size((folder / f"{stem}.png").read_bytes())
        assert w >= 400 and h >= 250, (stem, w, h)
        root = ET.parse(folder / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) > 200
    assert page.cells and page.bare_numbers == []  # every number shown is tied to the JSON
    for key, value, shown in page.cells:
        expected = _resolve(doc, key)
        assert json.loads(value) == expected, key
        if expected is None:
            assert shown == "-"
        elif isinstance(expected, int):
            assert shown == str(expected), key
        else:
            assert float(shown) == pytest.approx(100 * expected, abs=0.006) or \
                float(shown) == pytest.approx(expected, abs=0.006), key
    return page


# ---------------------------------------------------------------- bst-rt evaluate --report


@pytest.fixture(scope="module")
def four_csvs(tmp_path_factory):
    """A labels file and four submissions of growing accuracy; a few classes are never predicted by system1."""
    root = tmp_path_factory.mktemp("eval_report")
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(160)]
    truth = [CODES[i % len(CODES)] for i in range(len(ids))]
    (root / "labels.csv").write_text("id,class\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, truth)))
    preds = {}
    for s in range(1, 5):
        pool = CODES[:-3] if s == 1 else CODES
        preds[s] = [c if rng.random() < 0.3 + 0.15 * s else rng.choice(pool) for c in truth]
        preds[s] = [p if s > 1 or p in pool else pool[0] for p in preds[s]]
        (root / f"system{s}.output.csv").write_text(
            "id,predicted_bst_second_level_class,prediction_score\n"
            + "".join(f"{i},{p},0.5\n" for i, p in zip(ids, preds[s])))
    return root, truth, preds


def test_evaluate_report_of_four_csvs_carries_the_json_numbers(four_csvs, tmp_path: Path) -> None:
    root, truth, preds = four_csvs
    csvs = [str(root / f"system{s}.output.csv") for s in range(1, 5)]
    labels = ["--labels", str(root / "labels.csv")]
    got = runner.invoke(rt_app, ["evaluate", *csvs, *labels, "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.stdout)
    result = runner.invoke(rt_app, ["evaluate", *csvs, *labels, "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == doc
    page = check_page(tmp_path / "rep", doc, EVAL_FIGURES)
    keys = {k for k, _, _ in page.cells}
    assert {"systems.3.hF", "systems.0.confusion.0.0", "changed.0.n_changed",
            "systems.0.by_convention.zero.per_class.m-sp.hF"} <= keys
    # the JSON's numbers, recomputed here from the CSVs themselves
    for s, system in enumerate(doc["systems"], start=1):
        assert system["name"] == f"system{s}"
        pairs = Counter(zip(truth, preds[s]))
        assert system["confusion"] == [[pairs[(t, p)] for p in CODES] for t in CODES]
        parents = Counter((t.split("-")[0], p.split("-")[0]) for t, p in zip(truth, preds[s]))
        order = ["m", "is", "sp", "fx", "ss"]
        assert system["parent_confusion"] == [[parents[(a, b)] for b in order] for a in order]
        for code, err in system["cross_parent_error_by_class"].items():
            rows = [p for t, p in zip(truth, preds[s]) if t == code]
            assert err == pytest.approx(sum(p.split("-")[0] != code.split("-")[0] for p in rows) / len(rows))
        assert system["by_convention"]["zero"]["hF"] == evaluate_predictions(truth, preds[s], convention="zero")["hF"]
    never = [c for c in CODES if c not in preds[1]]
    assert never and all(doc["systems"][0]["by_convention"]["drop"]["per_class"][c]["hF"] is None for c in never)
    assert all(doc["systems"][0]["by_convention"]["zero"]["per_class"][c]["hF"] == 0.0 for c in never)
    first = doc["changed"][0]
    assert (first["a"], first["b"]) == ("system1", "system2") and len(doc["changed"]) == 6
    assert first["n_changed"] == sum(a != b for a, b in zip(preds[1], preds[2]))
    assert first["fixed"] == sum(a != b and b == t for a, b, t in zip(preds[1], preds[2], truth))
    assert sum(p["n"] for p in first["pairs"]) <= first["n_changed"]


def test_evaluate_json_of_one_csv_is_the_library_metric_plus_the_report_fields(four_csvs) -> None:
    root, truth, preds = four_csvs
    got = runner.invoke(rt_app, ["evaluate", str(root / "system2.output.csv"), "--labels", str(root / "labels.csv"),
                                 "--json", "--convention", "zero"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.stdout)
    library = evaluate_predictions(truth, preds[2], convention="zero")
    assert {k: doc[k] for k in library} == library
    assert set(doc) - set(library) == {"confusion", "parent_confusion", "cross_parent_error_by_class", "by_convention"}


def test_evaluate_report_refuses_a_bad_csv_in_one_line_and_writes_nothing(four_csvs, tmp_path: Path) -> None:
    root, _, _ = four_csvs
    bad = tmp_path / "bad.csv"
    bad.write_text("id,predicted_bst_second_level_class,prediction_score\nx,zz,2\n")
    result = runner.invoke(rt_app, ["evaluate", str(root / "system1.output.csv"), str(bad), "--labels",
                                    str(root / "labels.csv"), "--report", str(tmp_path / "rep")])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "bad.csv" in result.output
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------- bst-train report --html


def test_pool_report_carries_the_run_folders_numbers(ranked_run, tmp_path: Path) -> None:
    from bst_rt.export.cli import app

    out = tmp_path / "pool"
    result = CliRunner().invoke(app, ["report", str(ranked_run.run), "--html", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    has_dev_eval = (ranked_run.run / "dev_eval.json").is_file()
    check_page(out, doc, POOL_FIGURES + (("dev_eval",) if has_dev_eval else ()))
    assert (doc["dev_eval"] is not None) == has_dev_eval
    # the document against the run's own files, read here
    registry = json.loads((ranked_run.run / "registry.json").read_text())
    ensembles = json.loads((ranked_run.run / "ensemble.json").read_text())["pools"]
    for name, e in registry["families"].items():
        assert doc["families"][name]["hF_mean"] == e.get("hF_mean")
        for k, s in e.get("folds", {}).items():
            assert doc["families"][name]["folds"][k]["val_hF"] == s["val_hF"]
            curve = s["val_accuracy_curve"]  # recorded during training: one value per epoch run
            assert len(curve) == s["epochs_run"] and curve[s["best_epoch"] - 1] == max(curve)
    for name, pool in ensembles.items():
        assert doc["pools"][name]["weights"] == pool["weights"] and doc["pools"][name]["hF_oof"] == pool["hF"]
    meta = ranked_run.meta
    for sid in ("1", "2"):
        r = doc["ranker"]["systems"][sid]
        assert r["heldout_override_rate"] == meta["thresholds"][sid]["override_share"]
        assert r["tau_per_fold"] == [f[f"system{sid}"]["tau"] for f in meta["nested_cv"]["per_fold"]]
        fixed = sum(p["fixed"] for p in meta["nested_cv"][f"system{sid}"]["changed_pairs"])
        assert fixed == meta["nested_cv"][f"system{sid}"]["fixed"] == r["fixed"]
    if has_dev_eval:
        dev_eval = json.loads((ranked_run.run / "dev_eval.json").read_text())
        for sid, row in dev_eval["systems"].items():
            assert doc["dev_eval"]["systems"][sid]["hF"] == row["hF"]


def test_readme_pictures_are_report_figures_the_script_copies() -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_figures", root / "bench" / "readme_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (root / "README.md").read_text(encoding="utf-8")
    made_by = {"report-eval": EVAL_FIGURES, "report-pool": POOL_FIGURES}
    for folder, name, target in script.COPIES:
        assert name.removesuffix(".png") in made_by[folder]
        assert f"](docs/img/{target})" in readme
        w, h = _png_size((root / "docs" / "img" / target).read_bytes())
        assert w >= 400 and h >= 250
