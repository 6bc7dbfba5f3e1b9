"""`bst-rt validate` and `bst-rt evaluate` through typer's CliRunner: exit codes, messages, JSON output."""
from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bst_rt.runtime.cli import app
from bst_rt.runtime.metrics import evaluate_predictions
from bst_rt.runtime.submission import write_submission

IDS = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"eval{i}")) for i in range(5)]
TRUTH = ["fx-a", "fx-a", "fx-v", "m-sp", "is-p"]
PRED = ["fx-a", "fx-v", "fx-v", "is-p", "is-p"]

runner = CliRunner()


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "eval"
    _csv(root / "metadata" / "eval_metadata.csv", ["anonymous_id", "title", "tags", "description"],
         [[i, f"clip {n}", "a,b", ""] for n, i in enumerate(IDS)])
    (root / "audio").mkdir()
    return root


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    path = tmp_path / "Doe_Uni_task1_1.output.csv"
    write_submission(path, [(i, code, 0.5) for i, code in zip(IDS, PRED)])
    return path


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    return _csv(tmp_path / "labels.csv", ["anonymous_id", "class"], [[i, c] for i, c in zip(IDS, TRUTH)])


def test_validate_accepts_a_complete_submission(package: Path, submission: Path) -> None:
    result = runner.invoke(app, ["validate", str(submission), "--eval-dir", str(package)])
    assert result.exit_code == 0, result.output
    assert "valid (5 evaluation ids" in result.stdout


def test_validate_lists_every_problem_and_fails(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,predicted_bst_second_level_class,prediction_score\n"
                   f"{IDS[0]},fx-a,0.5\n{IDS[1][:13]},fx-a,0.5\n{IDS[2]},fx-nope,7\n", encoding="utf-8")
    result = runner.invoke(app, ["validate", str(bad), "--eval-dir", str(package)])
    assert result.exit_code == 1
    err = result.stderr
    assert f"row 2: id '{IDS[1][:13]}' is a truncated UUID" in err
    assert "row 3: unknown class 'fx-nope'" in err and "row 3: prediction_score '7' is outside [0, 1]" in err
    assert "evaluation id(s) missing from the submission" in err
    assert "INVALID (4 problem(s))" in err  # code, score, truncated id, missing ids
    assert "Traceback" not in result.output


def test_validate_with_explicit_metadata_and_a_package_it_cannot_read(package: Path, submission: Path,
                                                                        tmp_path: Path) -> None:
    meta = package / "metadata" / "eval_metadata.csv"
    ok = runner.invoke(app, ["validate", str(submission), "--eval-dir", str(package), "--metadata", str(meta)])
    assert ok.exit_code == 0, ok.output
    empty = tmp_path / "empty_pkg"
    empty.mkdir()
    result = runner.invoke(app, ["validate", str(submission), "--eval-dir", str(empty)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "no metadata CSV" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_json_is_the_library_metric(submission: Path, labels: Path) -> None:
    for convention in ("drop", "zero"):
        result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(labels), "--json",
                                     "--convention", convention])
        assert result.exit_code == 0, result.output
        got = json.loads(result.stdout)
        library = evaluate_predictions(TRUTH, PRED, convention=convention)
        assert {k: got[k] for k in library} == library  # plus the report's fields (tests/test_report.py)
        for key in ("hP", "hR", "hF", "accuracy", "parent_accuracy", "macro_accuracy", "hierarchical_accuracy",
                    "cross_parent_error"):
            assert 0.0 <= got[key] <= 1.0
    assert got["convention"] == "zero" and "m-sp" in got["per_class"]


def test_evaluate_prints_tables(submission: Path, labels: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    expected_hf = f"{100 * evaluate_predictions(TRUTH, PRED)['hF']:.2f}"
    assert "hF" in result.stdout and expected_hf in result.stdout and "per class" in result.stdout
    assert "dropped from the means: m-sp" in result.stdout


def test_evaluate_errors_name_file_row_and_reason(submission: Path, labels: Path, tmp_path: Path) -> None:
    bad_labels = _csv(tmp_path / "bad_labels.csv", ["id", "class"], [[IDS[0], "fx-a"], [IDS[1], "zz-top"]])
    result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(bad_labels)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {bad_labels}: row 2 (line 3): unknown class 'zz-top' (not one of the 23 BST codes)"

    partial = _csv(tmp_path / "partial.csv", ["id", "class"], [[i, c] for i, c in zip(IDS[:3], TRUTH)])
    result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(partial)])
    assert result.exit_code == 1 and "2 id(s) are not in the labels file" in result.stderr

    short = tmp_path / "short.csv"
    write_submission(short, [(IDS[0], "fx-a", 1.0)])
    result = runner.invoke(app, ["evaluate", str(short), "--labels", str(labels)])
    assert result.exit_code == 1 and "4 labelled id(s) have no prediction" in result.stderr

    result = runner.invoke(app, ["evaluate", str(tmp_path / "absent.csv"), "--labels", str(labels)])
    assert result.exit_code == 1 and "absent.csv: cannot read" in result.stderr


def test_evaluate_rejects_an_unknown_convention(submission: Path, labels: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(labels), "--convention", "strict"])
    assert result.exit_code == 2 and "strict" in result.output


def test_evaluate_shows_class_names_beside_codes(submission: Path, labels: Path) -> None:
    from bst_rt.runtime.taxonomy import CLASSES

    result = runner.invoke(app, ["evaluate", str(submission), "--labels", str(labels)], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    for cls in CLASSES:
        if cls.code in rows:
            assert cls.name in rows[cls.code], rows[cls.code]
    assert {"fx-a", "fx-v"} <= set(rows)


def test_long_errors_keep_paths_whole_at_any_console_width(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*[f"a-rather-long-folder-name-{k}" for k in range(6)])
    result = runner.invoke(app, ["validate", str(deep / "sub.csv"), "--eval-dir", str(deep)], terminal_width=40)
    assert result.exit_code == 1
    assert any(str(deep) in line for line in result.stderr.splitlines()), result.stderr
    usage = runner.invoke(app, ["evaluate", str(deep / "sub.csv"), "--labels", str(deep / "l.csv"), "--convention",
                                "x" * 80], terminal_width=40)
    assert usage.exit_code == 2 and any("x" * 80 in line for line in usage.output.splitlines()), usage.output
