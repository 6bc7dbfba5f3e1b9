"""Every hostile input kind of `hostile.py` has its documented outcome (docs/reliability.md): a prediction, a
prediction with a fallback reason, or a clear error naming the file and why. A package mixing all the audio kinds
is predicted in one run: the run continues and the CSV is complete."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bst_rt.runtime.predict_run import RunOptions, record_path, run_predict
from bst_rt.runtime.cli import app
from bst_rt.runtime.datasets import read_eval_package
from bst_rt.runtime.errors import DataError
from bst_rt.runtime.predict import _read_audio
from bst_rt.runtime.submission import validate_submission

from hostile import AUDIO_KINDS, BIG_DESCRIPTION, CSV_KINDS, EVAL_HEADER, write_audio


# ---------------------------------------------------------------------------------------------- per clip, no bundle
@pytest.mark.parametrize("kind", sorted(AUDIO_KINDS))
def test_each_audio_kind_reads_as_documented(kind: str, tmp_path: Path) -> None:
    spec = AUDIO_KINDS[kind]
    path = write_audio(kind, tmp_path / "audio" / f"{kind}.wav")
    audio_path = path if path.is_file() else None  # what the package reader passes for a non-file
    item, reason = _read_audio(audio_path)
    if spec.outcome == "decoded":
        assert reason is None
        mel, longer = item
        assert mel.shape == (4, 1001, 64) and np.isfinite(mel).all()
    else:
        assert item is None and reason.startswith(spec.reason), reason
        if reason.startswith("undecodable"):
            assert str(path) in reason  # the reason names the file


def test_long_clip_memory_grows_with_the_mel_not_the_waveform(tmp_path: Path) -> None:
    """Decoding for prediction holds a constant working set (one STFT block) plus the whole-clip mel (1.8 MB per
    minute); the 48 kHz waveform would be 5.8 MB per minute as int16, 11.5 as float32. Measured as the growth of
    the peak from a 5-minute to a 20-minute clip in one child (bench/long_clip.py measures 2 h)."""
    import soundfile as sf

    rate = 44100
    for name, minutes in (("short.wav", 5), ("long.wav", 20)):
        with sf.SoundFile(str(tmp_path / name), "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
            for _ in range(minutes):
                out.write((0.1 * np.random.default_rng(0).standard_normal(60 * rate)).astype(np.float32))
    child = textwrap.dedent("""
        import re, sys
        from pathlib import Path
        from bst_rt.runtime.predict import _read_audio
        def peak():
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        peaks = []
        for name in ("short.wav", "long.wav"):
            item, reason = _read_audio(Path(sys.argv[1]) / name)
            assert reason is None and item[1], reason
            peaks.append(peak())
        print(peaks[1] - peaks[0])
    """)
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    per_minute = int(done.stdout.split()[-1]) / 15
    int16_per_minute = 60 * 48000 * 2
    print(f"peak growth {per_minute / 2**20:.2f} MB per minute of audio "
          f"(48 kHz waveform: {int16_per_minute / 2**20:.2f} MB as int16)")
    assert per_minute < 0.5 * int16_per_minute


# ---------------------------------------------------------------------------------------------- metadata CSVs
@pytest.mark.parametrize("kind", sorted(k for k, v in CSV_KINDS.items() if v.outcome == "read"))
def test_each_readable_metadata_kind_reads_every_row(kind: str, tmp_path: Path) -> None:
    spec = CSV_KINDS[kind]
    (tmp_path / "audio").mkdir()
    (tmp_path / "metadata.csv").write_bytes(spec.content)
    assert read_eval_package(tmp_path).ids == list(spec.ids)


@pytest.mark.parametrize("kind", sorted(k for k, v in CSV_KINDS.items() if v.outcome == "refused"))
def test_each_refused_metadata_kind_is_one_clear_error_and_no_output(kind: str, tmp_path: Path) -> None:
    """Refused before any bundle work (the --bundle given does not even exist): a bad package costs nothing."""
    spec = CSV_KINDS[kind]
    (tmp_path / "audio").mkdir()
    meta = tmp_path / "metadata.csv"
    meta.write_bytes(spec.content)
    out = tmp_path / "out" / "submission.csv"
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "--metadata", str(meta), "--bundle",
                                      str(tmp_path / "no-bundle"), "--out", str(out)])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]  # stdout holds only the progress bar
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(meta) in lines[0], result.output
    assert spec.message in lines[0] and "bundle" not in lines[0]
    assert not out.exists() and not out.parent.exists()
    with pytest.raises(DataError):
        read_eval_package(tmp_path, meta)


def test_an_id_never_reaches_outside_the_package(tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    write_audio("silence", secret)
    pkg = tmp_path / "pkg"
    (pkg / "audio").mkdir(parents=True)
    for clip_id in ("../secret", "../../secret", str(tmp_path / "secret"), "..\\secret"):
        (pkg / "metadata.csv").write_text(f"{EVAL_HEADER}\n{clip_id},x,y,z\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"row 1 .*cannot be used as a file name"):
            read_eval_package(pkg)


# ---------------------------------------------------------------------------------------------- one run, all kinds
def _write_package(root: Path) -> dict[str, str]:
    """Every audio kind as one clip, plus rows without audio, audio without a row, hostile metadata text; the CSV
    itself has a BOM, CRLF line ends, extra columns and quoted newlines. Returns {id: kind}."""
    (root / "audio").mkdir(parents=True)
    kinds = {f"clip-{k}": k for k in sorted(AUDIO_KINDS)}
    for clip_id, kind in kinds.items():
        write_audio(kind, root / "audio" / f"{clip_id}.wav")
    write_audio("8k-mono", root / "audio" / "not-in-metadata.wav")
    rows = [(clip_id, f"{kind} clip", "hostile,test", f"a {kind} file", "cc0") for clip_id, kind in kinds.items()]
    rows += [
        ("row-without-audio", "Rain\non a roof", "rain,roof", 'quoted "newline"\r\nand, commas', "cc0"),
        ("no-audio-no-text", "", "", "", ""),
        ("big-description", "Big", "big", BIG_DESCRIPTION, "cc0"),
    ]
    kinds.update({"row-without-audio": "no audio", "no-audio-no-text": "no audio", "big-description": "no audio"})
    with open(root / "metadata.csv", "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow([*EVAL_HEADER.split(","), "license"])
        writer.writerows(rows)
    return kinds


@pytest.fixture(scope="module")
def hostile_run(bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    kinds = _write_package(root / "eval")
    out = root / "out" / "submission.csv"
    result = run_predict(RunOptions(eval_dir=root / "eval", out=out, bundle=bundle, system=1, batch_size=4, threads=1))
    return kinds, out, result


def test_the_run_continues_and_the_csv_is_complete(hostile_run) -> None:
    kinds, out, result = hostile_run
    validate_submission(out, list(kinds))  # every metadata id exactly once, legal codes and scores
    with open(out, encoding="utf-8", newline="") as fh:
        ids = [row[0] for row in csv.reader(fh)][1:]
    assert ids == list(kinds) and "not-in-metadata" not in ids  # audio without a row is not predicted
    assert result.record["rows"] == len(kinds)
    assert result.record["unlisted_audio"] == ["not-in-metadata.wav"]  # reported, not predicted
    assert json.loads(record_path(out).read_text(encoding="utf-8"))["rows"] == len(kinds)


def test_each_clip_has_its_documented_outcome(hostile_run) -> None:
    kinds, _, result = hostile_run
    by_id = {p.id: p for p in result.predictions}
    for clip_id, kind in kinds.items():
        pred = by_id[clip_id]
        assert np.isfinite(pred.probabilities).all() and 0.0 <= pred.score <= 1.0
        if kind == "no audio":
            assert pred.fallback == "missing audio", (clip_id, pred.fallback)
            continue
        spec = AUDIO_KINDS[kind]
        if spec.outcome == "decoded":
            assert pred.fallback is None, (kind, pred.fallback)
        else:
            assert pred.fallback is not None and pred.fallback.startswith(spec.reason), (kind, pred.fallback)
    reasons = result.record["fallbacks"]
    print("fallbacks:", reasons)
    expected = sum(1 for k in kinds.values() if k == "no audio" or AUDIO_KINDS[k].outcome == "fallback")
    assert sum(reasons.values()) == expected


def test_an_unreadable_audio_folder_entry_does_not_stop_the_run(bundle, tmp_path: Path) -> None:
    """A FIFO named like a clip would block a reader forever; it is not a regular file, so it is 'missing'."""
    root = tmp_path / "eval"
    (root / "audio").mkdir(parents=True)
    os.mkfifo(root / "audio" / "fifo.wav")
    write_audio("dc", root / "audio" / "ok.wav")
    (root / "metadata.csv").write_text(f"{EVAL_HEADER}\nfifo,a,b,c\nok,a,b,c\n", encoding="utf-8")
    result = run_predict(RunOptions(eval_dir=root, out=tmp_path / "o.csv", bundle=bundle, batch_size=2, threads=1))
    assert [(p.id, p.fallback) for p in result.predictions] == [("fifo", "missing audio"), ("ok", None)]


def test_a_huge_description_tokenises_as_if_whole(bundle) -> None:
    """The tokenizer cuts texts to MAX_TEXT_CHARS first (a 1 MB description took seconds per item): same ids."""
    from tokenizers import Tokenizer as HfTokenizer

    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.text import metadata_text
    from bst_rt.runtime.tokenizer import MAX_TEXT_CHARS, Tokenizer

    path = bundle / load_bundle(bundle, verify=False).manifest.text.tokenizer_file
    text = metadata_text("Big", "big,long", BIG_DESCRIPTION[:150_000])
    assert len(text) > 5 * MAX_TEXT_CHARS
    whole = HfTokenizer.from_file(str(path))
    whole.enable_truncation(77)
    ids, mask = Tokenizer.from_file(path).encode_batch([text, "short"])
    assert ids.shape == (2, 77) and ids[0].tolist() == whole.encode(text).ids and mask[0].all()


# ------------------------------------------------------------------- not-UTF-8 metadata rows, audio suffixes by id
LATIN1_PACKAGE = (f"{EVAL_HEADER}\nok-1,Dog,dog,barks\n".encode() + "lat-1,Café au lait,café,señal\n".encode("latin-1")
                  + b'ok-2,"Two\nlines",t,d\n' + "lat-2,x,y,Gr\xfc\xdfe\n".encode("latin-1"))


def test_a_latin1_row_is_read_with_replacement_characters_and_marked(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_bytes(LATIN1_PACKAGE)
    package = read_eval_package(tmp_path)
    assert package.ids == ["ok-1", "lat-1", "ok-2", "lat-2"]
    assert package.repaired_ids == ["lat-1", "lat-2"]
    lat = package.clips[1]
    assert (lat.title, lat.tags, lat.description) == ("Caf\ufffd au lait", "caf\ufffd", "se\ufffdal")
    assert package.clips[2].title == "Two\nlines" and not package.clips[2].metadata_repaired
    with pytest.raises(DataError, match=r"row 2 \(line 3\): not valid UTF-8 \(byte 0xe9\)"):
        read_eval_package(tmp_path, strict_metadata=True)


def test_predict_keeps_latin1_rows_counts_them_and_strict_refuses(bundle, tmp_path: Path) -> None:
    root = tmp_path / "eval"
    (root / "audio").mkdir(parents=True)
    (root / "metadata.csv").write_bytes(LATIN1_PACKAGE)
    write_audio("8k-mono", root / "audio" / "lat-1.wav")
    out = tmp_path / "o.csv"
    result = CliRunner().invoke(app, ["predict", str(root), "--bundle", str(bundle), "-o", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    validate_submission(out, ["ok-1", "lat-1", "ok-2", "lat-2"])
    record = json.loads(record_path(out).read_text(encoding="utf-8"))
    assert record["rows"] == 4 and record["repaired_metadata"] == {"rows": 2, "ids": ["lat-1", "lat-2"]}
    assert "repaired metadata" in result.stdout and "lat-1, lat-2" in result.stdout
    strict = CliRunner().invoke(app, ["predict", str(root), "--bundle", str(bundle), "-o", str(tmp_path / "s.csv"),
                                      "--strict-metadata"])
    assert strict.exit_code == 1 and "not valid UTF-8" in strict.stderr
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".aiff", ".WAV"])
def test_eval_packages_find_audio_of_every_libsndfile_suffix_by_id(tmp_path: Path, suffix: str) -> None:
    import soundfile as sf

    (tmp_path / "audio").mkdir()
    wave = (0.3 * np.sin(np.arange(4800) / 7.0)).astype(np.float32)
    sf.write(tmp_path / "audio" / f"clip{suffix}", wave, 48_000)
    (tmp_path / "metadata.csv").write_text(f"{EVAL_HEADER}\nclip,a,b,c\nnone,a,b,c\n", encoding="utf-8")
    package = read_eval_package(tmp_path)
    assert package.clips[0].audio_path == tmp_path / "audio" / f"clip{suffix}"
    assert package.clips[1].audio_path is None
    fusion, reason = _read_audio(package.clips[0].audio_path)
    assert reason is None and np.isfinite(fusion[0]).all()


def test_two_audio_files_with_one_id_are_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    for name in ("clip.wav", "clip.flac"):
        (tmp_path / "audio" / name).write_bytes(b"x")
    (tmp_path / "metadata.csv").write_text(f"{EVAL_HEADER}\nclip,a,b,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"two audio files for id 'clip': clip\.flac and clip\.wav"):
        read_eval_package(tmp_path)
