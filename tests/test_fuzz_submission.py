"""A hypothesis harness for the submission validator: valid files written by our writer always pass; every single
mutation of a valid file (a row dropped, duplicated, truncated, a bad code or score, a broken header, stray bytes)
is reported, each problem naming the file; arbitrary bytes never crash it."""
from __future__ import annotations

import csv
import io
import tempfile
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bst_rt.runtime.submission import SUBMISSION_COLUMNS, collect_submission_errors, write_submission
from bst_rt.runtime.taxonomy import CODES

uuids = st.builds(lambda n: str(uuid.UUID(int=n)), st.integers(0, 2**128 - 1))
scores = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def submissions(draw):
    ids = draw(st.lists(uuids, min_size=1, max_size=30, unique=True))
    rows = [(i, draw(st.sampled_from(CODES)), draw(scores)) for i in ids]
    return ids, rows


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _lines(ids_rows) -> list[str]:
    ids, rows = ids_rows
    return [",".join(SUBMISSION_COLUMNS)] + [f"{i},{c},{s:.6f}" for i, c, s in rows]


MUTATIONS = ("drop-row", "duplicate-row", "truncate-id", "unknown-id", "bad-code", "score-above-1", "score-negative",
             "score-nan", "score-text", "extra-column", "missing-column", "wrong-header", "empty-id", "no-header")


def _mutate(lines: list[str], kind: str, k: int) -> list[str]:
    out = list(lines)
    i = 1 + k % (len(out) - 1)  # a data row
    clip_id, code, score = out[i].split(",")
    if kind == "drop-row":
        del out[i]
    elif kind == "duplicate-row":
        out.insert(i, out[i])
    elif kind == "truncate-id":
        out[i] = f"{clip_id[:8 + k % 27]},{code},{score}"
    elif kind == "unknown-id":
        out[i] = f"{uuid.UUID(int=(k * 7919) % 2**128)}-x,{code},{score}"
    elif kind == "bad-code":
        out[i] = f"{clip_id},{code.upper() + 'x'},{score}"
    elif kind == "score-above-1":
        out[i] = f"{clip_id},{code},1.000001"
    elif kind == "score-negative":
        out[i] = f"{clip_id},{code},-0.5"
    elif kind == "score-nan":
        out[i] = f"{clip_id},{code},nan"
    elif kind == "score-text":
        out[i] = f"{clip_id},{code},high"
    elif kind == "extra-column":
        out[i] = f"{clip_id},{code},{score},extra"
    elif kind == "missing-column":
        out[i] = f"{clip_id},{code}"
    elif kind == "wrong-header":
        out[0] = "id,class,score"
    elif kind == "empty-id":
        out[i] = f",{code},{score}"
    elif kind == "no-header":
        del out[0]
    return out


@settings(max_examples=80, deadline=None)
@given(submissions())
def test_what_the_writer_writes_always_validates(case) -> None:
    ids, rows = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.csv"
        assert write_submission(path, rows) == len(rows)
        assert collect_submission_errors(path, ids) == []


@settings(max_examples=200, deadline=None)
@given(submissions(), st.sampled_from(MUTATIONS), st.integers(0, 10**6))
def test_every_single_mutation_is_reported_naming_the_file(case, kind: str, k: int) -> None:
    ids, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub.csv"
        _write_lines(path, _mutate(_lines(case), kind, k))
        problems = collect_submission_errors(path, ids)
    assert problems, f"{kind} went unnoticed"
    assert all(p.startswith(str(path)) for p in problems)


@settings(max_examples=200, deadline=None)
@given(submissions(), st.binary(max_size=200), st.integers(0, 10**6))
def test_arbitrary_bytes_anywhere_never_crash_the_validator(case, junk: bytes, k: int) -> None:
    ids, _ = case
    raw = "\n".join(_lines(case)).encode() + b"\n"
    at = k % (len(raw) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub.csv"
        path.write_bytes(raw[:at] + junk + raw[at:])
        problems = collect_submission_errors(path, ids)
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    assert isinstance(problems, list) and all(isinstance(p, str) and p.startswith(str(path)) for p in problems)
    if problems == []:  # accepted: then it must read back as exactly the ids, each once
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r and r != [""]][1:]
        assert sorted(r[0].strip() for r in rows) == sorted(ids)
