"""UTF-8 CSV files as the task ships them: BOM allowed, quoted newlines allowed, blank lines skipped.

Problems are DataErrors naming the file, the data row (1 = first row after the header, 0 = the header), the physical
line (a quoted newline makes a row span lines) and the reason.
"""
from __future__ import annotations

import csv
import io
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import DataError

#: csv's default per-field limit (128 KiB) would refuse a legitimate long description; the file is read whole anyway,
#: so the limit guards nothing here
FIELD_LIMIT_BYTES = 1 << 30
_FIELD_LIMIT_LOCK = threading.RLock()


@contextmanager
def wide_fields() -> Iterator[None]:
    """Raise csv's field-size limit only while our own parse runs, then put back the host's value.

    csv has just this one process-wide setting; raising it at import (as we once did) changed every other CSV reader
    of an application that imports bst_rt.runtime. Our parses hold a lock so two of them do not restore out of order.
    """
    with _FIELD_LIMIT_LOCK:
        before = csv.field_size_limit()
        csv.field_size_limit(max(before, FIELD_LIMIT_BYTES))
        try:
            yield
        finally:
            csv.field_size_limit(before)


@dataclass(frozen=True)
class CsvRow:
    row: int  # 1-based data row number (the header is row 0)
    line: int  # physical line number where the row ends
    values: dict[str, str]
    #: the row held bytes that are not UTF-8 (e.g. latin-1 from old Freesound exports), read as U+FFFD
    repaired: bool = False


def where(path: Path, r: CsvRow) -> str:
    """'<file>: row N (line L)', the prefix of every message about one row."""
    return f"{path}: row {r.row} (line {r.line})"


def header_of(path: Path) -> list[str]:
    """Column names of a CSV file (BOM and surrounding whitespace removed); DataError when the header is unreadable."""
    text, bad_lines = _decode_repairing(Path(path))  # a bad byte in a data row does not make the header unreadable
    if bad_lines and min(bad_lines) <= _header_end_line(text):
        decode_csv(Path(path))  # raises the usual error naming the header
    with wide_fields():
        return _header(Path(path), csv.reader(io.StringIO(text, newline="")), ())


def read_csv(path: Path, required: tuple[str, ...] = (), *, repair_encoding: bool = False
             ) -> tuple[list[str], list[CsvRow]]:
    """Header and rows of a UTF-8 CSV (BOM ok, quoted newlines ok, blank lines skipped), with row/line numbers.

    With `repair_encoding`, a data row holding bytes that are not UTF-8 is decoded with U+FFFD replacement characters
    and marked `repaired` instead of refusing the whole file: one bad row must not cost the others. A header that is
    not UTF-8 is still an error (it is the whole file's defect).
    """
    path = Path(path)
    if not repair_encoding:
        text, bad_lines = decode_csv(path), set()
    else:
        text, bad_lines = _decode_repairing(path)
    with wide_fields():
        header, rows = _rows(path, csv.reader(io.StringIO(text, newline="")), required)
    if not bad_lines:
        return header, rows
    if min(bad_lines) <= _header_end_line(text):
        decode_csv(path)  # raises the usual error naming the header
    marked, start = [], _header_end_line(text) + 1
    for r in rows:
        hit = any(start <= line <= r.line for line in bad_lines)
        marked.append(CsvRow(r.row, r.line, r.values, repaired=True) if hit else r)
        start = r.line + 1
    return header, marked


def _decode_repairing(path: Path) -> tuple[str, set[int]]:
    """The file as text with invalid UTF-8 replaced by U+FFFD, and the 1-based physical lines that needed it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig"), set()
    except UnicodeDecodeError:
        pass
    bad: set[int] = set()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            bad.add(number)
    return raw.decode("utf-8-sig", errors="replace"), bad


def _header_end_line(text: str) -> int:
    """The physical line on which the header record ends (a quoted newline can make it span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    with wide_fields():
        try:
            next(reader)
        except (StopIteration, csv.Error):
            return 1
    return reader.line_num


def _rows(path: Path, reader, required: tuple[str, ...]) -> tuple[list[str], list[CsvRow]]:  # noqa: ANN001
    header = _header(path, reader, required)
    rows: list[CsvRow] = []
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return header, rows
        except csv.Error as exc:
            raise DataError(f"{path}: row {len(rows) + 1} (line {reader.line_num}): malformed CSV ({exc})") from None
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            raise DataError(
                f"{path}: row {len(rows) + 1} (line {reader.line_num}): {len(values)} fields, header has {len(header)}"
            )
        rows.append(CsvRow(len(rows) + 1, reader.line_num, dict(zip(header, values))))


def decode_csv(path: Path) -> str:
    """The whole file as text (utf-8-sig); an invalid byte is reported with the row and line it falls in."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        before = raw[:line_start].decode("utf-8-sig", errors="replace")
        try:
            with wide_fields():
                records = sum(1 for r in csv.reader(io.StringIO(before, newline="")) if r and r != [""])
        except csv.Error:
            records = before.count("\n")
        row = "row 0 (header)" if records == 0 else f"row {records}"
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: {row} (line {line}): not valid UTF-8 (byte {raw[exc.start]:#04x})") from None


def _header(path: Path, reader, required: tuple[str, ...]) -> list[str]:  # noqa: ANN001 - csv reader type
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: empty file, expected a header row") from None
    except csv.Error as exc:
        raise DataError(f"{path}: row 0 (header): malformed CSV ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: row 0 (header): missing column(s) {', '.join(missing)}; found {', '.join(header)}")
    return header
