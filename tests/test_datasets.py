"""Readers: tiny BSD10k / BSD35k-CS / evaluation-package layouts written here with the reference's column names."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bst_rt.runtime.datasets import (
    Clip,
    read_dev_dataset,
    read_eval_package,
    read_labels,
    safe_child,
)
from bst_rt.runtime.errors import DataError
from bst_rt.runtime.taxonomy import CODE_TO_INDEX
from bst_rt.runtime.text import metadata_text

DEV_HEADER = ["sound_id", "class", "class_idx", "class_top", "confidence", "uploader", "license", "title", "tags",
              "description"]
EVAL_HEADER = ["anonymous_id", "title", "tags", "description"]
UUID_A = "0b6c5c1e-8f0e-4c43-9b8e-0d6f2f6a9a11"
UUID_B = "7d1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def write_csv(path: Path, header: list[str], rows: list[list[object]], *, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dev_row(sound_id: str, code: str, confidence: str = "4", title: str = "t", tags: str = "a,b",
            description: str = "d", class_idx: str = "999") -> list[str]:
    return [sound_id, code, class_idx, code.split("-")[0], confidence, "someone", "CC0", title, tags, description]


@pytest.fixture
def bsd10k(tmp_path: Path) -> Path:
    root = tmp_path / "BSD10k"
    rows = [
        dev_row("00123", "fx-a", "5", "Dog bark", "dog,bark, animal", "<p>A dog&nbsp;barks</p>\n<br>twice"),
        dev_row("77", "is-k", "3", "Piano C4", "", "Line one\nline two, \"quoted\"", class_idx="203"),
        dev_row("78", "ss-u", "1", "Ciudad – café ☕", "street,city", ""),
    ]
    write_csv(root / "metadata" / "BSD10k_metadata.csv", DEV_HEADER, rows, bom=True)
    for kind, offset in (("audio", 0.0), ("text", 10.0)):
        folder = root / "features" / f"clap_{kind}_embeddings"
        folder.mkdir(parents=True)
        for i, sound_id in enumerate(["00123", "77", "78"]):
            np.save(folder / f"{sound_id}.npy", np.full(512, offset + i, dtype=np.float32))
    return root


def test_bsd10k_layout_reads_labels_from_class_and_keeps_ids_as_text(bsd10k: Path) -> None:
    ds = read_dev_dataset(bsd10k)
    assert ds.name == "BSD10k" and len(ds) == 3 and ds.dropped_other == 0
    assert ds.ids == ["00123", "77", "78"]  # the text in the file, leading zeros kept
    assert ds.labels == ["fx-a", "is-k", "ss-u"]  # class_idx (203 = is-w in v1.2) is ignored
    assert ds.label_indices.dtype == np.int64
    assert ds.label_indices.tolist() == [CODE_TO_INDEX["fx-a"], CODE_TO_INDEX["is-k"], CODE_TO_INDEX["ss-u"]]
    assert ds.confidences.tolist() == [5.0, 3.0, 1.0]
    clip = ds.clips[1]
    assert clip.description == 'Line one\nline two, "quoted"'  # quoted newline survives
    assert clip.audio_path == bsd10k / "audio" / "77.wav"
    assert ds.clips[2].title == "Ciudad – café ☕"
    assert ds.clips[0].text == metadata_text("Dog bark", "dog,bark, animal", "<p>A dog&nbsp;barks</p>\n<br>twice")


def test_embeddings_load_in_clip_order_and_missing_files_are_reported(bsd10k: Path) -> None:
    ds = read_dev_dataset(bsd10k)
    audio = ds.load_embeddings("audio")
    assert audio.shape == (3, 512) and audio.dtype == np.float32
    assert audio[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert ds.load_embeddings("text")[:, 0].tolist() == [10.0, 11.0, 12.0]
    assert ds.has_embeddings("audio") and not ds.has_embeddings("text_masked")
    (bsd10k / "features" / "clap_text_embeddings" / "77.npy").unlink()
    assert not ds.has_embeddings("text")
    with pytest.raises(DataError, match=r"1 of 3 embeddings missing \(first: 77\)"):
        ds.load_embeddings("text")
    assert ds.embedding_mask("text").tolist() == [True, False, True]
    assert ds.load_embeddings("text", missing="skip")[:, 0].tolist() == [10.0, 12.0]
    assert ds.load_embeddings("text", missing="zero")[:, 0].tolist() == [10.0, 0.0, 12.0]
    with pytest.raises(DataError, match="unknown embedding kind"):
        ds.load_embeddings("video")


def test_a_wrong_shaped_embedding_names_its_file(bsd10k: Path) -> None:
    bad = bsd10k / "features" / "clap_audio_embeddings" / "78.npy"
    np.save(bad, np.zeros(256, dtype=np.float32))
    with pytest.raises(DataError, match=r"78\.npy: expected a float vector of 512"):
        read_dev_dataset(bsd10k).load_embeddings("audio")


def test_fingerprint_follows_the_metadata_bytes(bsd10k: Path) -> None:
    first = read_dev_dataset(bsd10k).fingerprint()
    assert len(first) == 64 and first == read_dev_dataset(bsd10k).fingerprint()
    meta = bsd10k / "metadata" / "BSD10k_metadata.csv"
    meta.write_bytes(meta.read_bytes().replace(b"Dog bark", b"Dog barks"))
    assert read_dev_dataset(bsd10k).fingerprint() != first


def test_bsd35k_cs_drops_other_rows_and_has_no_confidence(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    rows = [dev_row("1", "fx-v", ""), dev_row("2", "fx-other", ""), dev_row("3", "m-m", ""), dev_row("4", "ss-other", "")]
    write_csv(root / "metadata" / "BSD35k-CS_metadata.csv", DEV_HEADER, rows)
    ds = read_dev_dataset(root)
    assert ds.name == "BSD35k-CS" and ds.ids == ["1", "3"] and ds.dropped_other == 2
    assert [c.confidence for c in ds.clips] == [None, None]
    assert np.isnan(ds.confidences).all()
    kept = read_dev_dataset(root, drop_other=False)
    assert kept.labels == ["fx-v", "fx-other", "m-m", "ss-other"] and kept.dropped_other == 0
    with pytest.raises(DataError, match="fx-other"):
        kept.label_indices


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([dev_row("1", "fx-a"), dev_row("2", "fx-d")], r"row 2 \(line 3\): unknown class 'fx-d'"),
        ([dev_row("1", "fx-a"), dev_row("1", "fx-v")], r"row 2 \(line 3\): duplicate id '1' \(first at row 1\)"),
        ([dev_row("../../etc/passwd", "fx-a")], r"row 1 \(line 2\): id '../../etc/passwd' cannot be used"),
        ([dev_row("1", "fx-a", confidence="high")], r"row 1 \(line 2\): confidence 'high' is not a number"),
        ([dev_row("1", "fx-a")[:-1]], r"row 1 \(line 2\): 9 fields, header has 10"),
    ],
)
def test_bad_dev_rows_name_file_row_and_reason(tmp_path: Path, rows, message: str) -> None:
    meta = write_csv(tmp_path / "metadata" / "BSD10k_metadata.csv", DEV_HEADER, rows)
    with pytest.raises(DataError, match=message) as info:
        read_dev_dataset(tmp_path)
    assert str(meta) in str(info.value)


def test_missing_column_and_bad_encoding_are_data_errors(tmp_path: Path) -> None:
    meta = write_csv(tmp_path / "metadata" / "BSD10k_metadata.csv", [c for c in DEV_HEADER if c != "class"], [])
    with pytest.raises(DataError, match="missing column.*class"):
        read_dev_dataset(tmp_path)
    good = ",".join(DEV_HEADER).encode() + b"\n" + ",".join(dev_row("1", "fx-a")).encode() + b"\n"
    meta.write_bytes(good + b"2,fx-a,1,fx,4,u,CC0,caf\xe9,t,d\n")
    with pytest.raises(DataError, match=r"row 2 .*not valid UTF-8"):
        read_dev_dataset(tmp_path)


def test_layout_detection_refuses_none_and_both(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no development metadata"):
        read_dev_dataset(tmp_path)
    write_csv(tmp_path / "metadata" / "BSD10k_metadata.csv", DEV_HEADER, [])
    write_csv(tmp_path / "metadata" / "BSD35k-CS_metadata.csv", DEV_HEADER, [])
    with pytest.raises(DataError, match="both BSD10k and BSD35k-CS"):
        read_dev_dataset(tmp_path)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", "/etc/passwd", "x\x00y", "..", " padded"])
def test_safe_child_refuses_ids_that_escape_the_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DataError, match="cannot be used as a file name"):
        safe_child(tmp_path, bad, ".wav")


def test_safe_child_accepts_plain_ids(tmp_path: Path) -> None:
    assert safe_child(tmp_path, UUID_A, ".wav") == tmp_path / f"{UUID_A}.wav"
    assert safe_child(tmp_path, "00123", ".npy").parent == tmp_path


def make_eval_package(root: Path, *, where: str = ".") -> Path:
    write_csv(root / where / "anything_metadata.csv", EVAL_HEADER,
              [[UUID_A, "Rain", "rain,water", "<i>soft</i> rain"], [UUID_B, "", "", ""]])
    (root / "audio").mkdir(parents=True)
    (root / "audio" / f"{UUID_A}.wav").write_bytes(b"")  # zero-byte files exist in real packages
    return root


@pytest.mark.parametrize("where", [".", "metadata"])
def test_eval_package_finds_its_metadata_and_marks_missing_audio(tmp_path: Path, where: str) -> None:
    root = make_eval_package(tmp_path / "pkg", where=where)
    # a labels file and a submission in the package root are not metadata candidates
    write_csv(root / "labels.csv", ["anonymous_id", "class"], [[UUID_A, "ss-n"]])
    write_csv(root / "sub.csv", ["id", "predicted_bst_second_level_class", "prediction_score"], [])
    pkg = read_eval_package(root)
    assert pkg.metadata_path.name == "anything_metadata.csv"
    assert pkg.ids == [UUID_A, UUID_B]
    assert pkg.clips[0].audio_path == root / "audio" / f"{UUID_A}.wav"
    assert pkg.clips[1].audio_path is None  # no file: the predictor falls back, the reader does not fail
    assert all(c.label is None for c in pkg.clips)
    assert pkg.clips[0].text == "Rain. rain water. soft rain" and pkg.clips[1].text == ""


def test_eval_package_ambiguity_lists_candidates_and_metadata_option_resolves_it(tmp_path: Path) -> None:
    root = make_eval_package(tmp_path)
    other = write_csv(tmp_path / "metadata" / "copy.csv", EVAL_HEADER, [[UUID_B, "x", "", ""]])
    with pytest.raises(DataError, match=r"several candidate metadata CSVs .*anything_metadata\.csv.*copy\.csv"):
        read_eval_package(root)
    assert read_eval_package(root, metadata=other).ids == [UUID_B]


def test_eval_package_without_metadata_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metadata CSV .one with an anonymous_id column."):
        read_eval_package(tmp_path)
    write_csv(tmp_path / "meta.csv", ["anonymous_id", "title", "tags"], [[UUID_A, "t", ""]])
    with pytest.raises(DataError, match=r"meta\.csv: row 0 \(header\): missing column\(s\) description"):
        read_eval_package(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        read_eval_package(tmp_path / "nope")


@pytest.mark.parametrize("id_column", ["id", "anonymous_id", "sound_id"])
def test_read_labels_accepts_each_id_column(tmp_path: Path, id_column: str) -> None:
    path = write_csv(tmp_path / "labels.csv", [id_column, "class"], [[UUID_A, "fx-a"], ["12", "m-sp"]])
    assert read_labels(path) == {UUID_A: "fx-a", "12": "m-sp"}


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["clip", "class"], [["1", "fx-a"]], "no id column"),
        (["id", "label"], [["1", "fx-a"]], "missing column.*class"),
        (["id", "class"], [["1", "fx-a"], ["2", "fx-nope"]], r"row 2 \(line 3\): unknown class 'fx-nope'"),
        (["id", "class"], [["1", "fx-a"], ["1", "fx-a"]], r"row 2 \(line 3\): duplicate id '1'"),
    ],
)
def test_read_labels_errors(tmp_path: Path, header, rows, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_labels(write_csv(tmp_path / "labels.csv", header, rows))


free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(free_text, free_text, free_text), min_size=1, max_size=4), st.booleans())
def test_metadata_round_trips_through_the_reader(tmp_path_factory, texts, bom: bool) -> None:
    root = tmp_path_factory.mktemp("rt")
    codes = list(CODE_TO_INDEX)
    clips = [Clip(str(1000 + i), t, g, d, root / "audio" / f"{1000 + i}.wav", codes[i % 23], 2.0)
             for i, (t, g, d) in enumerate(texts)]
    write_csv(root / "metadata" / "BSD10k_metadata.csv", DEV_HEADER,
              [dev_row(c.id, c.label, "2", c.title, c.tags, c.description) for c in clips], bom=bom)
    assert read_dev_dataset(root).clips == clips
