"""`bst-rt classify`: plain files and folders, metadata from options or a sidecar CSV, table / --json / --csv; each
file's label and score are what the Python API gives it alone."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from bst_rt.runtime.cli import app
from bst_rt.runtime.taxonomy import CLASSES, CODE_TO_INDEX, PARENT_NAMES

SR = 48_000


def _tone(path: Path, freq: float, seconds: float = 1.0) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sounds")
    (root / "sub").mkdir()
    _tone(root / "dog.wav", 440.0)
    _tone(root / "rain.flac", 1200.0, 2.0)
    _tone(root / "sub" / "engine.mp3", 90.0)
    (root / "broken.ogg").write_bytes(b"OggS not really")
    (root / "notes.txt").write_text("not audio")
    with open(root / "meta.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "title", "tags", "description"])
        w.writerow(["dog.wav", "Dog barking", "dog,bark", "A dog in a park"])
        w.writerow(["engine", "Old engine", "engine,motor", "idling diesel"])
    return root


def _json(args: list[str]) -> list[dict]:
    result = CliRunner().invoke(app, ["classify", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_folder_and_sidecar_give_the_apis_decision_per_file(bundle, sounds: Path) -> None:
    from bst_rt.runtime.predict import Predictor

    rows = _json([str(sounds), "--sidecar", str(sounds / "meta.csv"), "--bundle", str(bundle), "--threads", "1"])
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["broken", "dog", "engine", "rain"]  # notes.txt is not audio; sub/ is searched
    predictor = Predictor.load(bundle, system=1, provider="cpu", threads=1)
    metadata = {"dog": ("Dog barking", "dog,bark", "A dog in a park"), "engine": ("Old engine", "engine,motor",
                "idling diesel"), "rain": ("", "", ""), "broken": ("", "", "")}
    for row in rows:
        title, tags, description = metadata[row["id"]]
        alone = predictor.predict_file(row["file"], title=title, tags=tags, description=description)
        assert (row["label"], row["score"]) == (alone.label, round(alone.score, 6)), row
        assert row["class_name"] == CLASSES[CODE_TO_INDEX[row["label"]]].name
        assert row["parent_name"] == PARENT_NAMES[row["label"].split("-")[0]]
        assert len(row["top_3"]) == 3 and row["top_3"][0]["score"] >= row["top_3"][2]["score"]
    assert by_id["broken"]["fallback"].startswith("undecodable audio")
    assert by_id["dog"]["fallback"] is None


def test_options_metadata_csv_and_table_outputs(bundle, sounds: Path) -> None:
    args = [str(sounds / "dog.wav"), str(sounds / "rain.flac"), "--title", "Dog barking", "--tags", "dog,bark",
            "--description", "A dog in a park", "--bundle", str(bundle), "--threads", "1"]
    as_json = _json(args)
    assert as_json[0]["label"] == _json([str(sounds / "dog.wav"), "--sidecar", str(sounds / "meta.csv"), "--bundle",
                                         str(bundle), "--threads", "1"])[0]["label"]
    as_csv = CliRunner().invoke(app, ["classify", *args, "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["id"], r["label"], float(r["score"])) for r in parsed] == [
        (r["id"], r["label"], r["score"]) for r in as_json]
    table = CliRunner().invoke(app, ["classify", *args], env={"COLUMNS": "200"})  # rich reads COLUMNS
    assert table.exit_code == 0 and as_json[0]["class_name"] in table.stdout and "top-3" in table.stdout


def test_two_files_with_one_id_and_missing_paths_are_one_line_errors(tmp_path: Path) -> None:
    _tone(tmp_path / "a.wav", 300.0, 0.2)
    _tone(tmp_path / "a.flac", 300.0, 0.2)
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "--bundle", str(tmp_path / "no-bundle")])
    assert result.exit_code == 1 and "two audio files for id 'a'" in result.stderr
    assert "a.flac" in result.stderr and "a.wav" in result.stderr
    missing = CliRunner().invoke(app, ["classify", str(tmp_path / "nope.wav")])
    assert missing.exit_code == 1 and "nope.wav: no such file or folder" in missing.stderr
