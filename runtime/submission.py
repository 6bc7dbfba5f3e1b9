"""DCASE 2026 Task 1 submission CSV: write, read, validate and score it (the `meta.yaml` beside it: `meta_yaml.py`).

The CSV is `id,predicted_bst_second_level_class,prediction_score`: every evaluation id exactly once, in full (the
ids are 36-character UUIDs), one of the 23 codes, a score in [0, 1]. The validator reports every problem it finds,
each naming the file, the data row (1 = first row after the header) and the reason.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .atomic import atomic_write_text
from .csvfile import decode_csv, wide_fields
from .errors import DataError, SubmissionError
from .metrics import evaluate_predictions
from .taxonomy import CODE_TO_INDEX, CODES

SUBMISSION_COLUMNS: tuple[str, str, str] = ("id", "predicted_bst_second_level_class", "prediction_score")
UUID_LENGTH = 36
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UUID_PART = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]*)*$")
MAX_SYSTEMS = 4


def is_uuid(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


def _format_score(score: float) -> str:
    return f"{score:.6f}"


def write_submission(path: Path, rows: Iterable[tuple[str, str, float]]) -> int:
    """Write the submission CSV atomically; a bad code or score is a SubmissionError and nothing is written."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_COLUMNS)
    n = 0
    for n, (clip_id, code, score) in enumerate(rows, start=1):
        problem = _code_problem(code) or _score_problem(score)
        if problem:
            raise SubmissionError(f"{path}: row {n} (id {clip_id!r}): {problem}")
        writer.writerow((clip_id, code, _format_score(float(score))))
    atomic_write_text(path, buffer.getvalue())
    return n


def _code_problem(code: object) -> str | None:
    if code not in CODE_TO_INDEX:
        return f"unknown class {code!r} (not one of the 23 BST codes)"
    return None


def _score_problem(score: object) -> str | None:
    try:
        value = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"prediction_score {score!r} is not a number"
    if math.isnan(value):
        return f"prediction_score {score!r} is NaN"
    if not 0.0 <= value <= 1.0:
        return f"prediction_score {score!r} is outside [0, 1]"
    return None


def _parse(path: Path) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """(row number, cells) of the data rows and the problems found while reading the file itself."""
    try:
        text = decode_csv(Path(path))
    except DataError as exc:
        return [], [str(exc)]
    try:
        with wide_fields():
            records = [r for r in csv.reader(io.StringIO(text, newline="")) if r and r != [""]]
    except csv.Error as exc:
        return [], [f"{path}: malformed CSV ({exc})"]
    if not records:
        return [], [f"{path}: empty file, expected the header {','.join(SUBMISSION_COLUMNS)}"]
    problems = []
    header = [h.strip() for h in records[0]]
    if tuple(header) != SUBMISSION_COLUMNS:
        expected = ",".join(SUBMISSION_COLUMNS)
        problems.append(f"{path}: row 0 (header): wrong header {','.join(header)!r}, expected {expected!r}")
    return list(enumerate(records[1:], start=1)), problems


def collect_submission_errors(path: Path, eval_ids: Iterable[str] | None = None) -> list[str]:
    """Every problem of a submission file, one message each; empty when it is valid.

    With `eval_ids` (the package's ids) it also checks that each is present exactly once and nothing else is, and
    flags ids that are shortened UUIDs.
    """
    path = Path(path)
    rows, problems = _parse(path)
    seen: dict[str, int] = {}
    for n, cells in rows:
        where = f"{path}: row {n}"
        if len(cells) != len(SUBMISSION_COLUMNS):
            problems.append(f"{where}: {len(cells)} columns, expected {len(SUBMISSION_COLUMNS)}")
            continue
        clip_id, code, score = (c.strip() for c in cells)
        if not clip_id:
            problems.append(f"{where}: empty id")
            continue
        if clip_id in seen:
            problems.append(f"{where}: duplicate id {clip_id!r} (first at row {seen[clip_id]})")
        else:
            seen[clip_id] = n
        for problem in (_code_problem(code), _score_problem(score)):
            if problem:
                problems.append(f"{where}: {problem}")
    if eval_ids is not None:
        problems.extend(_coverage_problems(path, seen, list(eval_ids)))
    return problems


def _coverage_problems(path: Path, seen: dict[str, int], eval_ids: list[str]) -> list[str]:
    expected = set(eval_ids)
    uuids = bool(eval_ids) and all(is_uuid(i) for i in eval_ids)
    problems = []
    for clip_id, n in seen.items():
        if clip_id in expected:
            continue
        full = [i for i in eval_ids if i.startswith(clip_id)] if uuids else []
        if uuids and len(clip_id) < UUID_LENGTH and (full or _UUID_PART.fullmatch(clip_id)):
            hint = f" (prefix of {full[0]})" if len(full) == 1 else ""
            problems.append(
                f"{path}: row {n}: id {clip_id!r} is a truncated UUID: {len(clip_id)} characters, "
                f"expected {UUID_LENGTH}{hint}"
            )
        else:
            problems.append(f"{path}: row {n}: id {clip_id!r} is not in the evaluation package")
    absent = [i for i in eval_ids if i not in seen]
    if absent:
        problems.append(
            f"{path}: {len(absent)} evaluation id(s) missing from the submission (first: {', '.join(absent[:5])})"
        )
    return problems


def validate_submission(path: Path, eval_ids: Iterable[str] | None = None) -> None:
    """Raise SubmissionError naming the first problem (and how many more) when the file is not a valid submission."""
    problems = collect_submission_errors(path, eval_ids)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SubmissionError(problems[0] + more)


def read_submission(path: Path) -> list[tuple[str, str, float]]:
    """(id, code, score) rows of a valid submission; SubmissionError on the first problem."""
    validate_submission(path)
    rows, _ = _parse(Path(path))
    return [(c[0].strip(), c[1].strip(), float(c[2])) for _, c in rows]


def score_submission(path: Path, labels: Mapping[str, str], *, convention: str = "drop") -> dict[str, Any]:
    """`evaluate_predictions` of a submission against id -> code labels; every labelled id must be predicted once."""
    rows = read_submission(path)
    predicted = {clip_id: code for clip_id, code, _ in rows}
    absent = [i for i in labels if i not in predicted]
    extra = [i for i in predicted if i not in labels]
    if absent:
        first = ", ".join(absent[:5])
        raise SubmissionError(f"{path}: {len(absent)} labelled id(s) have no prediction (first: {first})")
    if extra:
        raise SubmissionError(f"{path}: {len(extra)} id(s) are not in the labels file (first: {', '.join(extra[:5])})")
    ids = list(labels)
    return evaluate_predictions([labels[i] for i in ids], [predicted[i] for i in ids], convention=convention)
