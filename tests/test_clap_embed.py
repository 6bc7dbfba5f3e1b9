"""`bst-train embed` on a small dataset: official layout, values equal to the runtime encoders, resume, bad audio."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from bst_rt.export.cli import app
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.encoders import AUDIO_GRAPH, TEXT_GRAPH, TOKENIZER_FILE, AudioEncoder, TextEncoder
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.text import mask_class_words
from bst_rt.train.embed import CLASS_TEXT_FILE, class_description_texts, embed_dataset

pytestmark = pytest.mark.slow

ROWS = [("101", "fx-a", "Dog bark", "dog,animal,bark", "A dog barks <b>twice</b>."),
        ("102", "m-si", "Piano waltz", "piano,solo", "Slow waltz on an upright piano."),
        ("103", "ss-u", "Street", "city,traffic", ""),
        ("104", "fx-o", "Door", "", "Door creaks."),
        ("105", "sp-s", "Broken", "voice", "This audio file is corrupt.")]


@pytest.fixture()
def dataset(tmp_path) -> Path:
    root = tmp_path / "BSD10k"
    (root / "metadata").mkdir(parents=True)
    (root / "audio").mkdir()
    with open(root / "metadata" / "BSD10k_metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sound_id", "class", "title", "tags", "description"])
        w.writerows(ROWS)
    rng = np.random.default_rng(0)
    for (sid, *_), seconds, rate in zip(ROWS[:4], (1.0, 4.0, 11.0, 0.3), (48000, 44100, 16000, 22050)):
        sf.write(root / "audio" / f"{sid}.wav", (rng.standard_normal(int(seconds * rate)) * 0.1), rate)
    (root / "audio" / "105.wav").write_bytes(b"RIFF....WAVEjunk")
    return root


def test_embed_writes_official_layout_equal_to_runtime_encoders(dataset, clap_graphs):
    report = embed_dataset(dataset, graphs=clap_graphs, batch_size=3, progress=False, log=lambda _: None)
    assert report.written == {"audio": 4, "text": 5, "text_masked": 5} and len(report.audio_failures) == 1
    assert "105.wav" in report.audio_failures[0]
    ds = read_dev_dataset(dataset)
    audio = ds.load_embeddings("audio", missing="zero")
    text, masked = ds.load_embeddings("text"), ds.load_embeddings("text_masked")
    assert not ds.embedding_mask("audio")[4] and np.allclose(np.linalg.norm(audio[:4], axis=1), 1, atol=1e-5)

    enc = AudioEncoder(clap_graphs / AUDIO_GRAPH)
    expected = enc.embed_files([c.audio_path for c in ds.clips[:4]])
    assert np.abs(audio[:4] - expected).max() <= 1e-6
    tenc = TextEncoder(clap_graphs / TEXT_GRAPH, clap_graphs / TOKENIZER_FILE)
    assert np.abs(text - tenc.embed([c.text for c in ds.clips])).max() <= 1e-6
    assert np.abs(masked - tenc.embed([mask_class_words(c.text) for c in ds.clips])).max() <= 1e-6
    assert not np.allclose(text[1], masked[1])  # "piano" is a class word: the masked text differs

    classes = np.load(dataset / "features" / CLASS_TEXT_FILE)
    assert classes.shape == (23, 512) and classes.dtype == np.float32
    assert np.abs(classes - tenc.embed(class_description_texts(dataset))).max() <= 1e-6


def test_embed_resumes_and_only_fills_gaps(dataset, clap_graphs):
    runner = CliRunner()
    first = runner.invoke(app, ["embed", str(dataset), "--graphs", str(clap_graphs)])
    assert first.exit_code == 0, first.output
    feats = dataset / "features"
    kept = feats / "clap_text_embeddings" / "101.npy"
    before = kept.stat().st_mtime_ns
    (feats / "clap_audio_embeddings" / "102.npy").unlink()
    (feats / "clap_text_masked_embeddings" / "103.npy").unlink()
    second = runner.invoke(app, ["embed", str(dataset), "--graphs", str(clap_graphs), "--batch-size", "2"])
    assert second.exit_code == 0, second.output
    assert "audio: 1 written" in second.output and "text_masked: 1 written" in second.output
    assert "text: 0 written, 5 already there" in second.output
    assert kept.stat().st_mtime_ns == before
    assert not list(feats.rglob("*.tmp"))


def test_embed_cli_refuses_ambiguous_weights(dataset):
    result = CliRunner().invoke(app, ["embed", str(dataset)])
    assert result.exit_code != 0


def test_torch_engine_matches_onnx_engine(dataset, clap_graphs, clap_reference, monkeypatch, tmp_path):
    import bst_rt.train.clap as clap

    monkeypatch.setattr(clap, "load_clap", lambda *a, **k: clap_reference)  # the same real model, built once
    onnx_root = tmp_path / "copy"
    import shutil

    shutil.copytree(dataset, onnx_root)
    embed_dataset(dataset, engine="torch", random_weights=True, batch_size=4, progress=False, log=lambda _: None)
    embed_dataset(onnx_root, graphs=clap_graphs, batch_size=4, progress=False, log=lambda _: None)
    for kind in ("audio", "text"):
        a = read_dev_dataset(dataset).load_embeddings(kind, missing="skip")
        b = read_dev_dataset(onnx_root).load_embeddings(kind, missing="skip")
        err = float(np.abs(a - b).max())
        print(f"bst-train embed torch vs onnx engine, {kind}: max abs diff {err:.2e}")
        assert a.shape == b.shape and err <= 1e-4


def test_embed_refuses_to_mix_encoders(dataset, clap_graphs):
    import json

    from bst_rt.train.embed import RECORD_FILE

    embed_dataset(dataset, graphs=clap_graphs, progress=False, log=lambda _: None)
    record = dataset / "features" / RECORD_FILE
    data = json.loads(record.read_text())
    assert data["encoder"]["weights"] == "random" and data["encoder"]["chunk_rule"] == "centre-of-thirds"
    data["encoder"]["seed"] = 1
    record.write_text(json.dumps(data))
    (dataset / "features" / "clap_text_embeddings" / "101.npy").unlink()
    result = CliRunner().invoke(app, ["embed", str(dataset), "--graphs", str(clap_graphs)])
    assert result.exit_code == 1 and "another CLAP encoder" in result.output and "seed" in result.output
    assert not (dataset / "features" / "clap_text_embeddings" / "101.npy").exists()


def test_embed_asks_for_the_graph_folder_only_when_something_is_missing(dataset, clap_graphs):
    """The export floor hands `embed_dataset` a graph source; a finished rerun must not export (or load) CLAP."""
    calls = []

    def source() -> Path:
        calls.append(1)
        return clap_graphs

    first = embed_dataset(dataset, graphs=source, batch_size=4, progress=False, log=lambda _: None)
    assert calls == [1] and first.written["text"] == len(ROWS)
    (dataset / "audio" / "105.wav").unlink()  # undecodable audio is retried on a rerun; a missing file is not
    second = embed_dataset(dataset, graphs=source, batch_size=4, progress=False, log=lambda _: None)
    assert calls == [1] and sum(second.written.values()) == 0


def test_onnx_engine_without_graphs_is_refused_in_one_line(dataset):
    with pytest.raises(BstError, match="needs exported CLAP graphs.*--graphs DIR"):
        embed_dataset(dataset, graphs=None, progress=False, log=lambda _: None)
