"""The synthetic corpus (`bst-train synth`): documented layouts, determinism, eval-package traps, label noise, class signal
in audio and in the stand-in embeddings, and a round trip through the runtime's readers."""
from __future__ import annotations

import csv
import hashlib
import re
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from bst_rt.runtime.datasets import read_dev_dataset, read_eval_package, read_labels
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.taxonomy import CLASSES, CODE_TO_INDEX, CODES, OTHER_CODES, PARENT_INDEX
from bst_rt.runtime.text import mask_class_words, metadata_text
from bst_rt.export.cli import app
from bst_rt.synth.corpus import write_corpus
from bst_rt.synth.stand_in_embeddings import embed_text

# the documented contract (task reference §2 and issue 2), spelled out rather than imported from the generator
DEV_COLUMNS = ["sound_id", "class", "class_idx", "class_top", "confidence", "uploader", "license", "title", "tags",
               "description"]
EVAL_COLUMNS = ["anonymous_id", "title", "tags", "description"]
PARENT_DIGIT = {"m": 1, "is": 2, "sp": 3, "fx": 4, "ss": 5}
PER_CLASS, CS_NOISE, N_EVAL = 12, 0.3, 40  # the session fixture's arguments
KINDS = ("audio", "text", "text_masked")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _parent(code: str) -> str:
    return code.split("-", 1)[0]


# ---- layout ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BSD10k", "BSD35k-CS"])
def test_dev_layouts_have_the_documented_files_and_columns(synth_corpus, name):
    root = synth_corpus.root / name
    header, rows = _rows(root / "metadata" / f"{name}_metadata.csv")
    assert header == DEV_COLUMNS
    assert sorted(p.name for p in root.iterdir()) == ["audio", "features", "metadata"]
    wavs = {p.stem for p in (root / "audio").iterdir()}
    assert wavs == {r["sound_id"] for r in rows} and len(wavs) == len(rows)
    for r in rows:
        code, parent = r["class"], _parent(r["class"])
        assert code in CODE_TO_INDEX or code in OTHER_CODES
        assert r["class_top"] == parent
        idx = int(r["class_idx"])
        assert idx // 100 == PARENT_DIGIT[parent] and len(r["class_idx"]) == 3
        assert (idx % 100 == 99) == (code in OTHER_CODES)
        assert r["uploader"] and r["license"].startswith("http")
        assert r["sound_id"].isdigit()
        if name == "BSD10k":
            assert r["confidence"] in {"1", "2", "3", "4", "5"}
        else:
            assert r["confidence"] == ""
    idx_of = {r["class"]: r["class_idx"] for r in rows}
    assert idx_of.get("fx-o") == "401" and idx_of.get("is-w") == "203"  # the reference's examples
    assert len(set(idx_of.values())) == len(idx_of)

    header, desc = _rows(root / "metadata" / "BST_description.csv")
    assert header == ["class", "name", "description", "examples"]
    expected = [(c.code, c.name, c.description) for c in CLASSES]
    assert [(d["class"], d["name"], d["description"]) for d in desc] == expected


def test_dev_is_balanced_and_cs_is_not_and_ids_are_disjoint(synth_corpus):
    _, dev = _rows(synth_corpus.dev / "metadata" / "BSD10k_metadata.csv")
    _, cs = _rows(synth_corpus.cs / "metadata" / "BSD35k-CS_metadata.csv")
    assert Counter(r["class"] for r in dev) == {c: PER_CLASS for c in CODES}
    cs_true = read_labels(synth_corpus.cs_true_labels)
    sizes = Counter(cs_true.values())
    assert set(sizes) == set(CODES) and len(set(sizes.values())) > 3  # every class, unequal sizes
    assert not {r["sound_id"] for r in dev} & {r["sound_id"] for r in cs}


def test_stand_in_feature_files_follow_the_official_layout(synth_corpus):
    for root in (synth_corpus.dev, synth_corpus.cs):
        _, rows = _rows(next((root / "metadata").glob("BSD*_metadata.csv")))
        ids = {r["sound_id"] for r in rows}
        for kind in KINDS:
            folder = root / "features" / f"clap_{kind}_embeddings"
            assert {p.stem for p in folder.glob("*.npy")} == ids
        for r in rows[:25]:
            for kind in KINDS:
                v = np.load(root / "features" / f"clap_{kind}_embeddings" / f"{r['sound_id']}.npy")
                assert v.dtype == np.float32 and v.shape == (512,)
                assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
        classes = np.load(root / "features" / "clap_class_text_embeddings.npy")
        assert classes.shape == (23, 512) and classes.dtype == np.float32
        assert np.allclose(np.linalg.norm(classes, axis=1), 1.0, atol=1e-5)


# ---- audio ----------------------------------------------------------------------------------------------------------


def test_dev_and_cs_audio_is_44k1_mono_pcm16_of_0p5_to_8_seconds(synth_corpus):
    for root in (synth_corpus.dev, synth_corpus.cs):
        for wav in (root / "audio").iterdir():
            info = sf.info(wav)
            assert (info.samplerate, info.channels, info.format, info.subtype) == (44100, 1, "WAV", "PCM_16"), wav
            assert 0.5 - 1e-3 <= info.duration <= 8.0 + 1e-3, (wav, info.duration)


def _band_stats(path: Path, n_bands: int = 24) -> np.ndarray:
    """Mean and spread over time of log energy in log-spaced bands (a tiny log-mel), first 3 s."""
    x, sr = sf.read(path, dtype="float32", frames=3 * 44100)
    x = np.pad(x, (0, max(0, 4096 - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, 2048)[::1024] * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.searchsorted(np.fft.rfftfreq(2048, 1 / sr), np.geomspace(40, 16000, n_bands + 1))
    bands = np.stack([power[:, a : max(b, a + 1)].sum(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    logb = np.log10(bands + 1e-9)
    logb -= logb.max()  # level-invariant: clips have random gains
    return np.concatenate([logb.mean(axis=0), logb.std(axis=0)])


def test_classes_differ_measurably_in_the_audio(synth_corpus):
    """A nearest-centroid classifier on log-band statistics, fit on BSD10k and scored on BSD35k-CS's true labels."""
    _, dev = _rows(synth_corpus.dev / "metadata" / "BSD10k_metadata.csv")
    cs_true = read_labels(synth_corpus.cs_true_labels)
    xd = np.stack([_band_stats(synth_corpus.dev / "audio" / f"{r['sound_id']}.wav") for r in dev])
    yd = np.array([CODE_TO_INDEX[r["class"]] for r in dev])
    xc = np.stack([_band_stats(synth_corpus.cs / "audio" / f"{i}.wav") for i in cs_true])
    yc = np.array([CODE_TO_INDEX[c] for c in cs_true.values()])
    mu, sd = xd.mean(axis=0), xd.std(axis=0) + 1e-6
    centroids = np.stack([((xd - mu) / sd)[yd == k].mean(axis=0) for k in range(23)])
    dist = (((xc - mu) / sd)[:, None, :] - centroids[None]) ** 2
    pred = dist.sum(axis=2).argmin(axis=1)
    acc, parent_acc = float((pred == yc).mean()), float((PARENT_INDEX[pred] == PARENT_INDEX[yc]).mean())
    print(f"audio nearest-centroid accuracy {acc:.3f} (chance {1 / 23:.3f}), parent accuracy {parent_acc:.3f}")
    assert acc > 5 / 23
    assert parent_acc > 0.5


# ---- stand-in embeddings ---------------------------------------------------------------------------------------------


def test_stand_in_audio_embeddings_carry_signal_but_not_a_perfect_one(synth_corpus):
    dev, cs = read_dev_dataset(synth_corpus.dev), read_dev_dataset(synth_corpus.cs)
    cs_true = read_labels(synth_corpus.cs_true_labels)
    xd, yd = dev.load_embeddings("audio"), dev.label_indices
    xc, yc = cs.load_embeddings("audio"), np.array([CODE_TO_INDEX[cs_true[i]] for i in cs.ids])
    means = np.stack([xd[yd == k].mean(axis=0) for k in range(23)])
    pred = (xc @ means.T).argmax(axis=1)
    acc = float((pred == yc).mean())
    print(f"stand-in audio embedding nearest-class-mean accuracy {acc:.3f}")
    assert 0.6 < acc < 0.97
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = PARENT_INDEX[:, None] == PARENT_INDEX[None, :]
    assert cos[same & ~np.eye(23, dtype=bool)].mean() > cos[~same].mean() + 0.2  # siblings are closer


def test_stand_in_text_embeddings_are_of_the_written_metadata(synth_corpus):
    dev = read_dev_dataset(synth_corpus.dev)
    text, masked = dev.load_embeddings("text"), dev.load_embeddings("text_masked")
    for i, clip in enumerate(dev.clips[:60]):
        full = metadata_text(clip.title, clip.tags, clip.description)
        np.testing.assert_allclose(text[i], embed_text(full), atol=1e-6)
        np.testing.assert_allclose(masked[i], embed_text(mask_class_words(full)), atol=1e-6)
    assert np.array_equal(embed_text(""), embed_text("   "))  # empty metadata: one uninformative vector
    classes = np.load(synth_corpus.dev / "features" / "clap_class_text_embeddings.npy")
    np.testing.assert_allclose(classes, np.stack([embed_text(f"{c.name}. {c.description}") for c in CLASSES]),
                               atol=1e-6)


# ---- BSD35k-CS label noise ------------------------------------------------------------------------------------------


def test_cs_labels_are_wrong_at_the_requested_rate_mostly_towards_siblings(synth_corpus):
    _, rows = _rows(synth_corpus.cs / "metadata" / "BSD35k-CS_metadata.csv")
    true = read_labels(synth_corpus.cs_true_labels)
    labelled = [r for r in rows if r["sound_id"] in true]
    assert len(labelled) == len(true) and all(r["class"] in OTHER_CODES for r in rows if r["sound_id"] not in true)
    wrong = [(r["class"], true[r["sound_id"]]) for r in labelled if r["class"] != true[r["sound_id"]]]
    rate = len(wrong) / len(labelled)
    sibling = sum(_parent(a) == _parent(b) for a, b in wrong) / len(wrong)
    print(f"CS noise rate {rate:.3f} (asked {CS_NOISE}), sibling share {sibling:.2f}")
    assert abs(rate - CS_NOISE) < 0.03
    assert 0.6 <= sibling < 1.0  # mostly siblings, sometimes across parents
    others = Counter(r["class"] for r in rows if r["class"] in OTHER_CODES)
    assert set(others) == OTHER_CODES
    assert all(r["class_idx"].endswith("99") for r in rows if r["class"] in OTHER_CODES)


# ---- evaluation package ---------------------------------------------------------------------------------------------

_HTML = re.compile(r"<[a-zA-Z][^>]*>")
_ACCENTED = re.compile(r"[\u00c0-\u024f]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_EMOJI = re.compile(r"[\U0001f300-\U0001faff]")


def test_eval_package_layout_ids_and_labels(synth_corpus):
    assert sorted(p.name for p in synth_corpus.eval.iterdir()) == ["audio", "eval_metadata.csv"]
    assert synth_corpus.eval_labels.parent == synth_corpus.root
    header, rows = _rows(synth_corpus.eval / "eval_metadata.csv")
    assert header == EVAL_COLUMNS and len(rows) == N_EVAL
    ids = [r["anonymous_id"] for r in rows]
    assert all(len(i) == 36 and str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert {p.name for p in (synth_corpus.eval / "audio").iterdir()} == {f"{i}.wav" for i in ids}
    header, labels = _rows(synth_corpus.eval_labels)
    assert header == ["id", "class"]
    assert [r["id"] for r in labels] == ids and all(r["class"] in CODE_TO_INDEX for r in labels)


def test_eval_package_contains_the_traps_of_real_packages(synth_corpus):
    _, rows = _rows(synth_corpus.eval / "eval_metadata.csv")
    infos, zero_byte = [], 0
    for r in rows:
        wav = synth_corpus.eval / "audio" / f"{r['anonymous_id']}.wav"
        if wav.stat().st_size == 0:
            zero_byte += 1
            continue
        infos.append(sf.info(wav))
    assert zero_byte >= 1
    assert any(i.channels == 2 and i.samplerate == 48000 for i in infos)
    assert all(i.subtype == "PCM_16" for i in infos)
    durations = [i.duration for i in infos]
    assert min(durations) == pytest.approx(0.2, abs=0.01) and max(durations) == pytest.approx(25.0, abs=0.01)
    assert any(r["tags"] == "" for r in rows) and any(r["description"] == "" for r in rows)
    assert any(_HTML.search(r["description"]) for r in rows)
    text = " ".join(f"{r['title']} {r['description']}" for r in rows)
    assert _ACCENTED.search(text) and _CJK.search(text) and _EMOJI.search(text)


# ---- readers round trip ---------------------------------------------------------------------------------------------


def test_corpus_round_trips_through_the_runtime_readers(synth_corpus):
    dev = read_dev_dataset(synth_corpus.dev)
    _, rows = _rows(synth_corpus.dev / "metadata" / "BSD10k_metadata.csv")
    assert dev.name == "BSD10k" and dev.ids == [r["sound_id"] for r in rows] and dev.dropped_other == 0
    assert dev.labels == [r["class"] for r in rows]
    assert all(c.audio_path is not None and c.audio_path.is_file() for c in dev.clips)
    assert set(np.unique(dev.confidences)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    for kind in KINDS:
        assert dev.load_embeddings(kind).shape == (len(dev), 512)

    cs = read_dev_dataset(synth_corpus.cs)
    _, cs_rows = _rows(synth_corpus.cs / "metadata" / "BSD35k-CS_metadata.csv")
    assert cs.name == "BSD35k-CS" and cs.dropped_other == sum(r["class"] in OTHER_CODES for r in cs_rows) > 0
    assert np.isnan(cs.confidences).all()
    assert set(cs.ids) == set(read_labels(synth_corpus.cs_true_labels))

    package = read_eval_package(synth_corpus.eval)
    labels = read_labels(synth_corpus.eval_labels)
    assert package.ids == list(labels) and len(package) == N_EVAL
    assert all(c.audio_path is not None for c in package.clips)  # the zero-byte file exists; decoding is the trap


# ---- determinism and CLI --------------------------------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_via_cli_and_api(tmp_path):
    args = dict(per_class=1, seed=7, cs_noise=0.5, n_eval=8)
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "a"), "--per-class", "1", "--seed", "7", "--cs-noise", "0.5",
                                 "--eval", "8", "--with-features"])
    assert result.exit_code == 0, result.output
    write_corpus(tmp_path / "b", with_features=True, **args)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 3 * 23
    assert not (tmp_path / "a" / ".BSD10k.partial").exists()

    again = runner.invoke(app, ["synth", str(tmp_path / "a"), "--per-class", "1"])  # never overwrites
    assert again.exit_code == 1 and "already exists" in again.output
    assert _digest(tmp_path / "a") == a

    other = write_corpus(tmp_path / "c", per_class=1, seed=8, n_eval=8)
    assert _digest(other.dev / "audio") != _digest(tmp_path / "a" / "BSD10k" / "audio")


def test_bad_arguments_fail_with_one_line(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--eval", "3"])
    assert result.exit_code != 0
    with pytest.raises(BstError, match="at least 8"):
        write_corpus(tmp_path / "y", n_eval=3)
    with pytest.raises(BstError, match="cs_noise"):
        write_corpus(tmp_path / "z", cs_noise=1.5)
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
