"""Property tests of the evaluation-package metadata reader, id -> path safety and the text template, on inputs
nobody would write by hand: any text in any column order, BOM / CRLF, arbitrary bytes, arbitrary ids."""
from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bst_rt.runtime.csvfile import read_csv
from bst_rt.runtime.datasets import EVAL_COLUMNS, read_eval_package, safe_child
from bst_rt.runtime.errors import DataError
from bst_rt.runtime.text import CLASS_WORDS, mask_class_words, metadata_text

#: what a UTF-8 CSV can carry: anything but lone surrogates (not encodable) and NUL (csv refuses it)
any_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=80)
plain_ids = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_"),
                    min_size=1, max_size=36)


@st.composite
def eval_csvs(draw):
    """(csv bytes, rows as dicts): the four columns in any order plus extra ones, BOM or not, LF or CRLF."""
    ids = draw(st.lists(plain_ids, min_size=1, max_size=6, unique=True))
    extras = draw(st.lists(st.sampled_from(["license", "uploader", "class_idx", "note"]), unique=True, max_size=2))
    columns = draw(st.permutations(list(EVAL_COLUMNS) + extras))
    rows = [{"anonymous_id": i, **{c: draw(any_text) for c in columns if c != "anonymous_id"}} for i in ids]
    buf = io.StringIO()
    # csv's minimal quoting leaves a lone '\r' unquoted under a '\n' terminator (the file would then be ambiguous)
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
    writer = csv.DictWriter(buf, columns, lineterminator=terminator, quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    prefix = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return prefix + buf.getvalue().encode("utf-8"), rows


@settings(max_examples=60, deadline=None)
@given(eval_csvs())
def test_eval_metadata_round_trips_in_any_column_order(case) -> None:
    content, rows = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "audio").mkdir()
        (root / "metadata.csv").write_bytes(content)
        package = read_eval_package(root)
    assert package.ids == [r["anonymous_id"] for r in rows]
    for clip, row in zip(package.clips, rows):
        assert (clip.title, clip.tags, clip.description) == (row["title"], row["tags"], row["description"])
        assert clip.audio_path is None  # no audio/ files: every row falls back to its metadata


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_read_or_refused_naming_the_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metadata.csv"
        path.write_bytes(b"anonymous_id,title,tags,description\n" + content)
        try:
            header, rows = read_csv(path, EVAL_COLUMNS)
        except DataError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert header[:4] == list(EVAL_COLUMNS)
            assert all(set(r.values) == set(header) and r.row == k for k, r in enumerate(rows, start=1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40) | st.sampled_from(["..", ".", "~", "/etc/passwd", "a/../../b", "..\\x", "C:\\x", "\x00",
                                               " a", "a ", "~root", "$HOME", "a\nb", "%2e%2e"]))
def test_an_id_never_names_a_file_outside_the_audio_folder(clip_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "audio"
        audio.mkdir()
        try:
            path = safe_child(audio, clip_id, ".wav")
        except DataError:
            return
        assert Path(os.path.realpath(path)).parent == Path(os.path.realpath(audio))
        assert path.name == f"{clip_id}.wav"
        assert clip_id.isprintable() or not any(ord(ch) < 32 or ord(ch) == 127 for ch in clip_id)  # no controls


@settings(max_examples=150, deadline=None)
@given(any_text, any_text, any_text | st.lists(st.sampled_from(
    ["<b>", "</b>", "<br/>", "<a href='x'>", "</a>", "&amp;", "&lt;", "&#x41;", "&bogus;", "<!--", "-->", "<script>",
     "<", ">", "&", "nan", "\t", "\n", "word", "piano", "Vehicles"]), max_size=30).map("".join))
def test_template_never_fails_and_gives_one_clean_line(title: str, tags: str, description: str) -> None:
    text = metadata_text(title, tags, description)
    assert isinstance(text, str) and text == text.strip()
    assert not any(ch in text for ch in "\n\r\t\x0b\x0c") and "  " not in text
    masked = mask_class_words(text)
    kept = masked.split()
    assert all(tok.lower().strip(".,;:!?()\"'") not in CLASS_WORDS for tok in kept)
    tokens = text.split()
    it = iter(tokens)
    assert all(tok in it for tok in kept)  # masking only removes tokens, in order


def test_a_1mb_description_reads_and_templates_in_full(tmp_path: Path) -> None:
    description = ("rain on a tin roof, <i>close</i> &amp; steady. " * 25_000)[:1_000_000]
    (tmp_path / "audio").mkdir()
    with open(tmp_path / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([EVAL_COLUMNS, ("big", "Rain", "rain,roof", description), ("small", "x", "", "")])
    package = read_eval_package(tmp_path)
    assert package.ids == ["big", "small"] and package.clips[0].description == description
    text = package.clips[0].text
    assert text.startswith("Rain. rain roof. rain on a tin roof, close & steady.") and len(text) > 700_000
