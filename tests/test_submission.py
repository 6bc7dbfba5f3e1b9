"""Submission CSV writer/validator and the meta.yaml writer."""
from __future__ import annotations

import math
import re
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bst_rt.runtime.errors import SubmissionError
from bst_rt.runtime.metrics import evaluate_predictions
from bst_rt.runtime.submission import (
    SUBMISSION_COLUMNS,
    collect_submission_errors,
    read_submission,
    validate_submission,
    write_submission,
)
from bst_rt.runtime.meta_yaml import results_section, write_meta_yaml
from bst_rt.runtime.taxonomy import CODES
from bst_rt.runtime.yaml_out import dump_yaml

IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"clip{i}")) for i in range(4)]
HEADER = ",".join(SUBMISSION_COLUMNS)


def good_lines() -> list[str]:
    return [f"{i},{CODES[n]},0.{n + 1}" for n, i in enumerate(IDS)]


def write_lines(path: Path, lines: list[str], *, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_written_submission_reads_back_and_validates(tmp_path: Path) -> None:
    rows = [(i, CODES[n * 5], s) for n, (i, s) in enumerate(zip(IDS, (0.0, 1.0, 0.25, 1 / 3)))]
    path = tmp_path / "Doe_Inst_task1_1.output.csv"
    assert write_submission(path, rows) == 4
    assert path.read_text().splitlines()[0] == HEADER
    back = read_submission(path)
    assert [(i, c) for i, c, _ in back] == [(i, c) for i, c, _ in rows]
    assert [s for *_, s in back] == pytest.approx([s for *_, s in rows], abs=1e-6)
    validate_submission(path, IDS)
    assert collect_submission_errors(path, IDS) == []


@pytest.mark.parametrize(("code", "score", "message"),
                         [("fx-q", 0.5, "unknown class 'fx-q'"), ("fx-a", 1.01, "outside"), ("fx-a", math.nan, "NaN")])
def test_writer_refuses_bad_rows_and_writes_nothing(tmp_path: Path, code: str, score: float, message: str) -> None:
    path = tmp_path / "sub.csv"
    with pytest.raises(SubmissionError, match=f"row 2 .*{message}"):
        write_submission(path, [(IDS[0], "fx-a", 0.5), (IDS[1], code, score)])
    assert not path.exists()


def _replace(n: int, line: str) -> list[str]:
    lines = good_lines()
    lines[n] = line
    return lines


BAD_CASES = {
    "wrong header": (good_lines(), "id,class,score", r"row 0 \(header\): wrong header"),
    "column count": (_replace(1, f"{IDS[1]},fx-a"), None, r"row 2: 2 columns, expected 3"),
    "unknown code": (_replace(2, f"{IDS[2]},fx-d,0.5"), None, r"row 3: unknown class 'fx-d'"),
    "score not a number": (_replace(0, f"{IDS[0]},fx-a,high"), None, r"row 1: prediction_score 'high' is not a number"),
    "score above one": (_replace(0, f"{IDS[0]},fx-a,1.5"), None, r"row 1: prediction_score '1.5' is outside \[0, 1\]"),
    "score below zero": (_replace(0, f"{IDS[0]},fx-a,-0.1"), None, r"row 1: prediction_score '-0.1' is outside"),
    "score NaN": (_replace(3, f"{IDS[3]},fx-a,nan"), None, r"row 4: prediction_score 'nan' is NaN"),
    "duplicate id": (_replace(3, f"{IDS[0]},fx-a,0.5"), None, r"row 4: duplicate id .* \(first at row 1\)"),
    "missing id": (good_lines()[:3], None, rf"1 evaluation id\(s\) missing from the submission \(first: {IDS[3]}\)"),
    "id not in package": (good_lines() + ["extra-clip,fx-a,0.5"], None, r"row 5: id 'extra-clip' is not in the evaluation"),
    "truncated uuid": (_replace(2, f"{IDS[2][:8]},fx-a,0.5"), None,
                       rf"row 3: id '{IDS[2][:8]}' is a truncated UUID: 8 characters, expected 36 \(prefix of {IDS[2]}\)"),
    "empty id": (_replace(1, ",fx-a,0.5"), None, r"row 2: empty id"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_validator_names_each_kind_of_bad_submission(tmp_path: Path, case: str) -> None:
    lines, header, message = BAD_CASES[case]
    path = write_lines(tmp_path / "sub.csv", lines, header=header or HEADER)
    problems = collect_submission_errors(path, IDS)
    assert any(re.search(message, p) for p in problems), problems
    assert all(p.startswith(str(path)) for p in problems)
    with pytest.raises(SubmissionError) as info:
        validate_submission(path, IDS)
    assert str(info.value).startswith(problems[0])


def test_every_problem_is_collected_not_just_the_first(tmp_path: Path) -> None:
    lines = [f"{IDS[0]},fx-zz,2", f"{IDS[0]},fx-a,0.5", f"{IDS[1]},fx-a"]
    problems = collect_submission_errors(write_lines(tmp_path / "s.csv", lines), IDS)
    # unknown code + score outside (row 1), duplicate (row 2), column count (row 3), 2 ids missing
    assert len(problems) == 5
    with pytest.raises(SubmissionError, match=r"and 4 more problem"):
        validate_submission(tmp_path / "s.csv", IDS)


def test_unreadable_files_are_problems_not_crashes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty file" in collect_submission_errors(empty)[0]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"{HEADER}\n{IDS[0]},fx-a,0.5\ncaf\xe9,fx-a,0.5\n".encode("latin-1"))
    assert collect_submission_errors(latin) == [f"{latin}: row 2 (line 3): not valid UTF-8 (byte 0xe9)"]
    assert "cannot read" in collect_submission_errors(tmp_path / "absent.csv")[0]
    with pytest.raises(SubmissionError, match="empty file"):
        read_submission(empty)


def test_without_package_ids_only_the_file_itself_is_checked(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.csv", good_lines()[:2] + ["short-id,fx-a,0.5"])
    assert collect_submission_errors(path) == []
    assert len(collect_submission_errors(path, IDS)) == 2  # short-id not in package, two package ids missing


AUTHORS = [{"lastname": "Doe", "firstname": "Jane", "email": "jane@example.org", "affiliation": {"institute": "Uni"}}]


def test_meta_yaml_has_the_three_sections_and_parses_back(tmp_path: Path) -> None:
    metrics = evaluate_predictions(["fx-a", "fx-a", "fx-v", "m-sp"], ["fx-a", "fx-v", "fx-v", "is-p"])
    results = results_section(metrics)
    system = {"description": {"input_sampling_rate": 48, "audio_representation": "LAION-CLAP",
                              "external_data": ["630k-audioset-fusion-best.pt"], "total_parameters": 7_300_000}}
    path = tmp_path / "Doe_Uni_task1_1.meta.yaml"
    write_meta_yaml(path, label="Doe_Uni_task1_1", name="Ranker: yes", abbreviation="no",
                    authors=AUTHORS, system=system, results=results)
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["submission", "system", "results"]
    assert doc["submission"] == {"label": "Doe_Uni_task1_1", "name": "Ranker: yes", "abbreviation": "no",
                                 "authors": AUTHORS}
    assert doc["system"] == system
    dev = doc["results"]["development_dataset"]
    assert dev["overall"]["hF"] == pytest.approx(metrics["hF"], abs=1e-6)
    assert dev["class_wise"]["fx-v"]["hP"] == pytest.approx(metrics["per_class"]["fx-v"]["hP"], abs=1e-6)
    assert dev["class_wise"]["m-sp"]["hP"] is None  # never predicted, dropped under the official convention


@pytest.mark.parametrize(("label", "authors", "message"), [
    ("Doe_task1_1", AUTHORS, "does not follow"),
    ("Doe_Uni_task1_5", AUTHORS, "does not follow"),
    ("Doe_Uni_task1_1\n", AUTHORS, "does not follow"),
    ("Doe_Uni_task1_1", [], "at least one author"),
    ("Doe_Uni_task1_1", [{"email": "x"}], "author 1 needs"),
])
def test_meta_yaml_refuses_bad_labels_and_authors(tmp_path: Path, label: str, authors, message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        write_meta_yaml(tmp_path / "m.yaml", label=label, name="n", abbreviation="a", authors=authors,
                        system={}, results={})
    assert not (tmp_path / "m.yaml").exists()


leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=False), st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
documents = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(keys, inner, max_size=4)), max_leaves=15)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(keys, documents, max_size=5))
def test_yaml_emitter_round_trips_through_a_real_yaml_parser(document: dict) -> None:
    assert yaml.safe_load(dump_yaml(document)) == (document or {})
